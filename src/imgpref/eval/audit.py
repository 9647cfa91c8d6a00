"""Noisy-label audit of a manifest: how sure the votes are, and where a scorer strongly disagrees with them.

Per pair (w0 = votes_0 + 0.5 * votes_tie, w1 = votes_1 + 0.5 * votes_tie, ties as half votes):
- `majority`: 0, 1, or "tie" when w0 == w1; `majority_share` = max(q, 1 - q) with q = w0 / n.
- `confidence`: posterior probability that the majority side is the population's preferred side, with a
  uniform prior: theta ~ Beta(1 + w0, 1 + w1), confidence = P(theta > 1/2) for majority 0 (P(theta < 1/2) for
  majority 1), 0.5 for a tie. One hard vote gives 0.75, 25 votes at 20 vs 5 give ~0.9998.
- `p_model_majority`: the scorer's probability for the majority side, sigmoid(bt_scale * (s_maj - s_min)).
- `flagged`: confidence >= min_confidence and p_model_majority < threshold (the scorer is confident the other
  way on a pair the voters are sure about). `disagreement` = 1 - p_model_majority (0 for ties); the table is
  sorted flagged first, then by disagreement.
- Optional ensemble ("preference strength"): K logistic heads, no intercept, on differences of the scorer's
  image embeddings (cached once), each fitted on a bootstrap resample of the decisive pairs (with each pair's
  mirrored copy so both classes exist). Margins are out-of-bag: a pair is judged only by heads that did not
  train on it (all heads if fewer than 2 did not). `ens_margin_mean` points toward the majority side (image 0
  for even pairs); `ens_margin_std` is the spread over those heads. Embeddings are image-only, also for
  prompt-conditioned scorers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imgpref.eval import evaluate as _ev  # module access, so tests can monkeypatch _ev.load_scorer
from imgpref.eval.evaluate import _select_split, sigmoid
from imgpref.eval.scoring import image_id, load_rgb, score_pairs


def majority_confidence(votes) -> np.ndarray:
    """Posterior P(majority side is preferred) per pair under Beta(1 + w0, 1 + w1); 0.5 for even pairs."""
    from scipy.stats import beta

    v = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    w0, w1 = v[:, 0] + 0.5 * v[:, 2], v[:, 1] + 0.5 * v[:, 2]
    p_theta_gt_half = beta.sf(0.5, 1 + w0, 1 + w1)
    return np.where(w0 > w1, p_theta_gt_half, np.where(w1 > w0, 1 - p_theta_gt_half, 0.5))


def _embed(scorer, values: list, batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, len(values), batch_size):
        pixels = torch.stack([scorer.preprocess(load_rgb(v)) for v in values[start:start + batch_size]])
        with torch.no_grad():
            out.append(scorer.embed_images(pixels.to(scorer.device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def ensemble_margins(x: np.ndarray, y: np.ndarray, train: np.ndarray, k: int, seed: int = 0,
                     c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-bag margins (mean, std over heads) of K bootstrap logistic heads, w . x per pair.

    `x`: [P, D] pair features (image-0 minus image-1 embedding); `y`: 1 where image 0 is the majority;
    `train`: mask of pairs usable for fitting (decisive ones). Margins point toward image 0.
    """
    from sklearn.linear_model import LogisticRegression

    if k < 1:
        raise ValueError(f"ensemble size must be >= 1; got {k}")
    idx = np.flatnonzero(train)
    if idx.size < 2:
        raise ValueError("the ensemble needs at least 2 pairs with a vote majority")
    rng = np.random.default_rng(seed)
    margins = np.empty((k, x.shape[0]))
    inbag = np.zeros((k, x.shape[0]), dtype=bool)
    for h in range(k):
        pick = rng.choice(idx, size=idx.size, replace=True)
        inbag[h, pick] = True
        xs = np.concatenate([x[pick], -x[pick]])
        ys = np.concatenate([y[pick], 1 - y[pick]])
        clf = LogisticRegression(fit_intercept=False, C=c, max_iter=1000)
        clf.fit(xs, ys)
        margins[h] = x @ clf.coef_.reshape(-1)
    oob = ~inbag
    use = np.where(oob.sum(axis=0, keepdims=True) >= 2, oob, True)  # a spread needs >= 2 heads
    cnt = use.sum(axis=0)
    mean = (margins * use).sum(axis=0) / cnt
    var = (((margins - mean) ** 2) * use).sum(axis=0) / np.maximum(cnt - 1, 1)
    return mean, np.sqrt(var)


def audit(
    scorer,
    manifest_path: str | Path,
    *,
    split: str | None = "all",
    out: str | Path | None = None,
    threshold: float = 0.2,
    min_confidence: float = 0.9,
    ensemble: int = 0,
    seed: int = 0,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Audit a manifest's labels against `scorer` (and optionally an ensemble); see the module docstring.

    Returns the per-pair table sorted by disagreement (flagged pairs first) and writes it as CSV to `out`.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0, 1]; got {min_confidence}")
    manifest_path = Path(manifest_path)
    if isinstance(scorer, (str, Path)):
        scorer = _ev.load_scorer(str(scorer))
    if hasattr(scorer, "eval"):
        scorer.eval()
    df_all = _ev.read_manifest(manifest_path)
    df_all = df_all.assign(row=np.arange(1, len(df_all) + 1))
    df = _select_split(df_all, split, manifest_path)
    v = df[["votes_0", "votes_1", "votes_tie"]].to_numpy(dtype=np.float64)
    w0, w1 = v[:, 0] + 0.5 * v[:, 2], v[:, 1] + 0.5 * v[:, 2]
    n = v.sum(axis=1)
    q = w0 / n
    maj0, maj1 = w0 > w1, w1 > w0
    decisive = maj0 | maj1
    conf = majority_confidence(v)

    ps = score_pairs(scorer, df, batch_size=batch_size)
    sign = 1.0 if getattr(scorer, "higher_is_better", True) else -1.0
    info = getattr(scorer, "info", None)
    bt_scale = float((getattr(info, "extra", None) or {}).get("bt_scale", 1.0))
    p0 = sigmoid(bt_scale * sign * (ps.s0 - ps.s1))  # NaN stays NaN for unreadable images
    p_maj = np.where(maj0, p0, np.where(maj1, 1 - p0, 0.5))
    p_maj = np.where(ps.ok, p_maj, np.nan)
    table = pd.DataFrame({
        "row": df["row"].to_numpy(),
        "image_0": [image_id(x) for x in df["image_0"]],
        "image_1": [image_id(x) for x in df["image_1"]],
        "prompt": df["prompt"].to_numpy(),
        "group": df["group"].to_numpy(),
        "split": df["split"].to_numpy(),
        "votes_0": df["votes_0"].to_numpy(),
        "votes_1": df["votes_1"].to_numpy(),
        "votes_tie": df["votes_tie"].to_numpy(),
        "n_votes": n.astype(np.int64),
        "q": q,
        "majority": np.where(maj0, "0", np.where(maj1, "1", "tie")),
        "majority_share": np.maximum(q, 1 - q),
        "confidence": conf,
        "p_model_majority": p_maj,
        "disagreement": np.where(decisive, 1 - p_maj, 0.0),
    })
    table["flagged"] = decisive & (conf >= min_confidence) & (np.nan_to_num(p_maj, nan=1.0) < threshold)
    if ensemble:
        values = list(dict.fromkeys(list(df["image_0"]) + list(df["image_1"])))
        emb = _embed(scorer, values, batch_size)
        pos = {image_id(x): i for i, x in enumerate(values)}
        i0 = np.array([pos[image_id(x)] for x in df["image_0"]])
        i1 = np.array([pos[image_id(x)] for x in df["image_1"]])
        x = emb[i0] - emb[i1]
        mean, std = ensemble_margins(x, maj0.astype(np.float64), decisive, ensemble, seed=seed)
        toward = np.where(maj1, -1.0, 1.0)
        table["ens_margin_mean"] = toward * mean  # toward image 0 for even pairs
        table["ens_margin_std"] = std
        table["ens_p_majority"] = np.where(decisive, sigmoid(toward * mean), 0.5)
        table["ens_flagged"] = decisive & (conf >= min_confidence) & (table["ens_p_majority"] < threshold)
    table = table.sort_values(["flagged", "disagreement"], ascending=[False, False], kind="stable",
                              na_position="last").reset_index(drop=True)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from imgpref.atomic import atomic_write
        from imgpref.csv_safe import write_csv

        with atomic_write(out) as tmp:
            write_csv(table, tmp)  # image paths and groups are user text: neutralised against spreadsheet formulas
    return table
