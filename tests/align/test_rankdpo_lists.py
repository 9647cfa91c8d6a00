"""Ranked lists: RankDPO gains, the list manifest, and the CLI path pairs --lists -> align (rankdpo) -> eval on
the tiny SD3 and FLUX pipelines (generation through the pipelines' own __call__)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgpref.align.lists import list_manifest_rows, lists_from_frame, win_rate_gains

REPO = Path(__file__).resolve().parents[2]


def test_win_rate_gains_by_hand():
    # scorer 1: [0.1, 0.5, 0.5] -> wins [0, 1, 1] (0.5 vs 0.5 is no win for either)
    # scorer 2: [3, 1, 2]       -> wins [2, 0, 1]
    # phi = wins / (n (k - 1)) = [2, 1, 2] / 4
    phi = win_rate_gains([[0.1, 0.5, 0.5], [3.0, 1.0, 2.0]])
    assert phi.tolist() == [0.5, 0.25, 0.5]
    assert win_rate_gains([5.0, 1.0]).tolist() == [1.0, 0.0]  # one scorer, k = 2
    with pytest.raises(ValueError, match="k >= 2"):
        win_rate_gains([[1.0]])


def test_list_manifest_rows_round_trip():
    rows = list_manifest_rows(["a.png", "b.png", "c.png"], [0.25, 0.5, 0.25], "a cat", "prompt00000", "train")
    assert len(rows) == 3
    # (a, b): b has the higher gain -> image_0 = b, votes 1/0/0; (a, c): equal gains -> a 0/0/1 tie row
    ab = [r for r in rows if {r["image_0"], r["image_1"]} == {"a.png", "b.png"}][0]
    assert (ab["image_0"], ab["votes_0"], ab["votes_tie"], ab["gain_0"], ab["gain_1"]) == ("b.png", 1, 0, 0.5, 0.25)
    ac = [r for r in rows if {r["image_0"], r["image_1"]} == {"a.png", "c.png"}][0]
    assert (ac["votes_0"], ac["votes_1"], ac["votes_tie"]) == (0, 0, 1)
    ls = lists_from_frame(pd.DataFrame(rows))
    assert len(ls) == 1 and ls.prompts == ["a cat"]
    assert dict(zip(ls.images[0], ls.gains[0])) == {"a.png": 0.25, "b.png": 0.5, "c.png": 0.25}
    bad = pd.DataFrame(rows).assign(gain_1=[0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match="two gains"):
        lists_from_frame(bad)
    with pytest.raises(ValueError, match="gain_0"):
        lists_from_frame(pd.DataFrame(rows).drop(columns=["gain_0"]))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_cli_lists_rankdpo_and_eval_on_flow_pipelines(kind, tmp_path):
    from typer.testing import CliRunner

    from imgpref.align.train import align
    from imgpref.cli import app

    (tmp_path / "p.txt").write_text("a red cat\na blue sky\na green tree\n")
    runner = CliRunner()
    pairs = tmp_path / "pairs"
    out = runner.invoke(app, ["align", "pairs", "--pipeline", f"tiny-{kind}", "--prompts", str(tmp_path / "p.txt"),
                              "--n", "3", "--scorer", "exposure", "--scorer", "colorfulness", "--lists",
                              "--steps", "3", "--out", str(pairs)])
    assert out.exit_code == 0, out.output
    man = pd.read_csv(pairs / "manifest.csv")
    assert len(man) == 3 * 3 and {"gain_0", "gain_1", "group"} <= set(man.columns)
    gen = pd.read_csv(pairs / "generations.csv")
    # gains recomputed by hand from the per-scorer columns: strict wins over 2 scorers x 2 other images
    for _, g in gen.groupby("prompt_index"):
        s = g[["score_exposure", "score_colorfulness"]].to_numpy().T
        wins = [(s[:, i:i + 1] > np.delete(s, i, axis=1)).sum() for i in range(3)]
        np.testing.assert_allclose(g["gain"].to_numpy(), np.array(wins) / 4.0)

    res = align(REPO / "configs" / "align" / f"tiny_dpo_{kind}.yaml", pairs / "manifest.csv", tmp_path / "run",
                **{"model.method": "rankdpo", "model.beta": 200.0, "data.lists": True, "data.batch_size": 2,
                   "trainer.max_steps": 2, "checkpoint_every_n_steps": 1000})
    assert res.steps == 2 and res.data["lists"] == 3
    assert np.isfinite(res.metrics["train/loss"])
    # the list manifest is still a canonical pair manifest: the tiny MaPO recipe trains on its (non-tied) pairs
    res2 = align(REPO / "configs" / "align" / f"tiny_mapo_{kind}.yaml", pairs / "manifest.csv", tmp_path / "mapo",
                 **{"trainer.max_steps": 1, "data.batch_size": 2, "checkpoint_every_n_steps": 1000})
    assert res2.steps == 1 and res2.data["pairs"] == int((man["votes_tie"] == 0).sum())

    out = runner.invoke(app, ["align", "eval", "--base", f"tiny-{kind}", "--aligned", str(tmp_path / "run"),
                              "--prompts", str(tmp_path / "p.txt"), "--scorer", "exposure", "--seeds", "1",
                              "--steps", "3", "--n-boot", "50", "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["n_comparisons"] == 3


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_rankdpo_lists_on_unet_pipelines(kind):
    import torch

    from imgpref.align.module import DiffusionPreferenceModule
    from imgpref.align.tiny import build_tiny_pipeline

    m = DiffusionPreferenceModule(pipe=build_tiny_pipeline(seed=0, kind=kind), method="rankdpo", lora_rank=2)
    assert m.beta == 2500.0  # DPO's 5000 without the 0.5 factor
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    batch = {"latents": z.expand(3, -1, -1, -1)[None].clone(), "prompt": ["a"], "gains": torch.tensor([[1.0, 0.5, 0.0]]),
             "time_ids": torch.tensor([32.0, 32, 0, 0, 32, 32]).expand(1, 3, 6)}
    with torch.no_grad():
        _, st = m.list_losses(batch, generator=torch.Generator().manual_seed(1))
    # identical images in a list share noise and timestep, so their errors (and the margins) are equal
    assert st["reward_margin"].item() == 0.0 and st["pairs_per_list"].item() == 3.0
    batch["latents"] = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    batch["prompt"], batch["gains"] = ["a", "b"], torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0]])
    batch["time_ids"] = batch["time_ids"].expand(2, 3, 6)
    loss, _ = m.list_losses(batch, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in m.trainable_named_parameters())
    with pytest.raises(ValueError, match="rankdpo"):
        DiffusionPreferenceModule(pipe=build_tiny_pipeline(seed=0), method="dpo", lora_rank=2).list_losses(batch)
