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
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

torch.set_num_threads(1)
RECIPE = TINY_RENDERING
TINY = small_overrides(
    "imgpref-tiny-gpm-test", "mode.name=head", "optimizer.lr=0.05", "optimizer.warmup_steps=0",
    "optimizer.weight_decay=0.0", "trainer.max_epochs=60", "trainer.early_stopping=null", "augment=null",
    batch_size=64)
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


# ------------------------------------------------------------------------------------- fast unit checks
def test_borda_scores_and_pair_logits_from_outputs_hand_computed():
    from imgpref.scorers.pref_heads import GPMHead, borda_scores, item_outputs, pair_logit_from_outputs

    head = GPMHead(2, k=1)
    with torch.no_grad():  # v = embedding
        head.layers[-1].weight.copy_(torch.eye(2))
        head.layers[-1].bias.zero_()
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    o = item_outputs(head, e)
    # s(a, b) = a0 b1 - a1 b0: s(0, 1) = 1, s(0, 2) = 0, s(1, 2) = 0 * 0 - 1 * (-1) = 1
    torch.testing.assert_close(pair_logit_from_outputs(head, o[[0, 0, 1]], o[[1, 2, 2]]), torch.tensor([1.0, 0, 1]))
    sig1 = 1 / (1 + np.exp(-1.0))
    expect = [(sig1 + 0.5) / 2, ((1 - sig1) + sig1) / 2, (0.5 + (1 - sig1)) / 2]
    torch.testing.assert_close(borda_scores(head, o), torch.tensor(expect, dtype=torch.float32))


def test_model_cyclic_triad_rate_counts_the_models_own_cycles():
    from imgpref.eval.votes import vote_metrics

    votes = np.array([[9, 1, 0], [9, 1, 0], [9, 1, 0]])  # a > b, b > c, c > a: one cyclic triad in the votes
    items = (np.array(["a", "b", "c"]), np.array(["b", "c", "a"]))
    cyc = vote_metrics(np.array([0.8, 0.7, 0.9]), votes, ["g"] * 3, *items, np.zeros(3), np.zeros(3), n_resamples=10)
    tra = vote_metrics(np.array([0.8, 0.7, 0.2]), votes, ["g"] * 3, *items, np.zeros(3), np.zeros(3), n_resamples=10)
    assert cyc["cyclic_triad_rate"] == 1.0 and cyc["model_cyclic_triad_rate"] == 1.0
    assert tra["model_cyclic_triad_rate"] == 0.0


def test_recipe_checker_refuses_plackett_luce_for_pairwise_heads_and_warns_on_gpm_settings():
    from imgpref.recipes import check_train_recipe
    from imgpref.train.run import load_recipe

    cfg = load_recipe(RECIPE)
    cfg["scorer"]["head"] = {"type": "gpm", "k": 2, "normalize": False}
    check_train_recipe(cfg)
    with pytest.raises(ValueError, match="plackett_luce.*cannot train a gpm head"):
        check_train_recipe({**cfg, "loss": {"name": "plackett_luce"}})
    with pytest.warns(UserWarning, match="learn no cycle"):
        check_train_recipe({**cfg, "scorer": {**cfg["scorer"], "head": {"type": "gpm", "k": 1}}})
    with pytest.raises(ValueError, match="GPM is a head"):
        check_train_recipe({**cfg, "loss": {"name": "gpm"}})


def _tiny_scorer_folder(tmp_path, head, name="t"):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.folder import save_scorer
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, arch = tiny_open_clip_model(0)
    scorer = Scorer(OpenClipBackbone.from_model(model, arch), head, ScorerInfo(name))
    scorer.eval()
    return scorer, save_scorer(scorer, tmp_path / name)


def _images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        p = folder / f"im{k}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(p)
        out.append(p)
    return out


def test_score_refuses_a_gpm_scalar_and_writes_a_rotation_invariant_borda_ranking(tmp_path):
    from imgpref.scorers.pref_heads import GPMHead

    torch.manual_seed(0)
    head = GPMHead(32, k=2)  # the tiny backbone's embedding width
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    scorer, folder = _tiny_scorer_folder(tmp_path, head, "g")
    paths = _images(tmp_path / "imgs", 4)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", str(folder), "--out",
                                   str(tmp_path / "s.csv"), "-q"])
    assert res.exit_code == 2 and "no per-image score" in res.output
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "imgs"), str(tmp_path / "imgs"), "--scorer",
                                   str(folder), "-q"])
    assert res.exit_code == 2 and "pairwise (GPM)" in res.output
    # expected Borda scores, computed here from the preference vectors with the GPM form written out
    with torch.no_grad():
        v = head.vectors(scorer.embed_images(torch.stack([scorer.preprocess(Image.open(p)) for p in paths])))
    s = v[:, None, 0] * v[None, :, 1] - v[:, None, 1] * v[None, :, 0] + v[:, None, 2] * v[None, :, 3] \
        - v[:, None, 3] * v[None, :, 2]
    expect = ((torch.sigmoid(s).sum(1) - 0.5) / 3).numpy()
    got = {}
    for tag in ("plain", "rotated"):
        if tag == "rotated":  # rotate each 2-d block: s(a, b) is unchanged, the per-image scalar is not
            c, si = np.cos(1.0), np.sin(1.0)
            rot = torch.tensor([[c, -si], [si, c]], dtype=torch.float32)
            with torch.no_grad():
                last = head.layers[-1]
                for b in range(2):
                    last.weight[2 * b:2 * b + 2] = rot @ last.weight[2 * b:2 * b + 2]
                    last.bias[2 * b:2 * b + 2] = rot @ last.bias[2 * b:2 * b + 2]
            _, folder = _tiny_scorer_folder(tmp_path, head, "g_rot")
        out = tmp_path / f"{tag}.csv"
        res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", str(folder), "--out", str(out),
                                       "--gpm-ranking", "borda", "-q"])
        assert res.exit_code == 0, res.output
        df = pd.read_csv(out).sort_values("path")
        got[tag] = df["score"].to_numpy()
    np.testing.assert_allclose(got["plain"], expect, atol=1e-5)
    np.testing.assert_allclose(got["rotated"], expect, atol=1e-4)


def test_group_bootstrap_stat_resamples_whole_groups():
    from imgpref.eval.bootstrap import group_bootstrap_stat

    # two groups: a draw of whole groups has max value 1 (group a drawn) or 5 (group b drawn)
    values = np.array([1.0, 1.0, 5.0, 5.0, 5.0])
    groups = ["a", "a", "b", "b", "b"]
    lo, hi = group_bootstrap_stat(lambda rows: values[rows].max(), groups, n_resamples=400, seed=0)
    assert (lo, hi) == (1.0, 5.0)  # P(only a drawn) = 1/4: both values inside the 95% interval
    lo, hi = group_bootstrap_stat(lambda rows: float(len(set(values[rows]))) * 0 + 2.0, groups, n_resamples=50)
    assert (lo, hi) == (2.0, 2.0)
