"""Scorer-labelled, on-policy preference pairs (RankDPO / "Syn-Pic" style; REFERENCE.md).

`label_pairs` generates K images per prompt with recorded seeds (`imgpref.align.generate`), scores every image
with one or more scorers (`imgpref.align.rewards`: raw reward for one scorer, weighted sum of z-scores for
several; lower-is-better scorers negated), and writes, in `out`:

- `images/`: every generated image (PNG), named `p<prompt>_k<k>_s<seed>.png`;
- `generations.csv`: prompt_index, prompt, k, seed, path, split, reward and one column per scorer;
- `manifest.csv`: a canonical preference manifest, image_0 = the winner with votes 1/0/0, group = prompt id,
  split `train` (or `val` for prompts held out with `val_fraction`);
- `latents.safetensors`: the final latent of every image (train on them with `data.latents: auto`, see
  `imgpref.align.latent_pairs`);
- `pairs.json`: counts (pairs, ties, pairs under the margin) and every setting, for the record.

With `lists=True` (`imgpref align pairs --lists`, for RankDPO) all K images of a prompt are kept with their gains
(`imgpref.align.lists.win_rate_gains`: win rate over scorers and images, strict wins): `generations.csv` gets a
`gain` column and `manifest.csv` holds every pair of the prompt's images with `gain_0` / `gain_1` (equal gains as
0/0/1 tie rows; data_cards/align_lists.md).

Ties (exactly equal rewards) are never given to a side: they are counted and dropped, or written as 0/0/1 rows
with `keep_ties=True`. Pairs whose reward difference is below `min_margin` are counted and dropped.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from imgpref.align.generate import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    generate_images,
    image_filename,
    load_pipeline,
    save_images,
)
from imgpref.align.latent_pairs import save_latents
from imgpref.align.rewards import combine_rewards, resolve_scorers, resolve_weights, score_images
from imgpref.atomic import atomic_write

log = logging.getLogger(__name__)

MODES = ("best-worst", "all")
MANIFEST_COLUMNS = ("image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group", "annotator", "split")


@dataclass
class PairChoice:
    """One pair within a prompt: indices (into that prompt's K images) of the winner and loser, and the margin."""

    winner: int
    loser: int
    margin: float
    tie: bool = False


@dataclass
class PairCounts:
    pairs: int = 0
    ties: int = 0
    below_margin: int = 0


def choose_pairs(rewards: Sequence[float], mode: str = "best-worst", min_margin: float = 0.0) -> tuple[list[PairChoice], PairCounts]:
    """Pairs among one prompt's images from their rewards (higher is better).

    best-worst: the highest against the lowest reward (the first index among equal maxima/minima);
    all: every unordered pair, the higher reward as winner.
    A pair with equal rewards is a tie (returned with `tie=True`, never oriented by reward); a pair with
    0 < difference < min_margin is dropped and counted in `below_margin`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0; got {min_margin}")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size < 2:
        raise ValueError(f"need at least 2 images per prompt to make pairs; got {r.size} (use --n 2 or more)")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"rewards must be finite; got {r.tolist()}")
    if mode == "best-worst":
        candidates = [(int(np.argmax(r)), int(np.argmin(r)))]
    else:
        candidates = [(i, j) for i in range(r.size) for j in range(i + 1, r.size)]
    counts = PairCounts()
    out: list[PairChoice] = []
    for i, j in candidates:
        d = r[i] - r[j]
        if d == 0:
            counts.ties += 1
            out.append(PairChoice(min(i, j), max(i, j), 0.0, tie=True))
            continue
        w, l = (i, j) if d > 0 else (j, i)
        if abs(d) < min_margin:
            counts.below_margin += 1
            continue
        counts.pairs += 1
        out.append(PairChoice(w, l, float(abs(d))))
    return out, counts


def held_out_prompts(n_prompts: int, val_fraction: float, seed: int = 0) -> set[int]:
    """Indices of the prompts held out as `val` (a seeded random subset of round(val_fraction * n) prompts)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    k = int(round(val_fraction * n_prompts))
    if val_fraction > 0 and k == 0:
        k = 1
    rng = np.random.default_rng(seed)
    return set(int(i) for i in rng.permutation(n_prompts)[:k])


@dataclass
class PairsReport:
    """What `label_pairs` wrote and counted."""

    out: str
    manifest: str
    generations: str
    n_prompts: int
    n_images: int
    n_pairs: int
    n_ties: int
    n_ties_kept: int
    n_below_margin: int
    n_val_prompts: int
    scorers: list[str]
    weights: list[float]
    mode: str
    min_margin: float

    def summary(self) -> str:
        return (
            f"{self.n_pairs} pairs from {self.n_prompts} prompts x {self.n_images // max(self.n_prompts, 1)} images; "
            f"{self.n_ties} ties ({'kept as 0/0/1 rows' if self.n_ties_kept else 'dropped'}), "
            f"{self.n_below_margin} pairs under min margin {self.min_margin} dropped -> {self.manifest}"
        )


def label_pairs(
    pipeline: Any,
    prompts: Sequence[str],
    scorers: Sequence[Any] | Any,
    out: str | Path,
    *,
    n: int = 4,
    weights: Sequence[float] | None = None,
    mode: str = "best-worst",
    min_margin: float = 0.0,
    keep_ties: bool = False,
    val_fraction: float = 0.0,
    split_seed: int = 0,
    base_seed: int = 0,
    batch_size: int = 8,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
    score_batch_size: int = 64,
    progress: bool = False,
    lists: bool = False,
) -> PairsReport:
    """Generate `n` images per prompt, score them, write pairs as a canonical manifest (module doc)."""
    if lists and (min_margin or keep_ties or mode != "best-worst"):
        raise ValueError("--lists keeps every image of a prompt with its gain; --mode, --min-margin and --keep-ties "
                         "do not apply to it (leave them at their defaults)")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if n < 2:
        raise ValueError(f"--n must be >= 2 to form pairs; got {n}")
    prompts = [str(p) for p in prompts]
    scorers = resolve_scorers(scorers)
    w = resolve_weights(weights, len(scorers))
    pipe = load_pipeline(pipeline, device=device)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)

    gens = generate_images(
        pipe, prompts, n, base_seed=base_seed, batch_size=batch_size, num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale, height=height, width=width, progress=progress,
    )
    rel_paths = [f"images/{image_filename(i, k, s)}" for i, k, s in zip(gens.prompt_index, gens.k, gens.seeds)]
    save_images(gens.images, [out / p for p in rel_paths])
    save_latents(gens.latents, rel_paths, out)
    per_scorer = score_images(scorers, gens.images, gens.prompts, batch_size=score_batch_size)
    reward = combine_rewards(per_scorer, w)

    val = held_out_prompts(len(prompts), val_fraction, split_seed)
    split_of = ["val" if i in val else "train" for i in gens.prompt_index]
    gen_df = pd.DataFrame(
        {"prompt_index": gens.prompt_index, "prompt": gens.prompts, "k": gens.k, "seed": gens.seeds,
         "path": rel_paths, "split": split_of, "reward": reward}
    )
    for name, vals in per_scorer.items():
        gen_df[f"score_{name}"] = vals
    if lists:
        from imgpref.align.lists import GAIN_COLUMNS, list_manifest_rows, win_rate_gains

        per = np.stack([np.asarray(v, dtype=np.float64) for v in per_scorer.values()])  # [n_scorers, N]
        gen_df["gain"] = np.concatenate([win_rate_gains(per[:, i * n:(i + 1) * n]) for i in range(len(prompts))])
    with atomic_write(out / "generations.csv") as tmp:
        gen_df.to_csv(tmp, index=False)

    rows = []
    total = PairCounts()
    kept_ties = 0
    for i, prompt in enumerate(prompts if lists else []):
        sl = slice(i * n, (i + 1) * n)
        part = list_manifest_rows(rel_paths[sl], gen_df["gain"].to_numpy()[sl].tolist(), prompt, f"prompt{i:05d}",
                                  "val" if i in val else "train")
        ties = sum(r["votes_tie"] for r in part)
        total.pairs += len(part) - ties
        total.ties += ties
        kept_ties += ties
        rows += part
    for i, prompt in enumerate([] if lists else prompts):
        idx = np.arange(i * n, (i + 1) * n)  # generations are ordered prompt-major, k-minor
        choices, counts = choose_pairs(reward[idx], mode, min_margin)
        total.pairs += counts.pairs
        total.ties += counts.ties
        total.below_margin += counts.below_margin
        for c in choices:
            if c.tie and not keep_ties:
                continue
            kept_ties += int(c.tie)
            rows.append({
                "image_0": rel_paths[idx[c.winner]], "image_1": rel_paths[idx[c.loser]],
                "votes_0": 0 if c.tie else 1, "votes_1": 0, "votes_tie": 1 if c.tie else 0,
                "prompt": prompt, "group": f"prompt{i:05d}", "annotator": "", "split": "val" if i in val else "train",
            })
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS) + (list(GAIN_COLUMNS) if lists else []))
    with atomic_write(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    if total.ties and not lists:
        log.warning("%d tied pairs (equal rewards) %s", total.ties, "kept as ties" if keep_ties else "dropped")

    report = PairsReport(
        out=str(out), manifest=str(out / "manifest.csv"), generations=str(out / "generations.csv"),
        n_prompts=len(prompts), n_images=len(gens), n_pairs=total.pairs, n_ties=total.ties, n_ties_kept=kept_ties,
        n_below_margin=total.below_margin, n_val_prompts=len(val), scorers=list(per_scorer), weights=[float(x) for x in w],
        mode="lists" if lists else mode, min_margin=float(min_margin),
    )
    with atomic_write(out / "pairs.json") as tmp:
        tmp.write_text(json.dumps({**asdict(report), "generation": gens.settings}, indent=2))
    log.info(report.summary())
    return report
