"""`imgpref train` end to end: the written folder works in load_scorer, `imgpref eval` and `imgpref score`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from imgpref.cli import app
from imgpref.data.synth import make_rendering_dataset
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

TINY = TINY_RENDERING
SMALL = small_overrides("imgpref-tiny-rendering-test", "trainer.max_epochs=2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli")
    make_rendering_dataset(root / "data", scenes=8, seed=5, size=32)
    args = ["train", "--config", str(TINY), "--data", str(root / "data" / "manifest.csv"), "--out",
            str(root / "run"), "--no-progress"]
    for o in SMALL:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return root


def test_train_cli_writes_a_scorer_folder_with_calibration(trained):
    run = trained / "run"
    for f in ("scorer.yaml", "model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
              "train_summary.json", "recipe.yaml"):
        assert (run / f).is_file(), f
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs"] == 2 and summary["bt_scale"] > 0


def test_load_scorer_reproduces_the_trained_module_scores(trained):
    from imgpref.data.datamodule import PreferenceDataModule
    from imgpref.scorers.registry import load_scorer
    from imgpref.train.module import RewardModelModule

    run = trained / "run"
    scorer = load_scorer(run)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    # the module rebuilt from the recipe + best checkpoint scores the val items exactly like the folder scorer
    from imgpref.train.build import build_scorer
    from imgpref.train.run import apply_overrides, load_recipe

    cfg = apply_overrides(load_recipe(TINY), SMALL)
    module = RewardModelModule(build_scorer(cfg["scorer"]), "bt_soft")
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    dm = PreferenceDataModule(trained / "data" / "manifest.csv", scorer.preprocess, batch_size=400)
    dm.setup()
    (batch,) = list(dm.val_dataloader())
    with torch.no_grad():
        expect = module.item_scores(batch)
    from PIL import Image

    val_items = np.unique(np.concatenate([dm.tables["val"].i0, dm.tables["val"].i1]))
    got = scorer.score([Image.open(dm.items[k]) for k in val_items])
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)
    assert scorer.info.extra["bt_scale"] == pytest.approx(json.loads((run / "train_summary.json").read_text())["bt_scale"])


def test_eval_and_score_cli_use_the_trained_folder(trained, tmp_path):
    run = trained / "run"
    res = CliRunner().invoke(app, ["eval", "--scorer", str(run), "--data", str(trained / "data" / "manifest.csv"),
                                   "--split", "test", "--out", str(tmp_path / "m.json"), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert 0 <= m["accuracy"] <= 1 and m["bt_scale"] == pytest.approx(
        json.loads((run / "train_summary.json").read_text())["bt_scale"])
    folder = next((trained / "data" / "images").iterdir())
    res = CliRunner().invoke(app, ["score", str(folder), "--scorer", str(run), "--out", str(tmp_path / "s.csv"), "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.csv").is_file()


def test_train_cli_reports_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["train", "--config", str(TINY), "--data", str(tmp_path / "missing.csv"),
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing.csv" in res.output
    res = CliRunner().invoke(app, ["train", "--config", str(TINY), "--data", str(tmp_path / "missing.csv"),
                                   "--out", str(tmp_path / "o"), "--set", "oops"])
    assert res.exit_code == 2 and "key.sub=value" in res.output
