"""Simulated annotators for the world: votes drawn from the gold judge's utility, never the utility itself.

Each annotator a has a temperature T_a (log-normal around `temperature`), a lapse rate and a taste group g.
Group g values an image at `u_g = w_f[g] * fidelity + w_a[g] * aesthetics` (group 0's weights are the gold
utility's, `imgpref.world.judge.UTILITY_WEIGHTS`). For a pair (0, 1) the annotator answers by Davidson's model
with ties (REFERENCE.md) on r = u / T_a:

    P(0) ∝ exp(r_0),  P(1) ∝ exp(r_1),  P(tie) ∝ nu * exp((r_0 + r_1) / 2)

and with probability `lapse` instead clicks left or right at random (no tie). `vote_probabilities` is that
formula; `draw_votes` samples it; `build_manifest` turns judged images into the canonical manifest rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

from imgpref.world.judge import UTILITY_WEIGHTS


@dataclass(frozen=True)
class AnnotatorConfig:
    """Knobs of the simulated crowd (defaults: oracle accuracy vs majority ~0.9 on stand-in generations)."""

    n_annotators: int = 60
    votes_per_pair: int = 5
    temperature: float = 0.05       # utility units: a utility gap of 0.1 is P ~ 0.87 for a typical annotator
    temperature_sd: float = 0.4     # log-sd of the per-annotator temperature
    tie_nu: float = 0.3             # Davidson tie strength: P(tie) = nu / (2 + nu) ~ 0.13 at equal utility
    lapse: float = 0.05             # mean lapse rate (random left/right click)
    taste_groups: int = 1           # 1 or 2; group 1 weights aesthetics more
    group_weights: tuple[tuple[float, float], ...] = (UTILITY_WEIGHTS, (0.3, 0.7))
    group1_share: float = 0.4       # share of annotators in group 1 when taste_groups == 2


@dataclass(frozen=True)
class Annotator:
    id: str
    group: int
    temperature: float
    lapse: float


def make_annotators(cfg: AnnotatorConfig, seed: int) -> list[Annotator]:
    """The annotator pool, deterministic from `seed`."""
    if cfg.taste_groups not in (1, 2):
        raise ValueError(f"taste_groups={cfg.taste_groups} must be 1 or 2")
    if cfg.n_annotators < 1 or cfg.votes_per_pair < 1:
        raise ValueError("n_annotators and votes_per_pair must be >= 1")
    rng = np.random.default_rng([seed, 101])
    temps = cfg.temperature * np.exp(rng.normal(0.0, cfg.temperature_sd, cfg.n_annotators))
    # lapse rates vary (Beta with the configured mean, concentration 20)
    lapses = rng.beta(20 * cfg.lapse, 20 * (1 - cfg.lapse), cfg.n_annotators) if cfg.lapse > 0 else np.zeros(
        cfg.n_annotators)
    groups = (rng.random(cfg.n_annotators) < cfg.group1_share).astype(int) if cfg.taste_groups == 2 else np.zeros(
        cfg.n_annotators, dtype=int)
    return [Annotator(f"g{g}-a{i:03d}", int(g), float(t), float(lp))
            for i, (g, t, lp) in enumerate(zip(groups, temps, lapses))]


def group_utility(fidelity: np.ndarray, aesthetics: np.ndarray, weights: tuple[float, float]) -> np.ndarray:
    """One taste group's utility: w_f * fidelity + w_a * aesthetics."""
    return weights[0] * np.asarray(fidelity) + weights[1] * np.asarray(aesthetics)


def vote_probabilities(u0, u1, temperature, nu: float, lapse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(0 wins), P(1 wins), P(tie)) under Davidson's model on u / temperature, mixed with a lapse rate.

    Computed with the larger of the three log-weights subtracted, so tiny temperatures do not overflow.
    """
    r0 = np.asarray(u0, dtype=np.float64) / temperature
    r1 = np.asarray(u1, dtype=np.float64) / temperature
    logs = np.stack([r0, r1, np.log(nu) + (r0 + r1) / 2.0]) if nu > 0 else np.stack([r0, r1, np.full_like(r0, -np.inf)])
    w = np.exp(logs - logs.max(axis=0))
    p = w / w.sum(axis=0)
    lapse = np.asarray(lapse, dtype=np.float64)
    return (1 - lapse) * p[0] + lapse / 2, (1 - lapse) * p[1] + lapse / 2, (1 - lapse) * p[2]


def draw_votes(judged0: dict[str, np.ndarray], judged1: dict[str, np.ndarray], cfg: AnnotatorConfig,
               seed: int, annotators: Sequence[Annotator] | None = None) -> pd.DataFrame:
    """One row per vote: pair (index into the judged arrays), annotator, group, choice (0, 1 or 2 = tie).

    `judged0`/`judged1` are `imgpref.world.judge.judge` outputs (only fidelity and aesthetics are read).
    Each pair gets `votes_per_pair` distinct annotators drawn at random from the pool.
    """
    pool = list(annotators) if annotators is not None else make_annotators(cfg, seed)
    n = len(judged0["fidelity"])
    k = cfg.votes_per_pair
    if k > len(pool):
        raise ValueError(f"votes_per_pair={k} exceeds the {len(pool)} annotators; raise n_annotators")
    rng = np.random.default_rng([seed, 202])
    who = np.stack([rng.choice(len(pool), size=k, replace=False) for _ in range(n)]) if n else np.zeros((0, k), int)
    pair = np.repeat(np.arange(n), k)
    who = who.ravel()
    groups = np.array([pool[i].group for i in who], dtype=int)
    temps = np.array([pool[i].temperature for i in who])
    lapses = np.array([pool[i].lapse for i in who])
    u0 = np.empty(len(who))
    u1 = np.empty(len(who))
    for g, weights in enumerate(cfg.group_weights[: cfg.taste_groups]):
        m = groups == g
        u0[m] = group_utility(judged0["fidelity"][pair[m]], judged0["aesthetics"][pair[m]], weights)
        u1[m] = group_utility(judged1["fidelity"][pair[m]], judged1["aesthetics"][pair[m]], weights)
    p0, p1, pt = vote_probabilities(u0, u1, temps, cfg.tie_nu, lapses)
    x = rng.random(len(who))
    choice = np.where(x < p0, 0, np.where(x < p0 + p1, 1, 2))
    return pd.DataFrame({"pair": pair, "annotator": [pool[i].id for i in who], "group": groups, "choice": choice})


def all_pairs(n_per_prompt: int, max_pairs: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, among one prompt's images; a random subset of `max_pairs` when given."""
    pairs = list(combinations(range(n_per_prompt), 2))
    if max_pairs is not None and max_pairs < len(pairs):
        rng = np.random.default_rng([seed, 303])
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs


def build_manifest(items: pd.DataFrame, judged: dict[str, np.ndarray], cfg: AnnotatorConfig, seed: int, *,
                   max_pairs_per_prompt: int | None = None, per_annotator: bool = False) -> pd.DataFrame:
    """Canonical manifest rows from judged images.

    `items`: one row per image with columns `path`, `prompt`, `prompt_id`, `split` (all images of a prompt
    share its split); `judged`: `judge(images, items.prompt)` aligned with `items`. Pairs are formed within
    each prompt (`all_pairs`); the image order inside a pair is randomised so image_0 is not biased.
    Aggregated (default): one row per pair with vote counts, annotator "". `per_annotator`: one row per vote
    (a hard 1/0/0, 0/1/0 or 0/0/1 label) with the annotator's id, for per-annotator and pluralistic heads.
    The manifest's `group` is the prompt id (pairs of one prompt share metrics and bootstrap resampling).
    """
    need = {"path", "prompt", "prompt_id", "split"}
    if missing := need - set(items.columns):
        raise ValueError(f"items lack column(s) {sorted(missing)}; need {sorted(need)}")
    rng = np.random.default_rng([seed, 404])
    left, right = [], []
    for pid, rows in items.groupby("prompt_id", sort=True):
        idx = rows.index.to_numpy()
        for i, j in all_pairs(len(idx), max_pairs_per_prompt, seed=hash_seed(seed, str(pid))):
            a, b = (idx[i], idx[j]) if rng.random() < 0.5 else (idx[j], idx[i])
            left.append(a)
            right.append(b)
    pos = {ix: k for k, ix in enumerate(items.index)}
    li = np.array([pos[a] for a in left], dtype=int)
    ri = np.array([pos[b] for b in right], dtype=int)
    j0 = {k: np.asarray(v)[li] for k, v in judged.items()}
    j1 = {k: np.asarray(v)[ri] for k, v in judged.items()}
    votes = draw_votes(j0, j1, cfg, seed)
    base = pd.DataFrame({
        "image_0": items["path"].to_numpy()[li], "image_1": items["path"].to_numpy()[ri],
        "prompt": items["prompt"].to_numpy()[li], "group": items["prompt_id"].astype(str).to_numpy()[li],
        "split": items["split"].to_numpy()[li],
    })
    if per_annotator:
        out = base.iloc[votes["pair"].to_numpy()].reset_index(drop=True)
        ch = votes["choice"].to_numpy()
        out["votes_0"], out["votes_1"], out["votes_tie"] = (ch == 0).astype(int), (ch == 1).astype(int), (ch == 2).astype(int)
        out["annotator"] = votes["annotator"].to_numpy()
    else:
        counts = np.zeros((len(base), 3), dtype=int)
        np.add.at(counts, (votes["pair"].to_numpy(), votes["choice"].to_numpy()), 1)
        out = base.copy()
        out["votes_0"], out["votes_1"], out["votes_tie"] = counts[:, 0], counts[:, 1], counts[:, 2]
        out["annotator"] = ""
    return out[["image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group", "annotator", "split"]]


def hash_seed(seed: int, key: str) -> int:
    """A stable integer seed from (seed, key) (Python's hash() is salted per process)."""
    import zlib

    return (zlib.crc32(key.encode()) ^ (seed * 2654435761)) & 0x7FFFFFFF
