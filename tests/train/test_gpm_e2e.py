"""GPM (pairwise, intransitive) head end to end (issue 14): a rock-paper-scissors rendering set generated here,
independently of the training code; `imgpref train` with a GPM head and with a scalar (BT) head, then
`imgpref eval` through the CLI, which must evaluate the GPM head's pair probability, not a per-image scalar.

The set: 12 scenes x 6 renderings (32 px) of a grey texture, each with a colour cast: red, green or blue (two
strengths each). Within a scene every pair of renderings with different casts is judged by 15 votes; the cast
that wins goes round: red beats green, green beats blue, blue beats red (P = sigmoid(2.5) each). No scalar score
can order a cycle, so a BT head is near chance; a GPM head with k = 2 can represent it.
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
TINY = ["scorer.backbone.model_name=imgpref-tiny-gpm-test", "scorer.backbone.model_config.vision_cfg.image_size=32",
        "scorer.backbone.model_config.vision_cfg.layers=1", "scorer.backbone.model_config.text_cfg.vocab_size=1000",
        "data.batch_size=64", "mode.name=head", "optimizer.lr=0.05", "optimizer.warmup_steps=0",
        "optimizer.weight_decay=0.0", "trainer.max_epochs=60", "trainer.early_stopping=null", "augment=null"]
BEATS = {0: 1, 1: 2, 2: 0}  # red > green > blue > red


def make_cyclic_set(root: Path, seed: int = 0, scenes: int = 12, per_scene: int = 6) -> Path:
    """Write the images and manifest.csv (see the module docstring); scenes split 2:1:1 into
    train/val/test, so val and test images are unseen (a scalar cannot memorise them)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(scenes):
        split = ("train", "train", "val", "test")[s % 4]
        base = 0.5 + 0.15 * rng.standard_normal((8, 8)).repeat(4, 0).repeat(4, 1)
        cast = [r % 3 for r in range(per_scene)]
        names = []
        for r in range(per_scene):
            rgb = np.stack([base] * 3, -1)
            rgb[..., cast[r]] += 0.15 + 0.1 * (r // 3)
            name = f"img/s{s}_r{r}.png"
            Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(root / name)
            names.append(name)
        for i in range(per_scene):
            for j in range(i + 1, per_scene):
                if cast[i] == cast[j]:
                    continue
                p0 = 1 / (1 + np.exp(-2.5 if BEATS[cast[i]] == cast[j] else 2.5))
                v0 = int(rng.binomial(15, p0))
                rows.append(dict(image_0=names[i], image_1=names[j], votes_0=v0, votes_1=15 - v0, votes_tie=0,
                                 group=f"scene{s}", split=split))
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow
def test_gpm_eval_uses_the_pair_probability_and_matches_train_summary(tmp_path):
    data = make_cyclic_set(tmp_path / "d")
    gpm = "scorer.head={type: gpm, k: 2, normalize: false}"
    _cli("train", "--config", str(RECIPE), "--data", str(data), "--out", str(tmp_path / "gpm"),
         *sum((["--set", o] for o in TINY + [gpm]), []))
    _cli("train", "--config", str(RECIPE), "--data", str(data), "--out", str(tmp_path / "bt"),
         *sum((["--set", o] for o in TINY), []))
    res = {}
    for name in ("gpm", "bt"):
        for split in ("test", "val"):
            out = tmp_path / f"{name}_{split}.json"
            _cli("eval", "--scorer", str(tmp_path / name), "--data", str(data), "--split", split, "--out", str(out),
                 "--n-boot", "100")
            res[name, split] = json.loads(out.read_text())
    print({k: v["accuracy"] for k, v in res.items()})
    assert res["gpm", "test"]["prediction"]["logit"] == "pairwise s(a, b)"
    assert res["gpm", "test"]["accuracy"] >= 0.85
    assert res["bt", "test"]["accuracy"] <= 0.6
    # the votes cycle, and so does the GPM model (a scalar model never does)
    assert res["gpm", "test"]["cyclic_triad_rate"] > 0.5
    assert res["gpm", "test"]["model_cyclic_triad_rate"] > 0.5
    assert res["bt", "test"]["model_cyclic_triad_rate"] == 0.0
    for name in ("gpm", "bt"):  # eval and train_summary.json report the same val accuracy
        summary = json.loads((tmp_path / name / "train_summary.json").read_text())
        assert res[name, "val"]["accuracy"] == pytest.approx(summary["val_acc"], abs=0.02)
    assert "pairwise" in json.loads((tmp_path / "gpm" / "train_summary.json").read_text())["selected_by"]
