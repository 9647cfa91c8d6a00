"""Scoring generated images with one or more scorers and combining them into one reward per image.

Every scorer is used through `Scorer.as_reward()`, so a lower-is-better scorer is negated and "more reward is
better" holds throughout. With one scorer the combined reward is its raw reward (units kept, so `--min-margin`
is in that scorer's units; its weight is ignored). With several, each scorer's rewards are z-normalised over the images being compared
(mean 0, standard deviation 1; a constant scorer contributes 0) and the weighted sum is the reward, so scorers
on different scales (PickScore ~20, aesthetic ~5, exposure ~0.5) are weighed by `weights` alone.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor


def resolve_scorers(scorers: Sequence[Any] | Any) -> list[Any]:
    """Scorer objects or names/folders (loaded with `imgpref.scorers.registry.load_scorer`) -> Scorer objects."""
    if isinstance(scorers, (str, bytes)) or not isinstance(scorers, Sequence):
        scorers = [scorers]
    if not scorers:
        raise ValueError("no scorer given; pass at least one --scorer NAME (e.g. exposure, colorfulness, pickscore)")
    out = []
    for s in scorers:
        if isinstance(s, str):
            from imgpref.scorers.registry import load_scorer

            s = load_scorer(s)
        if not hasattr(s, "as_reward"):
            raise ValueError(f"{s!r} is not a Scorer (it has no as_reward()); pass a scorer name or Scorer object")
        out.append(s)
    return out


def scorer_names(scorers: Sequence[Any]) -> list[str]:
    """Unique column names for the scorers (a repeated name gets a numeric suffix)."""
    names: list[str] = []
    for s in scorers:
        base = str(getattr(s, "name", type(s).__name__))
        name, i = base, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def resolve_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """One weight per scorer (default all 1)."""
    if weights is None or len(weights) == 0:
        return np.ones(n)
    if len(weights) != n:
        raise ValueError(f"got {len(weights)} weights for {n} scorers; pass one --reward-weight per --scorer (or none)")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite numbers; got {list(weights)}")
    return w


@torch.no_grad()
def score_images(
    scorers: Sequence[Any], images: Tensor, prompts: Sequence[str] | None, *, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Rewards (sign-adjusted, see module doc) per scorer name for float images [N, 3, H, W] in [0, 1]."""
    names = scorer_names(scorers)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for scorer, name in zip(scorers, names):
        reward = scorer.as_reward()
        device = getattr(scorer, "device", torch.device("cpu"))
        needs_prompt = bool(getattr(scorer, "needs_prompt", False))
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            p = list(prompts[start : start + batch_size]) if (prompts is not None and needs_prompt) else None
            r = reward(batch, p)
            r = torch.as_tensor(r).detach().float().cpu().reshape(-1)
            if r.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"scorer {name!r} returned {r.shape[0]} scores for {batch.shape[0]} images; "
                    "a reward must give one score per image"
                )
            out[name].append(r.numpy().astype(np.float64))
    return {n: np.concatenate(v) for n, v in out.items()}


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std over all entries; zeros when x is constant."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    if not np.isfinite(sd) or sd == 0:
        return np.zeros_like(x)
    return (x - x.mean()) / sd


def combine_rewards(per_scorer: dict[str, np.ndarray], weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """One reward per image: the raw reward for one scorer, else the weighted sum of z-scores (module doc)."""
    names = list(per_scorer)
    if not names:
        raise ValueError("no scorer rewards to combine")
    w = resolve_weights(None if weights is None else list(np.asarray(weights, dtype=np.float64)), len(names))
    if len(names) == 1:
        return np.asarray(per_scorer[names[0]], dtype=np.float64)  # raw units; a lone weight has no effect
    return sum(wi * zscore(per_scorer[n]) for wi, n in zip(w, names))
