"""`align()` and `imgpref align`: recipes validate, tiny runs train, export, log ties and resume."""
import glob
import os

import pandas as pd
import pytest
import torch
import yaml

from imgpref.align.train import load_config, parse_set, validate_config

torch.set_num_threads(2)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_align_recipe_parses_and_validates():
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "align", "*.yaml")))
    names = {os.path.basename(f) for f in files}
    assert {"dpo_sd15.yaml", "mapo_sd15.yaml", "dpo_sdxl.yaml", "mapo_sdxl.yaml", "tiny_dpo.yaml",
            "tiny_mapo.yaml"} <= names
    for f in files:
        cfg = validate_config(load_config(f))
        assert cfg["model"]["prompt_dropout"] == 0.0, f  # explicit, never a hidden default
        if "sd15" in f or "sdxl" in f:
            assert cfg["pipeline"] in ("stable-diffusion-v1-5/stable-diffusion-v1-5",
                                       "stabilityai/stable-diffusion-xl-base-1.0")
        published = "sd15" in f or "sdxl" in f
        if published and cfg["model"]["method"] == "dpo":
            assert cfg["model"]["beta"] == 5000.0, f  # Diffusion-DPO's published beta (with the 0.5 factor)
        elif published:
            assert cfg["model"]["beta"] == 0.1 and cfg["model"]["mapo_s"] == 0.5, f  # MaPO's published values
        else:
            # tuned recipes (tiny, world, flow) state their beta explicitly in the file, never by default
            with open(f) as fh:
                assert "beta" in yaml.safe_load(fh)["model"], f
            assert cfg["model"]["beta"] > 0, f
        if os.path.basename(f) in ("tiny_dpo.yaml", "tiny_mapo.yaml"):
            assert cfg["model"]["beta"] == (1000.0 if "dpo" in f else 10.0), f


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ValueError, match="model.bta: unknown key \\(did you mean 'beta'\\?\\)"):
        validate_config({"model": {"bta": 1.0}})
    with pytest.raises(ValueError, match="data.ties"):
        validate_config({"data": {"ties": "first"}})
    with pytest.raises(ValueError, match="trainer"):
        validate_config({"trainer": {"max_stepz": 3}})
    assert parse_set(["model.beta=1000", "trainer.max_steps=2"]) == {"model.beta": 1000, "trainer.max_steps": 2}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["model.beta"])


def test_tiny_recipe_trains_exports_logs_ties_and_resumes(tmp_path, light_dark_pairs):
    from typer.testing import CliRunner

    from imgpref.cli import app

    manifest = light_dark_pairs(tmp_path)  # 4 pairs (bright beats dark) + 1 tie, tests/conftest.py
    recipe = os.path.join(ROOT, "configs", "align", "tiny_dpo.yaml")
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["align", "--config", recipe, "--data", str(manifest), "--out", str(out),
                                   "--set", "trainer.max_steps=2", "--set", "checkpoint_every_n_steps=1",
                                   "--set", "data.latents=null", "--set", "data.batch_size=2",
                                   "--set", "model.finetune=full", "--set", "model.reference=copy"])
    assert res.exit_code == 0, res.output
    assert "ties dropped: 1" in res.output
    result = yaml.safe_load((out / "align_result.yaml").read_text())
    assert result["steps"] == 2 and result["data"]["ties_dropped"] == 1 and result["data"]["pairs"] == 4
    assert result["prompt_dropout"] == 0.0
    assert (out / "aligned" / "unet" / "config.json").is_file()  # full fine-tune (set above), like dpo_sd15
    metrics = pd.read_csv(out / "logs" / "metrics.csv")
    assert {"train/loss", "train/implicit_acc", "train/reward_margin", "train/prompt_dropout"} <= set(metrics.columns)
    # The same folder again: refused without --resume (nothing touched); with --resume it continues from
    # checkpoints/last.ckpt to the new max_steps.
    more = ["--set", "trainer.max_steps=3", "--set", "checkpoint_every_n_steps=1", "--set", "data.latents=null",
            "--set", "data.batch_size=2", "--set", "model.finetune=full", "--set", "model.reference=copy"]
    args = ["align", "--config", recipe, "--data", str(manifest), "--out", str(out), *more]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "pass --resume" in refused.output
    assert yaml.safe_load((out / "align_result.yaml").read_text())["steps"] == 2
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    r2 = yaml.safe_load((out / "align_result.yaml").read_text())
    assert r2["resumed_from"].endswith("last.ckpt") and r2["steps"] == 3


def test_cli_training_needs_config_and_out():
    from typer.testing import CliRunner

    from imgpref.cli import app

    res = CliRunner().invoke(app, ["align"])
    assert res.exit_code == 2 and "--config" in res.output
