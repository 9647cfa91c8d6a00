"""A failed run never leaves a half-made output: no scorer folder that loads, no half-written summary or table.

Failures are simulated where they happen in life: a disk that fills up in the middle of writing a file, an
exception in the middle of training, a crash while the scorer folder is being written."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from imgpref.data.synth import make_rendering_dataset
from imgpref.scorers.registry import load_scorer
from imgpref.train.run import train
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

RECIPE = TINY_RENDERING
SMALL = small_overrides("imgpref-tiny-atomic-test", "trainer.max_epochs=1", "mode.name=head")


def _disk_full_on(monkeypatch, name: str) -> None:
    """Path.write_text of any file whose name contains `name` (the file or its temporary) writes half, then fails."""
    real = Path.write_text

    def half_then_fail(self, data, *args, **kwargs):
        if name in self.name:
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", half_then_fail)


def _csv_disk_full_on(monkeypatch, name: str) -> None:
    real = pd.DataFrame.to_csv

    def half_then_fail(self, path_or_buf=None, *args, **kwargs):
        if path_or_buf is not None and name in Path(str(path_or_buf)).name:
            real(self.iloc[: len(self) // 2], path_or_buf, *args, **kwargs)
            raise OSError(28, "No space left on device")
        return real(self, path_or_buf, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)


def _not_a_scorer(folder: Path) -> None:
    with pytest.raises((FileNotFoundError, ValueError)):
        load_scorer(folder)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left behind


@pytest.fixture
def manifest(tmp_path):
    torch.set_num_threads(1)
    make_rendering_dataset(tmp_path / "d", scenes=6, seed=3, size=32)
    return tmp_path / "d" / "manifest.csv"


def test_disk_full_while_writing_the_summary_leaves_no_half_file_and_no_scorer(tmp_path, manifest, monkeypatch):
    out = tmp_path / "run"
    _disk_full_on(monkeypatch, "train_summary.json")
    with pytest.raises(OSError, match="No space left"):
        train(RECIPE, manifest, out, overrides=SMALL, progress=False)
    assert not (out / "train_summary.json").exists()  # never half a JSON under the final name
    _not_a_scorer(out)  # the scorer folder is published last, after everything else succeeded


def test_crash_while_writing_the_scorer_folder_leaves_nothing_that_loads(tmp_path, manifest, monkeypatch):
    import imgpref.scorers.folder as folder

    out = tmp_path / "run"
    train(RECIPE, manifest, out, overrides=SMALL, progress=False)  # an earlier, complete run in the same folder
    real = folder.save_scorer

    def killed_between_weights_and_yaml(scorer, path, **kw):
        yaml_path = Path(path) / "scorer.yaml"
        before = yaml_path.read_bytes() if yaml_path.is_file() else None
        real(scorer, path, **kw)
        if before is None:  # the new scorer.yaml never got written ...
            yaml_path.unlink()
        else:
            yaml_path.write_bytes(before)
        raise OSError(28, "No space left on device")  # ... the disk filled up after model.safetensors

    monkeypatch.setattr(folder, "save_scorer", killed_between_weights_and_yaml)
    with pytest.raises(OSError, match="No space left"):
        train(RECIPE, manifest, out, overrides=SMALL + ["optimizer.lr=1e-2"], progress=False)
    _not_a_scorer(out)  # not the old scorer.yaml over the new weights


def test_failed_rerun_does_not_leave_the_earlier_runs_scorer_under_its_recipe(tmp_path, manifest, monkeypatch):
    from imgpref.train.module import RewardModelModule

    out = tmp_path / "run"
    train(RECIPE, manifest, out, overrides=SMALL, progress=False)
    assert load_scorer(out) is not None
    assert json.loads((out / "train_summary.json").read_text())["steps"] > 0

    def boom(self, batch, batch_idx):
        raise RuntimeError("failed mid-way")

    monkeypatch.setattr(RewardModelModule, "training_step", boom)
    with pytest.raises(RuntimeError, match="failed mid-way"):
        train(RECIPE, manifest, out, overrides=SMALL + ["optimizer.lr=1e-2"], progress=False)
    # out/recipe.yaml now describes the failed run: the old scorer must not load as if it were its result
    _not_a_scorer(out)


def test_synth_outputs_are_atomic(tmp_path, monkeypatch):
    _disk_full_on(monkeypatch, "synth_summary.json")
    with pytest.raises(OSError, match="No space left"):
        make_rendering_dataset(tmp_path / "s1", scenes=2, seed=0, size=16)
    assert not (tmp_path / "s1" / "synth_summary.json").exists()
    monkeypatch.undo()
    _csv_disk_full_on(monkeypatch, "utilities.csv")
    with pytest.raises(OSError, match="No space left"):
        make_rendering_dataset(tmp_path / "s2", scenes=2, seed=0, size=16)
    assert not (tmp_path / "s2" / "utilities.csv").exists()
    assert not [p for p in (tmp_path / "s2").iterdir() if p.name.endswith(".part")]


def test_eval_summary_of_a_trained_scorer_is_atomic(tmp_path, manifest, monkeypatch):
    from imgpref.eval.evaluate import evaluate

    out = tmp_path / "run"
    train(RECIPE, manifest, out, overrides=SMALL, progress=False)
    report = tmp_path / "eval" / "summary.json"
    evaluate(out, manifest, split="test", out=report, n_resamples=10)
    before = report.read_text()
    _disk_full_on(monkeypatch, "summary.json")
    with pytest.raises(OSError, match="No space left"):
        evaluate(out, manifest, split="test", out=report, n_resamples=10)
    assert report.read_text() == before  # the earlier report is intact, not half overwritten
    assert [p.name for p in report.parent.iterdir() if p.name.endswith(".part")] == []
