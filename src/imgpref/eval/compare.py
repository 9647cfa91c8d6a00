"""Compare two image folders (two models, same prompts): win rate of A over B per scorer, per-image table.

Images are matched by their path relative to each folder. For every scorer and matched image, A wins when its
score is better by the scorer's direction, ties count half; the win rate is the mean over matched images that
both sides scored, with a percentile bootstrap 95% interval that resamples images.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgpref.eval.report import preset_directions
from imgpref.atomic import atomic_write
from imgpref.csv_safe import write_csv
from imgpref.scorers.output import json_lines, parquet_safe

PER_IMAGE_COLUMNS = ("rel_path", "scorer", "score_a", "score_b", "winner", "path_a", "path_b", "prompt", "error")
WIN_RATE_COLUMNS = (
    "scorer", "higher_is_better", "n", "wins_a", "ties", "wins_b", "win_rate", "ci_low", "ci_high",
    "mean_a", "mean_b", "n_failed",
)


def win_rate(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    higher_is_better: bool = True,
    n_boot: int = 2000,
    seed: int | None = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Win rate of A over B on paired scores, ties counting half, with a percentile bootstrap interval.

    Returns (rate, lo, hi). The bootstrap draws `n_boot` resamples of the images (pairs) with replacement.
    Empty input gives (nan, nan, nan). NaN scores are rejected: drop failed images before calling.
    """
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b must be paired (same length); got {a.size} and {b.size}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores contain NaN (failed images); drop those pairs before computing the win rate")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if a.size == 0:
        return float("nan"), float("nan"), float("nan")
    outcome = pair_outcomes(a, b, higher_is_better)
    rate = float(outcome.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    boot = outcome[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return rate, float(lo), float(hi)


def pair_outcomes(a: np.ndarray, b: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 when A is better, 0.5 for a tie, 0 when B is better."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    return (np.sign(sign * (a - b)) + 1.0) / 2.0


@dataclass
class CompareResult:
    """Everything `imgpref compare` reports.

    per_image: one row per matched image and scorer (columns `PER_IMAGE_COLUMNS`); `winner` is "A", "B", "tie",
      or "" when either side failed (then `error` says why).
    win_rates: one row per scorer (columns `WIN_RATE_COLUMNS`).
    only_a / only_b: relative paths present in one folder only (not compared).
    results: both folders' score tables stacked, with a `side` column ("A"/"B"), for the report.
    """

    dir_a: str
    dir_b: str
    per_image: pd.DataFrame
    win_rates: pd.DataFrame
    only_a: list[str]
    only_b: list[str]
    results: pd.DataFrame
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    @property
    def n_matched(self) -> int:
        return int(self.per_image["rel_path"].nunique()) if len(self.per_image) else 0


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel.startswith(".."):  # the scorer may have resolved symlinks in either path
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return rel.replace(os.sep, "/")


def _text(v: Any) -> str:
    if v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return ""  # None, NaN, pd.NA: an absent value
    return str(v)


def _indexed(table: pd.DataFrame, root: str, what: str) -> pd.DataFrame:
    missing = [c for c in ("path", "scorer", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"score table of {what} is missing column(s) {missing}; expected path, scorer, score, ...")
    t = table.copy()
    for col in ("prompt", "error"):
        if col not in t.columns:
            t[col] = ""
    # object dtype: pandas' Arrow strings cannot hold surrogate-escaped (non-UTF-8) file names
    t["path"] = pd.Series([str(v) for v in t["path"]], index=t.index, dtype=object)
    t["scorer"] = pd.Series([str(v) for v in t["scorer"]], index=t.index, dtype=object)
    t["score"] = pd.to_numeric(t["score"], errors="coerce").astype("float64")  # nullable NA -> NaN
    t["rel_path"] = pd.Series([_rel(p, root) for p in t["path"]], index=t.index, dtype=object)
    dup = t.duplicated(["rel_path", "scorer"], keep=False)
    if dup.any():
        first = t.loc[dup, "rel_path"].iloc[0]
        raise ValueError(f"score table of {what} has several rows for {first!r} and one scorer; deduplicate it first")
    return t


def compare_scores(
    results_a: pd.DataFrame,
    results_b: pd.DataFrame,
    root_a: str | Path,
    root_b: str | Path,
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    n_boot: int = 2000,
    seed: int | None = 0,
) -> CompareResult:
    """Compare two already-computed score tables (columns path, scorer, score[, prompt, error]).

    Rows are matched by path relative to `root_a` / `root_b` and scorer name. `higher_is_better` maps scorer
    name -> direction (default True for scorers not listed).
    """
    root_a, root_b = str(root_a), str(root_b)
    ta = _indexed(results_a, root_a, f"A ({root_a})")
    tb = _indexed(results_b, root_b, f"B ({root_b})")
    directions = {str(k): bool(v) for k, v in (higher_is_better or {}).items()}
    rel_a, rel_b = set(ta["rel_path"]), set(tb["rel_path"])
    only_a, only_b = sorted(rel_a - rel_b), sorted(rel_b - rel_a)
    scorers = [s for s in dict.fromkeys(ta["scorer"]) if s in set(tb["scorer"])]

    merged = ta.merge(tb, on=["rel_path", "scorer"], suffixes=("_a", "_b"), how="inner")
    merged = merged[merged["scorer"].isin(scorers)]
    # Scorer order of table A, not alphabetical; paths sorted through integer ranks (sorting the strings
    # themselves would convert them to Arrow strings, which cannot hold non-UTF-8 file names)
    path_rank = {r: i for i, r in enumerate(sorted(set(merged["rel_path"])))}
    merged["_order"] = [scorers.index(x) for x in merged["scorer"]]
    merged["_path"] = [path_rank[x] for x in merged["rel_path"]]
    merged = merged.sort_values(["_order", "_path"], kind="stable").reset_index(drop=True)

    winners, errors = [], []
    for r in merged.itertuples(index=False):
        err = "; ".join(
            f"{side}: {msg or 'no score'}"
            for side, msg, score in (("A", _text(r.error_a), r.score_a), ("B", _text(r.error_b), r.score_b))
            if msg or not np.isfinite(score)
        )
        errors.append(err)
        if err:
            winners.append("")
            continue
        o = pair_outcomes(np.array([r.score_a]), np.array([r.score_b]), directions.get(r.scorer, True))[0]
        winners.append("A" if o == 1.0 else "B" if o == 0.0 else "tie")
    prompt = [
        _text(pa) or _text(pb) for pa, pb in zip(merged.get("prompt_a", []), merged.get("prompt_b", []))
    ]
    def text(values) -> pd.Series:  # object dtype: safe for non-UTF-8 file names
        return pd.Series(list(values), dtype=object)

    per_image = pd.DataFrame(
        {
            "rel_path": text(merged["rel_path"]),
            "scorer": text(merged["scorer"]),
            "score_a": merged["score_a"].to_numpy(np.float64),
            "score_b": merged["score_b"].to_numpy(np.float64),
            "winner": text(winners),
            "path_a": text(merged["path_a"]),
            "path_b": text(merged["path_b"]),
            "prompt": text(prompt),
            "error": text(errors),
        },
        columns=list(PER_IMAGE_COLUMNS),
    )

    rows = []
    for s in scorers:
        sub = per_image[per_image["scorer"] == s]
        ok = sub[sub["error"] == ""]
        hib = directions.get(s, True)
        rate, lo, hi = win_rate(ok["score_a"], ok["score_b"], hib, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "scorer": s,
                "higher_is_better": hib,
                "n": len(ok),
                "wins_a": int((ok["winner"] == "A").sum()),
                "ties": int((ok["winner"] == "tie").sum()),
                "wins_b": int((ok["winner"] == "B").sum()),
                "win_rate": rate,
                "ci_low": lo,
                "ci_high": hi,
                "mean_a": float(ok["score_a"].mean()) if len(ok) else float("nan"),
                "mean_b": float(ok["score_b"].mean()) if len(ok) else float("nan"),
                "n_failed": len(sub) - len(ok),
            }
        )
    win_rates = pd.DataFrame(rows, columns=list(WIN_RATE_COLUMNS))
    stacked = pd.concat(
        [ta.drop(columns="rel_path").assign(side="A"), tb.drop(columns="rel_path").assign(side="B")],
        ignore_index=True,
    )
    return CompareResult(
        dir_a=root_a,
        dir_b=root_b,
        per_image=per_image,
        win_rates=win_rates,
        only_a=only_a,
        only_b=only_b,
        results=stacked,
        higher_is_better={s: directions.get(s, True) for s in scorers},
    )


def _direction_of(scorer: Any) -> tuple[str, bool] | None:
    name, hib = getattr(scorer, "name", None), getattr(scorer, "higher_is_better", None)
    if isinstance(name, str) and isinstance(hib, bool):
        return name, hib
    return None


def compare_folders(
    dir_a: str | Path,
    dir_b: str | Path,
    scorers: Sequence[Any],
    *,
    higher_is_better: Mapping[str, bool] | None = None,
    n_boot: int = 2000,
    seed: int | None = 0,
    **score_kwargs: Any,
) -> CompareResult:
    """Score two folders with `scorers` (names, folders or Scorer objects) and compare them image by image.

    Both folders are scored in one `score_paths` run, so each scorer is loaded once and batches are shared;
    `score_kwargs` go to `score_paths` (prompt/prompts, batch size, device, cache, ...).
    """
    from imgpref.scorers.score_paths import score_paths  # scoring is heavy; the pure comparison does not need it

    a, b = Path(dir_a), Path(dir_b)
    for label, d in (("DIR_A", a), ("DIR_B", b)):
        if not d.exists():
            raise FileNotFoundError(f"{label} {str(d)!r} does not exist; pass an existing folder of images")
        if not d.is_dir():
            raise ValueError(f"{label} {str(d)!r} is not a folder; compare takes two folders of images")
    ra, rb = a.resolve(), b.resolve()
    if ra == rb or ra in rb.parents or rb in ra.parents:
        raise ValueError(
            f"DIR_A {str(a)!r} and DIR_B {str(b)!r} overlap (one contains the other); pass two separate folders"
        )
    for key in ("out", "report"):
        if score_kwargs.get(key) is not None:
            raise ValueError(f"compare_folders does not take {key}=; write CompareResult.per_image / write_report")
        score_kwargs.pop(key, None)
    scorers = list(scorers)
    if not scorers:
        raise ValueError("pass at least one scorer (e.g. scorers=['colorfulness'])")

    table = score_paths([str(a), str(b)], scorers, **score_kwargs)
    directions = dict(d for d in map(_direction_of, scorers) if d is not None)
    directions.update({k: v for k, v in table.attrs.get("higher_is_better", {}).items() if k not in directions})
    directions.update(preset_directions(table["scorer"].unique(), directions))
    directions.update({str(k): bool(v) for k, v in (higher_is_better or {}).items()})

    abs_paths = pd.Series([Path(os.path.abspath(str(p))) for p in table["path"]], index=table.index, dtype=object)
    in_a = abs_paths.map(lambda p: ra == p or ra in p.parents or Path(os.path.abspath(a)) in p.parents)
    return compare_scores(
        table[in_a.to_numpy()], table[~in_a.to_numpy()], a, b, higher_is_better=directions, n_boot=n_boot, seed=seed
    )



TABLE_FORMATS = (".csv", ".jsonl", ".parquet")


def write_per_image(result: CompareResult, out: str | Path) -> Path:
    """Write the per-image table (`PER_IMAGE_COLUMNS`) as .csv, .jsonl or .parquet, atomically."""
    out = Path(out).expanduser()
    suffix = out.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"--out {str(out)!r}: use a .csv, .jsonl or .parquet file name")
    df = result.per_image
    with atomic_write(out) as tmp:
        if suffix == ".csv":
            write_csv(df, tmp)  # formula-like cells neutralised
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(line + "\n" for line in json_lines(df))
        else:
            parquet_safe(df).to_parquet(tmp, index=False)
    return out
