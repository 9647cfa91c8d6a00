"""Pluralistic head end to end (issue 14): a two-taste rendering set generated here, independently of the
training code; `imgpref train` then `imgpref eval --per-annotator / --annotator` through the CLI, the numbers of
train_summary.json, and `imgpref annotator fit` for a held-out annotator.

The set: 8 scenes x 6 renderings (32 px), each rendering with two known features, warmth w and brightness b in
[-1, 1]. Both taste groups like warmth; group "bright" (annotators b0..b4) has utility 3 (w + b), group "dark"
(d0..d4) utility 3 (w - b). Every annotator judges every within-scene pair with 7 votes drawn from
sigmoid(utility difference). One scalar reward cannot serve both groups: with equal groups the brightness terms
cancel and it learns about w (~0.75 agreement with each group); a per-annotator mixture can learn both.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from imgpref.cli import app

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "tiny_rendering.yaml"
TINY = ["scorer.backbone.model_name=imgpref-tiny-plural-test", "scorer.backbone.model_config.vision_cfg.image_size=32",
        "scorer.backbone.model_config.vision_cfg.layers=1", "scorer.backbone.model_config.text_cfg.vocab_size=1000",
        "data.batch_size=64", "mode.name=head", "optimizer.lr=0.05", "optimizer.warmup_steps=0",
        "optimizer.weight_decay=0.0", "trainer.max_epochs=60", "trainer.early_stopping=null", "augment=null"]
GROUPS = {"bright": [f"b{k}" for k in range(5)], "dark": [f"d{k}" for k in range(5)]}
SIGN = {"bright": 1.0, "dark": -1.0}


def _render(base: np.ndarray, warmth: float, bright: float) -> Image.Image:
    """A rendering of a grey texture: warmth shifts red up and blue down, brightness shifts every channel."""
    rgb = np.stack([base + 0.22 * warmth, base, base - 0.22 * warmth], -1) + 0.2 * bright
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


def make_two_taste_set(root: Path, seed: int = 0, scenes: int = 8, per_scene: int = 6,
                       extra_annotator: str | None = None) -> tuple[Path, dict[str, tuple[float, float]]]:
    """Write the images and manifest.csv (see the module docstring); returns (manifest, {image: (w, b)}).
    Pairs are split 60/20/20 into train/val/test (the same split for every annotator). `extra_annotator`
    (a "warm" taster) also votes on every pair, with split "new"."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    feats: dict[str, tuple[float, float]] = {}
    rows = []
    judges = [(a, g) for g, names in GROUPS.items() for a in names]
    if extra_annotator:
        judges.append((extra_annotator, "bright"))
    for s in range(scenes):
        base = 0.5 + 0.15 * rng.standard_normal((8, 8)).repeat(4, 0).repeat(4, 1)
        names = []
        for r in range(per_scene):
            w, b = rng.uniform(-1, 1, 2)
            name = f"img/s{s}_r{r}.png"
            _render(base, w, b).save(root / name)
            feats[name], _ = (float(w), float(b)), names.append(name)
        for i in range(per_scene):
            for j in range(i + 1, per_scene):
                split = rng.choice(["train", "train", "train", "val", "test"])
                for annotator, group in judges:
                    (wi, bi), (wj, bj) = feats[names[i]], feats[names[j]]
                    du = 3.0 * ((wi - wj) + SIGN[group] * (bi - bj))
                    v0 = int(rng.binomial(7, 1 / (1 + np.exp(-du))))
                    rows.append(dict(image_0=names[i], image_1=names[j], votes_0=v0, votes_1=7 - v0, votes_tie=0,
                                     group=f"scene{s}", annotator=annotator,
                                     split="new" if annotator == extra_annotator else split))
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path, feats


def _cli(*args: str) -> None:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _group_mean(per: dict, names: list[str]) -> float:
    return float(np.mean([per[a]["accuracy"] for a in names]))


@pytest.mark.slow
def test_pluralistic_eval_per_annotator_beats_a_single_head_and_matches_train_summary(tmp_path):
    data, _ = make_two_taste_set(tmp_path / "d")
    head = "scorer.head={type: pluralistic, n_prototypes: 2, normalize: false}"
    _cli("train", "--config", str(RECIPE), "--data", str(data), "--out", str(tmp_path / "plural"),
         *sum((["--set", o] for o in TINY + [head]), []))
    _cli("train", "--config", str(RECIPE), "--data", str(data), "--out", str(tmp_path / "single"),
         *sum((["--set", o] for o in TINY), []))
    res = {}
    for name in ("plural", "single"):
        out = tmp_path / f"{name}.json"
        _cli("eval", "--scorer", str(tmp_path / name), "--data", str(data), "--split", "test", "--per-annotator",
             "--out", str(out), "--n-boot", "200")
        res[name] = json.loads(out.read_text())
    assert res["plural"]["prediction"]["logit"] == "annotator mixture"
    for group, names in GROUPS.items():
        plural, single = _group_mean(res["plural"]["per_annotator"], names), _group_mean(
            res["single"]["per_annotator"], names)
        print(group, plural, single)
        assert plural >= single + 0.1, (group, plural, single)
        for a in names:
            lo, hi = res["plural"]["per_annotator"][a]["accuracy_ci"]
            assert lo <= res["plural"]["per_annotator"][a]["accuracy"] <= hi
    # the same metric on val: eval's per-annotator accuracy == the one train_summary.json reports
    out = tmp_path / "val.json"
    _cli("eval", "--scorer", str(tmp_path / "plural"), "--data", str(data), "--split", "val", "--per-annotator",
         "--out", str(out), "--n-boot", "50")
    val = json.loads(out.read_text())
    summary = json.loads((tmp_path / "plural" / "train_summary.json").read_text())
    assert "per-annotator" in summary["selected_by"]
    assert val["accuracy"] == pytest.approx(summary["val_acc"], abs=0.02)
    for a, acc in summary["val_acc_per_annotator"].items():
        assert val["per_annotator"][a]["accuracy"] == pytest.approx(acc, abs=0.02)
