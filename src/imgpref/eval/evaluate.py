"""`evaluate(scorer, manifest)`: the API behind `imgpref eval` (REFERENCE.md, "Evaluation protocols").

Protocols:
- votes (DEAR-style): `imgpref.eval.votes`; P(0 > 1) = sigmoid(bt_scale * (s0 - s1)), where bt_scale is
  `scorer.info.extra["bt_scale"]` (default 1). Also writes `<out stem>_reliability.png` and `<out stem>_groups.csv`.
- pickapic: Pick-a-Pic accuracy with p = softmax([s0, s1]) of the raw scores; the tie threshold is tuned on the
  manifest's `val` rows (grid 0.0..1.0, first maximum) unless given, then applied to the evaluated split.
- hpd: HPD v2 accuracy; each group (prompt) holds the pairs of one ranking; human ranks are rebuilt from them
  (`imgpref.eval.protocols.ranks_from_pairs`), images ordered by first appearance for the tie-break.
- imagereward: pooled over pairs (`averaging: "pooled"`); `accuracy_per_prompt` holds HPSv2's per-prompt mean.

What is evaluated is what the model predicts (`prediction` in metrics.json says which logit):
- a scalar head: s0 - s1;
- a pairwise (GPM) head: its pair logit s(a, b) (never the difference of per-image scalars, which ignores the
  intransitive part); item rankings (Kendall tau, hpd) use the Borda score within each group
  (`imgpref.scorers.pref_heads.borda_scores`);
- a pluralistic head: the population mixture by default; `annotator=NAME` uses NAME's mixture on NAME's rows
  (all rows when the manifest has none of NAME's); `per_annotator=True` uses each row's own annotator (manifest
  column `annotator`; unknown or empty -> population mixture). bt_scale is the one fitted to that logit
  (`bt_scale` for per-annotator logits, `bt_scale_population` for the population mixture when present).
With `per_annotator=True` (any head) the votes protocol also reports `per_annotator`: accuracy, NLL and ECE
(each with a by-group bootstrap CI) and counts per annotator, next to the population numbers (`ece_ci` too).

The label of a row is its vote majority (0, 1 or 0.5 when votes_0 == votes_1). Scores of lower-is-better scorers
are negated first, so "higher is better" everywhere below. `accuracy_ci` is a 95% bootstrap interval that
resamples groups. Keys that a protocol does not define are null in metrics.json.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgpref.atomic import atomic_write
from imgpref.csv_safe import write_csv
from imgpref.eval import protocols as P
from imgpref.eval.bootstrap import bootstrap_ratio_ci, group_bootstrap_ci, group_bootstrap_stat
from imgpref.eval.calibration import reliability_diagram
from imgpref.eval.scoring import score_pairs
from imgpref.eval.votes import vote_fractions, vote_metrics

PROTOCOLS = ("votes", "pickapic", "hpd", "imagereward")
ALL_SPLITS = ("all", "", None)
VOTE_KEYS = ("human_ceiling", "nll", "brier", "ece", "kendall_tau")


def load_scorer(spec: str):
    """Load a scorer by preset name or folder (imported lazily so eval works without the registry loaded)."""
    from imgpref.scorers.registry import load_scorer as _load

    return _load(spec)


def read_manifest(path):
    """All rows of a manifest, validated (imgpref.data.manifest.read_manifest)."""
    from imgpref.data.manifest import read_manifest as _read

    return _read(path)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _select_split(df: pd.DataFrame, split: str | None, manifest: Path) -> pd.DataFrame:
    if split in ALL_SPLITS:
        return df.reset_index(drop=True)
    rows = df[df["split"].astype(str) == split].reset_index(drop=True)
    if rows.empty:
        have = sorted({s if s else "(none)" for s in df["split"].astype(str)})
        raise ValueError(
            f"manifest {manifest} has no rows in split {split!r} (splits present: {', '.join(have)}); "
            "pass --split with one of them, or --split all to use every row"
        )
    return rows


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


def _oriented(scorer, ps) -> tuple[np.ndarray, np.ndarray]:
    sign = 1.0 if getattr(scorer, "higher_is_better", True) else -1.0
    return sign * ps.s0, sign * ps.s1


def _votes(df: pd.DataFrame) -> np.ndarray:
    return df[["votes_0", "votes_1", "votes_tie"]].to_numpy(dtype=np.float64)


def _protocol_votes(scorer, df, s0, s1, ids, *, d, bt_scale, per_annotator, n_resamples, seed,
                    out) -> dict[str, Any]:
    p = sigmoid(bt_scale * d)
    metrics, table = vote_metrics(
        p, _votes(df), df["group"].astype(str).to_numpy(), ids[0], ids[1], s0, s1,
        n_resamples=n_resamples, seed=seed, return_groups=True,
    )
    metrics["bt_scale"] = bt_scale
    metrics["ece_ci"] = _ece_ci(p, vote_fractions(_votes(df)), df["group"].astype(str).to_numpy(), n_resamples, seed)
    if per_annotator:
        metrics["per_annotator"] = _per_annotator(p, df, n_resamples=n_resamples, seed=seed)
    if out is not None:
        png = out.with_name(out.stem + "_reliability.png")
        csv = out.with_name(out.stem + "_groups.csv")
        with atomic_write(png) as tmp_png:
            reliability_diagram(p, vote_fractions(_votes(df)), tmp_png,
                                title=f"{getattr(scorer, 'name', 'scorer')}: reliability")
        with atomic_write(csv) as tmp_csv:
            write_csv(table, tmp_csv)  # group names are user text: neutralised against spreadsheet formulas
        metrics["reliability_png"] = str(png)
        metrics["groups_csv"] = str(csv)
    return metrics


def _per_annotator(p: np.ndarray, df: pd.DataFrame, *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Vote metrics of each annotator's rows: accuracy and NLL with by-group bootstrap CIs, ECE, counts."""
    from imgpref.eval import calibration as cal

    names = df["annotator"].astype(str).to_numpy()
    votes, groups = _votes(df), df["group"].astype(str).to_numpy()
    out: dict[str, Any] = {}
    for name in sorted(set(names) - {""}):
        m = names == name
        met = vote_metrics(p[m], votes[m], groups[m], n_resamples=n_resamples, seed=seed)
        q = vote_fractions(votes[m])
        gl, inv = np.unique(groups[m], return_inverse=True)
        sums = np.array([cal.nll(p[m][inv == k], q[inv == k]) * (inv == k).sum() for k in range(len(gl))])
        out[name] = {"accuracy": met["accuracy"], "accuracy_ci": met["accuracy_ci"], "nll": met["nll"],
                     "nll_ci": list(bootstrap_ratio_ci(sums, np.bincount(inv).astype(float),
                                                       n_resamples=n_resamples, seed=seed)),
                     "ece": met["ece"], "ece_ci": _ece_ci(p[m], q, groups[m], n_resamples, seed),
                     "n_pairs": met["n_pairs"], "n_decisive": met["n_decisive"]}
    return out


def _ece_ci(p: np.ndarray, q: np.ndarray, groups: np.ndarray, n_resamples: int, seed: int) -> list[float]:
    """By-group bootstrap CI of the ECE (10 bins) of p against q."""
    from imgpref.eval import calibration as cal

    return list(group_bootstrap_stat(lambda rows: cal.ece(p[rows], q[rows]), groups,
                                     n_resamples=n_resamples, seed=seed))


def _head_kind(scorer) -> str:
    """'pairwise' (GPM), 'pluralistic' or 'scalar' (any other head, and scorers without an imgpref head)."""
    from imgpref.scorers.pref_heads import GPMHead, PluralisticHead

    head = getattr(scorer, "head", None)
    return "pairwise" if isinstance(head, GPMHead) else "pluralistic" if isinstance(head, PluralisticHead) else "scalar"


def _row_annotators(kind: str, scorer, df: pd.DataFrame, annotator: str | None,
                    per_annotator: bool) -> list[str | None] | None:
    """The annotator whose mixture predicts each row (None: population mixture), checked against the head."""
    if annotator is not None:
        if kind != "pluralistic":
            raise ValueError(f"--annotator needs a pluralistic head; scorer {getattr(scorer, 'name', '?')!r} has a "
                             f"{kind} head (use --per-annotator for a per-annotator breakdown of its numbers)")
        known = scorer.head.annotators
        if annotator not in known:
            raise ValueError(f"annotator {annotator!r} is not known to the scorer; known: "
                             f"{', '.join(known) or '(none)'} (add one with `imgpref annotator fit`)")
        return [annotator] * len(df)
    if per_annotator:
        if "annotator" not in df.columns or not (df["annotator"].astype(str) != "").any():
            raise ValueError("--per-annotator needs a manifest with an 'annotator' column")
        if kind == "pluralistic":
            return [a if a else None for a in df["annotator"].astype(str)]
    return None


def _predictions(scorer, kind: str, ps, df: pd.DataFrame, ann: list[str | None] | None,
                 bt_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pair logit d, item score of image 0, of image 1) per row, oriented so that higher is better."""
    if kind == "scalar":
        s0, s1 = _oriented(scorer, ps)
        return s0 - s1, s0, s1
    import torch

    from imgpref.scorers.pref_heads import borda_scores, item_scores_from_outputs, pair_logit_from_outputs

    head = scorer.head
    ok = ps.ok
    o0, o1 = torch.as_tensor(np.nan_to_num(ps.o0)), torch.as_tensor(np.nan_to_num(ps.o1))
    with torch.no_grad():
        d = pair_logit_from_outputs(head, o0.float(), o1.float(), ann).double().numpy()
        if kind == "pluralistic":
            s0 = item_scores_from_outputs(head, o0.float(), ann).double().numpy()
            s1 = item_scores_from_outputs(head, o1.float(), ann).double().numpy()
        else:  # no per-image score: the Borda score of each image among the images of its group
            s0, s1 = np.zeros(len(df)), np.zeros(len(df))
            groups = df["group"].astype(str).to_numpy()
            for g in pd.unique(groups):
                rows = np.flatnonzero((groups == g) & ok)
                items: dict[str, int] = {}
                vecs = []
                for r in rows:
                    for iid, o in ((ps.id0[r], o0[r]), (ps.id1[r], o1[r])):
                        if iid not in items:
                            items[iid] = len(items)
                            vecs.append(o)
                if not vecs:
                    continue
                b = borda_scores(head, torch.stack(vecs).float(), scale=bt_scale).double().numpy()
                s0[rows] = [b[items[ps.id0[r]]] for r in rows]
                s1[rows] = [b[items[ps.id1[r]]] for r in rows]
    bad = ~ok
    d[bad], s0[bad], s1[bad] = np.nan, np.nan, np.nan
    return d, s0, s1


def _protocol_pickapic(df, s0, s1, val, threshold, *, n_resamples, seed) -> dict[str, Any]:
    label = P.labels_from_votes(_votes(df))
    extra: dict[str, Any] = {}
    if threshold is None:
        if val is None or len(val[0]) == 0:
            raise ValueError(
                "the Pick-a-Pic protocol tunes its tie threshold on the manifest's 'val' rows and found none; "
                "add a val split or pass --threshold"
            )
        vs0, vs1, vdf = val
        vlabel = P.labels_from_votes(_votes(vdf))
        threshold = P.tune_pickapic_threshold(vs0, vs1, vlabel)
        extra = {"threshold_source": "val", "val_accuracy": P.pickapic_accuracy(vs0, vs1, vlabel, threshold),
                 "n_val_pairs": int(len(vlabel))}
    else:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold}")
        extra = {"threshold_source": "given"}
    per = P.pickapic_example_scores(s0, s1, label, threshold)
    lo, hi = group_bootstrap_ci(per, df["group"].astype(str).to_numpy(), n_resamples=n_resamples, seed=seed)
    return {
        "accuracy": float(per.mean()) if per.size else float("nan"),
        "accuracy_ci": [lo, hi],
        "threshold": float(threshold),
        **extra,
        "n_pairs": int(len(label)),
        "n_ties": int((label == 0.5).sum()),
        "n_groups": int(df["group"].nunique()),
    }


def _protocol_hpd(df, s0, s1, ids, *, n_resamples, seed) -> dict[str, Any]:
    label = P.labels_from_votes(_votes(df))
    groups = df["group"].astype(str).to_numpy()
    accs, n_pairs, incomplete = [], 0, 0
    for g in pd.unique(groups):
        m = np.flatnonzero(groups == g)
        order: dict[str, int] = {}
        score: list[float] = []
        for r in m:  # items in order of first appearance: the position used to break model ties
            for iid, s in ((ids[0][r], s0[r]), (ids[1][r], s1[r])):
                if iid not in order:
                    order[iid] = len(order)
                    score.append(s)
        n = len(order)
        if n < 2:
            continue
        i0 = np.array([order[ids[0][r]] for r in m])
        i1 = np.array([order[ids[1][r]] for r in m])
        if len({tuple(sorted(t)) for t in zip(i0.tolist(), i1.tolist())}) < n * (n - 1) // 2:
            incomplete += 1
        ranks = P.ranks_from_pairs(i0, i1, label[m], n)
        accs.append(P.hpd_prompt_accuracy(np.array(score), ranks))
        n_pairs += n * (n - 1) // 2
    accs_arr = np.array(accs, dtype=np.float64)
    lo, hi = bootstrap_ratio_ci(accs_arr, np.ones_like(accs_arr), n_resamples=n_resamples, seed=seed)
    return {
        "accuracy": float(accs_arr.mean()) if accs_arr.size else float("nan"),
        "accuracy_ci": [lo, hi],
        "averaging": "per_prompt",
        "n_pairs": int(n_pairs),
        "n_groups": int(accs_arr.size),
        "n_incomplete_groups": int(incomplete),
    }


def _protocol_imagereward(df, s0, s1, *, n_resamples, seed) -> dict[str, Any]:
    label = P.labels_from_votes(_votes(df))
    groups = df["group"].astype(str).to_numpy()
    correct, counted = P.imagereward_correct(s0, s1, label)
    lo, hi = group_bootstrap_ci(correct, groups, counted, n_resamples=n_resamples, seed=seed)
    return {
        "accuracy": P.imagereward_accuracy(s0, s1, label),
        "accuracy_ci": [lo, hi],
        "averaging": "pooled",
        "accuracy_per_prompt": P.imagereward_accuracy(s0, s1, label, groups, per_prompt=True),
        "n_pairs": int(counted.sum()),
        "n_human_ties": int((label == 0.5).sum()),
        "n_groups": int(len(np.unique(groups[counted > 0]))),
    }


def evaluate(
    scorer,
    manifest_path: str | Path,
    split: str | None = "test",
    protocol: str = "votes",
    out: str | Path | None = None,
    batch_size: int = 32,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    progress: bool = False,
    annotator: str | None = None,
    per_annotator: bool = False,
) -> dict[str, Any]:
    """Evaluate `scorer` (a Scorer, preset name or scorer folder) on `split` of a manifest with `protocol`.

    Returns the metrics dict (see the module docstring) and, with `out`, writes it as JSON (NaN -> null) plus,
    for the votes protocol, the reliability diagram and the per-group table next to it.
    `split="all"` (or None) uses every row. `annotator` / `per_annotator`: see the module docstring.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    manifest_path = Path(manifest_path)
    if isinstance(scorer, (str, Path)):
        scorer = load_scorer(str(scorer))
    if hasattr(scorer, "eval"):
        scorer.eval()
    df_all = read_manifest(manifest_path)
    df = _select_split(df_all, split, manifest_path)
    kind = _head_kind(scorer)
    if annotator is not None and "annotator" in df.columns and (df["annotator"].astype(str) == annotator).any():
        df = df[df["annotator"].astype(str) == annotator].reset_index(drop=True)
    val_df = None
    if protocol == "pickapic" and threshold is None:
        val_df = df_all[df_all["split"].astype(str) == "val"].reset_index(drop=True)
        if split == "val":
            raise ValueError("the Pick-a-Pic threshold is tuned on 'val'; evaluate another split or pass --threshold")
    # score evaluated and validation rows in one pass so shared images are scored once
    both = pd.concat([df, val_df], ignore_index=True) if val_df is not None and len(val_df) else df
    ann = _row_annotators(kind, scorer, both, annotator, per_annotator)  # usage errors before any scoring
    ps = score_pairs(scorer, both, batch_size=batch_size, progress=progress, outputs=kind != "scalar")
    extra = dict(getattr(getattr(scorer, "info", None), "extra", None) or {})
    bt_scale = float(extra.get("bt_scale", 1.0))
    if kind == "pluralistic" and ann is None:
        bt_scale = float(extra.get("bt_scale_population", bt_scale))
    d_all, s0_all, s1_all = _predictions(scorer, kind, ps, both, ann, bt_scale)
    ok_all = ps.ok
    n = len(df)
    ok = ok_all[:n]
    keep = np.flatnonzero(ok)
    d = df.iloc[keep].reset_index(drop=True)
    s0, s1, dd = s0_all[:n][keep], s1_all[:n][keep], d_all[:n][keep]
    ids = (ps.id0[:n][keep], ps.id1[:n][keep])
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    common = dict(n_resamples=n_resamples, seed=seed)
    if protocol == "votes":
        metrics = _protocol_votes(scorer, d, s0, s1, ids, d=dd, bt_scale=bt_scale, per_annotator=per_annotator,
                                  out=out_path, **common)
    elif protocol == "pickapic":
        val = None
        if val_df is not None:
            vk = np.flatnonzero(ok_all[n:])
            # the protocol's softmax([s0, s1]) depends on s0 - s1 only, so (d, 0) is exact for every head
            val = (d_all[n:][vk], np.zeros(len(vk)), val_df.iloc[vk].reset_index(drop=True))
        metrics = _protocol_pickapic(d, dd, np.zeros_like(dd), val, threshold, **common)
        if threshold is None and split in ALL_SPLITS:
            metrics["warning"] = "the tie threshold was tuned on val rows that are also evaluated (split 'all')"
    elif protocol == "hpd":
        metrics = _protocol_hpd(d, s0, s1, ids, **common)
    else:
        metrics = _protocol_imagereward(d, dd, np.zeros_like(dd), **common)
    for k in VOTE_KEYS:
        metrics.setdefault(k, None)
    result: dict[str, Any] = {
        "protocol": protocol,
        "split": "all" if split in ALL_SPLITS else split,
        "scorer": str(getattr(scorer, "name", type(scorer).__name__)),
        "manifest": str(manifest_path),
        "prediction": {"head": kind, "annotator": annotator,
                       "per_annotator": bool(per_annotator and kind == "pluralistic"),
                       "logit": {"scalar": "s0 - s1", "pairwise": "pairwise s(a, b)",
                                 "pluralistic": "annotator mixture" if ann is not None
                                 else "population mixture"}[kind]},
        **metrics,
        "n_skipped_pairs": int(n - len(keep)),
        "image_errors": ps.errors[:50],
        "bootstrap": {"n_resamples": n_resamples, "level": 0.95, "seed": seed, "unit": "group"},
    }
    result = _jsonable(result)
    if out_path is not None:

        with atomic_write(out_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
