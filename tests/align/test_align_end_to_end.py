"""Done-when 1 of issue 4, reduced: scorer-labelled pairs -> align -> evaluation on held-out prompts.

On the tiny offline pipeline, a run trained on pairs labelled by a weight-free scorer (colorfulness) must raise
that reward against the base pipeline with the same seeds: win rate >= 0.7 with the 95% bootstrap interval
above 0.5. benchmarks/align_reward.py is the full-size version (DPO and MaPO, more prompts).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REWARD = "colorfulness"
SAMPLE = dict(num_inference_steps=8, guidance_scale=1.0, batch_size=16)
# Settings for the tiny random UNet (see benchmarks/align_reward.py for why): full fine-tune, on-policy latents.
MAPO = {"model.method": "mapo", "model.beta": 0.1, "model.finetune": "full", "model.lr": 3e-4}


@pytest.mark.slow
def test_mapo_on_scorer_pairs_raises_reward_on_held_out_prompts(tiny_pipe, tiny_pipe_dir, tmp_path):
    from typer.testing import CliRunner

    from imgpref.align.pairs import label_pairs
    from imgpref.align.prompts import demo_prompts
    from imgpref.align.train import align
    from imgpref.cli import app

    train, test = demo_prompts(32), demo_prompts(16, offset=32)
    rep = label_pairs(tiny_pipe, train, [REWARD], tmp_path / "pairs", n=4, **SAMPLE)
    assert rep.n_pairs + rep.n_ties == 32
    res = align(REPO / "configs" / "align" / "tiny_mapo.yaml", rep.manifest, tmp_path / "run",
                pipe=copy.deepcopy(tiny_pipe), **MAPO, **{"data.latents": "auto", "data.batch_size": 8,
                                                          "trainer.max_steps": 60, "checkpoint_every_n_steps": 1000})
    assert res.steps == 60
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    out = CliRunner().invoke(app, [
        "align", "eval", "--base", str(tiny_pipe_dir), "--aligned", str(tmp_path / "run"), "--prompts",
        str(tmp_path / "test.txt"), "--scorer", REWARD, "--seeds", "2", "--steps", "8", "--guidance", "1",
        "--batch-size", "16", "--out", str(tmp_path / "eval"),
    ])
    assert out.exit_code == 0, out.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["n_comparisons"] == 32
    assert m["win_rate"] >= 0.7, m["win_rate"]
    assert m["ci_low"] > 0.5, (m["ci_low"], m["win_rate"])
    assert m["mean_reward_aligned"] > m["mean_reward_base"]
    assert (tmp_path / "eval" / "grid.png").is_file() and (tmp_path / "eval" / "report.html").is_file()
