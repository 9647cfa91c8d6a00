"""A run stopped after a checkpoint and resumed ends exactly like an uninterrupted run (issue 3, done-when 4)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from imgpref.data.synth import make_rendering_dataset
from imgpref.train.run import train
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

TINY = TINY_RENDERING

# the real tiny recipe, shrunk: 32 px images, one transformer block, 4 short epochs, no early stop
SMALL = small_overrides("imgpref-tiny-rendering-test", "trainer.max_epochs=4", "trainer.early_stopping=null",
                        "optimizer.warmup_steps=2")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_rendering_dataset(out, scenes=8, seed=3, size=32)
    return out / "manifest.csv"


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_killed_and_resumed_run_equals_uninterrupted_run(manifest, tmp_path):
    torch.set_num_threads(1)
    full = train(TINY, manifest, tmp_path / "full", overrides=SMALL, progress=False)
    # "kill" after the epoch-2 checkpoint: same recipe, stopped by max_epochs=2, then resumed to 4
    part = tmp_path / "part"
    train(TINY, manifest, part, overrides=SMALL + ["trainer.max_epochs=2"], progress=False)
    assert (part / "checkpoints" / "last.ckpt").is_file()
    resumed = train(TINY, manifest, part, overrides=SMALL, resume=True, progress=False)
    assert resumed.steps == full.steps and resumed.epochs == full.epochs == 4
    for k in ("val_nll", "val_acc", "val_nll_calibrated"):
        assert resumed.metrics[k] == pytest.approx(full.metrics[k], abs=1e-6), k
    assert resumed.bt_scale == pytest.approx(full.bt_scale, abs=1e-6)
    wa, wb = _weights(tmp_path / "full"), _weights(part)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-6, rtol=0, msg=k)
    summary = json.loads((part / "train_summary.json").read_text())
    assert summary["steps"] == full.steps


def test_resume_without_checkpoint_is_a_clear_error(manifest, tmp_path):
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        train(TINY, manifest, tmp_path / "none", overrides=SMALL, resume=True)
