"""`imgpref bench`: the cross-benchmark accuracy table (scorer x dataset) from local copies of the test sets.

Each dataset is converted by its reader (`imgpref.data.readers`) into a canonical manifest under
`<out>/manifests/`, every distinct image is scored once per scorer in ONE `score_paths` run over all datasets
(scorers sharing a backbone share its pass; an image in two sets, e.g. Pick-a-Pic test and test_unique whose
images are stored by content hash, is embedded once; `cache=` / `--cache DIR` keeps the embeddings on disk for
re-runs, shared across datasets: ImageReward's are ~1 MB per image), then each dataset gets its own protocol,
the one `imgpref eval` applies (`imgpref.eval.evaluate`):

- `hpdv2_test` (reader hpdv2, test.json): hpd, per-prompt 1 - inversions / pairs, averaged over prompts;
- `imagereward_test` (reader imagereward, test.json): imagereward, pooled over pairs, human ties skipped, a model
  tie wrong;
- `pickapic_test`, `pickapic_test_unique` (reader pickapic, Parquet shards): pickapic, the tie threshold tuned on
  the val shards of `--pickapic-val` (else 0: ties only for equal scores);
- `hpdv3_test` (reader hpdv3, test.json / .jsonl): imagereward (pooled pairwise accuracy).

Each cell: accuracy (%) with a 95% bootstrap CI over groups (prompts), the published number
(`imgpref.scorers.metadata`, sources in `data_cards/published_accuracy.md`) and the difference. Written as
`bench.csv` and `bench.html` (with a note on each known split ambiguity) in the output folder.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

DATASETS: dict[str, tuple[str, str]] = {  # key -> (reader format, protocol)
    "hpdv2_test": ("hpdv2", "hpd"),
    "imagereward_test": ("imagereward", "imagereward"),
    "pickapic_test": ("pickapic", "pickapic"),
    "pickapic_test_unique": ("pickapic", "pickapic"),
    "hpdv3_test": ("hpdv3", "imagereward"),
}
SPLIT_NOTES: dict[str, str] = {
    "hpdv2_test": "HPSv2 protocol (per-prompt accuracy, averaged); the published 'HPSv2' row is v2.0.",
    "imagereward_test": "pooled over pairs (THUDM's acc); HPSv2's evaluation averages per prompt (~0.01 apart). "
                        "PickScore's published number is 61.6 in the HPSv3 table, 62.9 elsewhere.",
    "pickapic_test": "which Pick-a-Pic test split the HPSv3 table used is unclear (HPSv3 issue #38); the tie "
                     "threshold is tuned on the given val shards (0 without them).",
    "pickapic_test_unique": "v2 test_unique (500 pairs); the published 80.2 (PickScore) is imscore's re-measurement.",
    "hpdv3_test": "pooled pairwise accuracy (path1 preferred); the HPSv3 table does not say how ties/confidence "
                  "are used.",
}
COLUMNS = ("scorer", "dataset", "protocol", "accuracy", "ci_low", "ci_high", "published", "difference",
           "published_source", "n_pairs", "n_groups", "n_skipped_pairs", "threshold", "note")


@dataclass
class BenchDataset:
    """One local test set: `key` (a DATASETS key), its source file/folder, reader options, optional val source."""

    key: str
    src: Path
    options: dict[str, Any] = field(default_factory=dict)
    val_src: Path | None = None

    def __post_init__(self) -> None:
        if self.key not in DATASETS:
            raise ValueError(f"unknown bench dataset {self.key!r}; use one of {', '.join(DATASETS)}")
        self.src = Path(self.src).expanduser()
        if not self.src.exists():
            raise FileNotFoundError(f"{self.key}: {self.src} does not exist")
        if self.val_src is not None:
            self.val_src = Path(self.val_src).expanduser()
            if not self.val_src.exists():
                raise FileNotFoundError(f"{self.key} val: {self.val_src} does not exist")


def _manifest(ds: BenchDataset, folder: Path) -> pd.DataFrame:
    """Convert `ds` (and its val source) into manifests; rows with split 'test' (and 'val')."""
    from imgpref.data.manifest import read_manifest
    from imgpref.data.readers import convert

    fmt = DATASETS[ds.key][0]
    parts = []
    for src, split in ((ds.src, "test"), (ds.val_src, "val")):
        if src is None:
            continue
        out = folder / f"{ds.key}{'' if split == 'test' else '_val'}.csv"
        convert(fmt, src, out, **ds.options)
        df = read_manifest(out)
        df["split"] = split  # the role in the bench, whatever the file was named
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _score_table(frames: dict[str, pd.DataFrame], scorers: list, **score_kw: Any) -> dict[tuple[str, str], dict]:
    """{(absolute path, prompt): {scorer name: score}} for every image of every frame: one `score_paths` run per
    round of distinct paths (an image listed with two prompts is scored once per prompt)."""
    from imgpref.scorers.score_paths import score_paths

    needs = any(s.needs_prompt for s in scorers)
    pairs: dict[tuple[str, str], None] = {}
    for df in frames.values():
        prompts = df["prompt"].astype(str) if "prompt" in df.columns else pd.Series([""] * len(df))
        for col in ("image_0", "image_1"):
            for p, pr in zip(df[col].astype(str), prompts):
                pairs[(p, pr if needs else "")] = None
    rounds: list[dict[str, str]] = []
    for path, prompt in pairs:
        for r in rounds:
            if path not in r:
                r[path] = prompt
                break
        else:
            rounds.append({path: prompt})
    out: dict[tuple[str, str], dict] = {}
    for r in rounds:
        table = score_paths(list(r), scorers, prompts=r if needs else None, **score_kw)
        for row in table.itertuples(index=False):
            path = str(row.abs_path) if str(row.abs_path) in r else str(row.path)
            score = float(row.score) if row.score is not None and not pd.isna(row.score) else math.nan
            out.setdefault((path, r.get(path, "")), {})[str(row.scorer)] = score
    return out


def _pair_scores(df: pd.DataFrame, table: dict, scorer, needs: bool) -> tuple[np.ndarray, np.ndarray]:
    sign = 1.0 if scorer.higher_is_better else -1.0
    prompts = df["prompt"].astype(str).tolist() if needs else [""] * len(df)

    def col(c: str) -> np.ndarray:
        return np.array([table.get((str(p), pr), {}).get(scorer.name, math.nan)
                         for p, pr in zip(df[c], prompts)], dtype=np.float64) * sign

    return col("image_0"), col("image_1")


def _evaluate(key: str, df: pd.DataFrame, s0: np.ndarray, s1: np.ndarray, n_resamples: int, seed: int
              ) -> dict[str, Any]:
    """Apply `key`'s protocol (the functions of `imgpref eval`) to the test rows, tuning on the val rows."""
    from imgpref.eval import evaluate as E

    protocol = DATASETS[key][1]
    test = (df["split"] == "test").to_numpy()
    ok = np.isfinite(s0) & np.isfinite(s1)
    keep = test & ok
    d = df[keep].reset_index(drop=True)
    a0, a1 = s0[keep], s1[keep]
    common = dict(n_resamples=n_resamples, seed=seed)
    if protocol == "hpd":
        ids = (d["image_0"].astype(str).to_numpy(), d["image_1"].astype(str).to_numpy())
        m = E._protocol_hpd(d, a0, a1, ids, **common)
    elif protocol == "pickapic":
        vmask = (df["split"] == "val").to_numpy() & ok
        val = (s0[vmask], s1[vmask], df[vmask].reset_index(drop=True)) if vmask.any() else None
        m = E._protocol_pickapic(d, a0, a1, val, None if val is not None else 0.0, **common)
    else:
        m = E._protocol_imagereward(d, a0, a1, **common)
    m["n_skipped_pairs"] = int((test & ~ok).sum())
    return m


def run_bench(
    scorers: Sequence[Any],
    datasets: Sequence[BenchDataset],
    out: str | Path,
    *,
    weights: dict[str, str | Path] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    cache: str | Path | None = None,
    progress: bool = False,
    **score_kw: Any,
) -> pd.DataFrame:
    """Score `datasets` with `scorers` (names, folders or Scorer objects) and write `bench.csv` + `bench.html`
    to `out`. Returns the table (one row per scorer x dataset, columns `COLUMNS`). `score_kw` goes to
    `score_paths` (device, batch_size, num_workers, precision, ...); `cache`: an embedding-cache folder."""
    from imgpref.scorers.metadata import metadata_for
    from imgpref.scorers.registry import load_scorers

    if not datasets:
        raise ValueError("no dataset given: pass at least one of --hpdv2, --imagereward, --pickapic, "
                         "--pickapic-unique, --hpdv3")
    keys = [d.key for d in datasets]
    if len(set(keys)) != len(keys):
        raise ValueError(f"each dataset once: got {keys}")
    out = Path(out)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    specs = list(scorers)
    loaded = [s for s in specs if not isinstance(s, (str, Path))]
    names = [s for s in specs if isinstance(s, (str, Path))]
    if names:
        loaded += load_scorers(names, weights=weights)
    frames = {d.key: _manifest(d, out / "manifests") for d in datasets}
    table = _score_table(frames, loaded, cache=str(cache) if cache is not None else None, progress=progress,
                         **score_kw)
    rows = []
    for s in loaded:
        meta = metadata_for(s.name)
        for key, df in frames.items():
            s0, s1 = _pair_scores(df, table, s, s.needs_prompt)
            m = _evaluate(key, df, s0, s1, n_resamples, seed)
            pub = meta.published.get(key) if meta is not None else None
            acc = 100 * m["accuracy"] if m.get("accuracy") is not None and math.isfinite(m["accuracy"]) else math.nan
            lo, hi = (100 * v if v is not None and math.isfinite(v) else math.nan for v in m["accuracy_ci"])
            rows.append({
                "scorer": s.name, "dataset": key, "protocol": DATASETS[key][1], "accuracy": acc,
                "ci_low": lo, "ci_high": hi,
                "published": pub.accuracy if pub else math.nan,
                "difference": acc - pub.accuracy if pub else math.nan,
                "published_source": pub.source if pub else "",
                "n_pairs": int(m.get("n_pairs", 0)), "n_groups": int(m.get("n_groups", 0)),
                "n_skipped_pairs": int(m["n_skipped_pairs"]), "threshold": m.get("threshold", math.nan),
                "note": SPLIT_NOTES[key],
            })
    result = pd.DataFrame(rows, columns=list(COLUMNS))
    write_outputs(result, out)
    return result


def _cell(r: pd.Series) -> str:
    if not math.isfinite(r["accuracy"]):
        return "n/a"
    text = f"{r['accuracy']:.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
    if math.isfinite(r["published"]):
        text += f"<br><small>published {r['published']:.1f} ({r['difference']:+.1f})</small>"
    return text


def write_outputs(result: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """`bench.csv` (every column) and `bench.html` (scorer x dataset cells + the split notes), atomically."""
    from imgpref.atomic import atomic_write

    csv, page = out / "bench.csv", out / "bench.html"
    with atomic_write(csv) as tmp:
        result.to_csv(tmp, index=False)
    datasets = list(dict.fromkeys(result["dataset"]))
    head = "".join(f"<th>{html.escape(d)}</th>" for d in datasets)
    body = []
    for scorer, g in result.groupby("scorer", sort=False):
        by = {r["dataset"]: r for _, r in g.iterrows()}
        cells = "".join(f"<td>{_cell(by[d]) if d in by else '-'}</td>" for d in datasets)
        body.append(f"<tr><th>{html.escape(str(scorer))}</th>{cells}</tr>")
    notes = "".join(f"<li><b>{html.escape(d)}</b>: {html.escape(SPLIT_NOTES[d])}</li>" for d in datasets)
    doc = ("<!doctype html><meta charset='utf-8'><title>imgpref bench</title>"
           "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
           "table{border-collapse:collapse}</style>"
           "<h1>Pairwise accuracy (%), 95% bootstrap CI over prompts</h1>"
           f"<table><tr><th>scorer</th>{head}</tr>{''.join(body)}</table>"
           "<p>Published numbers and sources: data_cards/published_accuracy.md (difference = measured - "
           f"published).</p><h2>Split notes</h2><ul>{notes}</ul>")
    with atomic_write(page) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return csv, page
