"""A shortened alignment loop in the world: pairs on the committed base labelled by a reward, Diffusion-DPO with
the world recipe, then base vs aligned on held-out prompts with the same seeds. Asserts that gold improves."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_dpo_loop_raises_gold_on_heldout_prompts(tmp_path):
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.align_world import BaseSamples, compare_to_base
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import load_world

    torch.set_num_threads(1)
    register_world_scorers()
    pipe, _ = load_world()
    train = world_prompts(1, 24, 0, 0)["train"]
    heldout = world_prompts(0, 0, 0, 16)["test"]  # half unseen colour x shape combos
    sample = {**SAMPLE_SETTINGS, "batch_size": 64}
    pairs = label_pairs(pipe, train, ["world-gold"], tmp_path / "pairs", n=4, **sample)
    assert pairs.n_pairs == len(train)
    res = align(REPO / "configs" / "align" / "world_dpo.yaml", pairs.manifest, tmp_path / "run",
                pipe=copy.deepcopy(pipe), **{"trainer.max_steps": 60, "checkpoint_every_n_steps": 60})
    base = BaseSamples(pipe, heldout, seeds=2)
    r = compare_to_base(base, res.export_dir, load_scorer("world-gold"))
    # Independent re-check of the gold win rate from the per-image utilities the comparison returned.
    wins = np.where(r["gold"]["utility"] > base.gold["utility"], 1.0,
                    np.where(r["gold"]["utility"] == base.gold["utility"], 0.5, 0.0))
    assert r["gold_win"] == pytest.approx(wins.mean())
    # Gold improves on average (measured: utility 0.505 -> 0.508, fidelity 0.370 -> 0.379; win 0.625). A small
    # margin: on the `--fast` base this loop lowers gold, and no loop that fits a test raised it reliably there
    # (benchmarks/RESULTS.md "world_align"). The win-rate and +0.1 fidelity targets are measured by
    # benchmarks/world_align.py (not met).
    assert r["utility_aligned"] > r["utility_base"], r
    assert r["fidelity_aligned"] > r["fidelity_base"], r


def test_scored_grid_prints_the_whole_prompt():
    from imgpref.world.align_world import scored_grid

    short, long = "one red circle", "three orange triangles on a light blue background, centred and crisp, please"
    imgs = torch.full((2, 3, 8, 8), 0.5)
    scores = [("gold", np.array([0.1, 0.2]), np.array([0.3, 0.4]))]
    grid = np.asarray(scored_grid(imgs, imgs, [short, long], scores, cell=48, label_width=160).convert("L"))
    row_h = 48 + 14 + 6
    ink = [np.flatnonzero((grid[18 + r * row_h: 18 + (r + 1) * row_h, :160] < 128).any(axis=1)) for r in range(2)]
    assert np.ptp(ink[0]) < 12                 # one line of text (default font ~11 px high)
    assert np.ptp(ink[1]) > 24                 # 77 characters in a 160 px column: at least three lines, none cut
