"""Scorer folders are untrusted input: names are validated, no path is built from their metadata, broken folders
give one clear error, and writing one is atomic. Regression tests for issue 7 items 3, 4 and 6."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
from imgpref.scorers.base import Scorer, ScorerInfo
from imgpref.scorers.folder import CONFIG_NAME, WEIGHTS_NAME, save_scorer
from imgpref.scorers.heads import LinearHead
from imgpref.scorers.registry import load_scorer
from imgpref.scorers.tiny import TINY_OPEN_CLIP_CONFIG, tiny_open_clip_model


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    model, arch = tiny_open_clip_model(0)
    bb = OpenClipBackbone.from_model(model, arch, key=f"open_clip:{arch}:scratch")
    torch.manual_seed(0)
    return save_scorer(Scorer(bb, LinearHead(bb.embed_dim).eval(), ScorerInfo(name="trained")),
                       tmp_path_factory.mktemp("good") / "s")


def copy_with(folder: Path, dest: Path, edit=None) -> Path:
    shutil.copytree(folder, dest)
    if edit is not None:
        doc = yaml.safe_load((dest / CONFIG_NAME).read_text())
        edit(doc)
        (dest / CONFIG_NAME).write_text(yaml.safe_dump(doc))
    return dest


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """tempfile's folder pointed into this test's tmp_path, so whatever is created there can be inspected."""
    t = tmp_path / "tmp" / "t"
    t.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    return t


def test_model_name_from_a_folder_never_becomes_a_path(good_folder, tmp_path, private_tmp):
    def escape(doc):
        doc["backbone"]["model_name"] = "../../escaped"
        doc["backbone"]["model_config"] = dict(TINY_OPEN_CLIP_CONFIG, embed_dim=16)

    bad = copy_with(good_folder, tmp_path / "bad", escape)
    with pytest.raises(ValueError, match=r"backbone\.model_name.*'\.\./\.\./escaped'"):
        load_scorer(bad)
    assert not list(tmp_path.rglob("escaped.json"))  # the commit before wrote tmp_path/tmp/escaped.json


@pytest.mark.parametrize("name", ["hf-hub:org/repo", "a/b", ".hidden", "x" * 101, ""])
def test_invalid_model_names_are_rejected(name):
    from imgpref.scorers.tiny import register_open_clip_config

    with pytest.raises(ValueError, match="invalid open_clip model name"):
        register_open_clip_config(name, TINY_OPEN_CLIP_CONFIG)


def test_no_config_temp_folders_are_left_behind(good_folder, tmp_path, private_tmp, images):
    from imgpref.scorers.tiny import register_open_clip_config

    register_open_clip_config("imgpref-test-cfg", dict(TINY_OPEN_CLIP_CONFIG, embed_dim=24))
    # an architecture open_clip does not know, stored in the folder's yaml: registered on load
    unknown = copy_with(good_folder, tmp_path / "unknown",
                        lambda d: d["backbone"].update(model_name="imgpref-never-registered"))
    want = load_scorer(good_folder).score(images)
    torch.testing.assert_close(load_scorer(unknown).score(images), want, rtol=1e-5, atol=1e-5)
    assert [p.name for p in private_tmp.iterdir()] == []


def _missing_key(doc):
    del doc["backbone"]["model_name"]


def _unknown_arch(doc):
    doc["backbone"]["model_name"] = "no-such-architecture"
    doc["backbone"]["model_config"] = None


def _unknown_type(doc):
    doc["backbone"]["type"] = "tensorflow"


def _no_head(doc):
    del doc["head"]


@pytest.mark.parametrize("breakage, expected", [
    (_missing_key, r"missing key 'backbone\.model_name'"),
    (_unknown_arch, r"unknown open_clip architecture 'no-such-architecture'"),
    (_unknown_type, r"unknown backbone type 'tensorflow'"),
    (_no_head, r"missing or malformed key 'head'"),
    ("bad-yaml", r"scorer\.yaml is not valid YAML"),
    ("corrupt-weights", r"model\.safetensors cannot be read as safetensors"),
])
def test_broken_folders_give_one_clear_error(good_folder, tmp_path, breakage, expected):
    dest = copy_with(good_folder, tmp_path / "broken", breakage if callable(breakage) else None)
    if breakage == "bad-yaml":
        (dest / CONFIG_NAME).write_text("backbone: {type: open_clip\nhead: [\n")
    if breakage == "corrupt-weights":
        data = (dest / WEIGHTS_NAME).read_bytes()
        (dest / WEIGHTS_NAME).write_bytes(data[: len(data) // 3])  # cut short, as by a full disk
    with pytest.raises(ValueError, match=expected):
        load_scorer(dest)


def test_cli_broken_folder_exits_2_with_one_line_before_any_work(good_folder, tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app

    dest = copy_with(good_folder, tmp_path / "broken", _missing_key)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 32), (10, 200, 30)).save(imgs / "a.png")
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, ["score", str(imgs), "-s", str(dest), "--out", str(out), "-q"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing key 'backbone.model_name'" in lines[0] and "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "o.csv.partial.jsonl").exists()


def test_scorer_yaml_is_written_atomically(good_folder, tmp_path, monkeypatch):
    folder = copy_with(good_folder, tmp_path / "s")
    scorer = load_scorer(folder)
    before = (folder / CONFIG_NAME).read_text()
    real = Path.write_text

    def torn(self, text, *args, **kwargs):  # a crash half-way through writing the yaml
        if self.name.endswith(CONFIG_NAME) or CONFIG_NAME in self.name:
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError("disk full")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", torn)
    scorer.info.description = "a new description"
    with pytest.raises(OSError, match="disk full"):
        save_scorer(scorer, folder)
    monkeypatch.undo()
    assert (folder / CONFIG_NAME).read_text() == before
    assert load_scorer(folder).info.description == ""
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_report_of_a_scorer_folder_knows_its_direction(good_folder, tmp_path):
    from PIL import Image

    from imgpref.eval.report import write_report
    from imgpref.scorers.score_paths import score_paths

    assert yaml.safe_load((good_folder / CONFIG_NAME).read_text())["info"]["higher_is_better"] is True
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(2):
        Image.new("RGB", (40, 32), (40 * k, 90, 30)).save(imgs / f"{k}.png")
    table = score_paths(imgs, [str(good_folder)], num_workers=0, progress=False)
    html = write_report(table, tmp_path / "r.html").read_text()
    assert "direction unknown" not in html
