"""`trainer.ema`: an exponential moving average of the weights (Lightning's EMAWeightAveraging) is what
validation, the checkpoints' state_dict and the saved scorer use; resume stays exact."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgpref.data.synth import make_rendering_dataset
from imgpref.train.build import build_scorer
from imgpref.train.run import apply_overrides, load_recipe, train
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

TINY = TINY_RENDERING

SMALL = small_overrides("imgpref-tiny-rendering-ematest", "trainer.max_epochs=3", "trainer.early_stopping=null",
                        "optimizer.warmup_steps=2")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_ema")
    make_rendering_dataset(out, scenes=6, seed=5, size=32)
    return out / "manifest.csv"


def _ckpt(folder: Path, name: str) -> dict:
    return torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)


def test_ema_never_updated_keeps_initial_weights(manifest, tmp_path):
    # the average starts as a copy of the model at fit start; with no update it stays the initial weights
    torch.set_num_threads(1)
    ov = SMALL + ["trainer.ema={decay: 0.9, update_starting_at_step: 100000}"]
    res = train(TINY, manifest, tmp_path / "r", overrides=ov, progress=False)
    init = build_scorer(apply_overrides(load_recipe(TINY), ov)["scorer"]).state_dict()
    saved = load_file(str(tmp_path / "r" / "model.safetensors"))
    trained = _ckpt(tmp_path / "r", "last.ckpt")["current_model_state"]
    checked = 0
    for k, v in saved.items():
        if k in init and torch.is_floating_point(v):
            torch.testing.assert_close(v, init[k], atol=0, rtol=0, msg=k)
            checked += 1
    assert checked > 10
    # while the raw weights did move
    moved = [k for k in trained if k.startswith("scorer.") and torch.is_floating_point(trained[k])
             and not torch.equal(trained[k], init.get(k[len("scorer."):], trained[k]))]
    assert moved and res.steps > 0


def test_ema_tiny_decay_tracks_current_weights(manifest, tmp_path):
    # ema <- d * ema + (1 - d) * w with d = 1e-7: the average equals the last weights to ~1e-7 relative
    torch.set_num_threads(1)
    ov = SMALL + ["trainer.ema={decay: 1.0e-7}"]
    train(TINY, manifest, tmp_path / "r", overrides=ov, progress=False)
    ck = _ckpt(tmp_path / "r", "last.ckpt")
    avg, cur = ck["state_dict"], ck["current_model_state"]
    assert avg.keys() == cur.keys()
    diff = [k for k in avg if torch.is_floating_point(avg[k]) and not torch.equal(avg[k], cur[k])]
    for k in avg:
        if torch.is_floating_point(avg[k]):
            torch.testing.assert_close(avg[k], cur[k], atol=1e-5, rtol=1e-5, msg=k)
    assert len(diff) > 0  # it is a separate average, not the same tensors


def test_ema_resume_is_exact(manifest, tmp_path):
    torch.set_num_threads(1)
    ov = SMALL + ["trainer.ema={decay: 0.8}"]
    full = train(TINY, manifest, tmp_path / "full", overrides=ov, progress=False)
    part = tmp_path / "part"
    train(TINY, manifest, part, overrides=ov + ["trainer.max_epochs=1"], progress=False)
    resumed = train(TINY, manifest, part, overrides=ov, resume=True, progress=False)
    assert resumed.steps == full.steps
    for k in ("val_nll", "val_acc"):
        assert resumed.metrics[k] == pytest.approx(full.metrics[k], abs=1e-6), k
    wa, wb = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=k)
    # the saved scorer is the average, not the raw weights
    cur = _ckpt(tmp_path / "full", "last.ckpt")["current_model_state"]
    assert any(not torch.equal(wa[k], cur["scorer." + k]) for k in wa if "scorer." + k in cur)


@pytest.mark.parametrize("bad", ["trainer.ema=3", "trainer.ema={decay: 1.5}", "trainer.ema={decai: 0.9}"])
def test_ema_bad_config_is_value_error(manifest, tmp_path, bad):
    with pytest.raises(ValueError, match="trainer.ema"):
        train(TINY, manifest, tmp_path / "r", overrides=SMALL + [bad], progress=False)
