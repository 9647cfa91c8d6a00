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
from tiny_recipe import TINY_RENDERING, small_overrides  # tests/tiny_recipe.py

torch.set_num_threads(1)
RECIPE = TINY_RENDERING
TINY = small_overrides(
    "imgpref-tiny-plural-test", "mode.name=head", "optimizer.lr=0.05", "optimizer.warmup_steps=0",
    "optimizer.weight_decay=0.0", "trainer.max_epochs=60", "trainer.early_stopping=null", "augment=null",
    batch_size=64)
GROUPS = {"bright": [f"b{k}" for k in range(5)], "dark": [f"d{k}" for k in range(5)]}
SIGN = {"bright": 1.0, "dark": -1.0}


def _render(base: np.ndarray, warmth: float, bright: float) -> Image.Image:
    """A rendering of a grey texture: warmth shifts red up and blue down, brightness shifts every channel."""
    rgb = np.stack([base + 0.22 * warmth, base, base - 0.22 * warmth], -1) + 0.2 * bright
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8))


def make_two_taste_set(root: Path, seed: int = 0, scenes: int = 8, per_scene: int = 6,
                       extra_annotator: str = "newbie", n_extra_train: int = 10) -> tuple[Path, Path]:
    """Write the images, manifest.csv (see the module docstring) and extra.csv; returns their paths.
    Pairs are split 60/20/20 into train/val/test (the same split for every annotator). `extra_annotator`, a
    held-out "bright" taster, votes on every pair in extra.csv: `n_extra_train` of them "train", the rest "test"."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    feats: dict[str, tuple[float, float]] = {}
    rows = []
    judges = [(a, g) for g, names in GROUPS.items() for a in names] + [(extra_annotator, "bright")]
    for s in range(scenes):
        base = 0.5 + 0.15 * rng.standard_normal((8, 8)).repeat(4, 0).repeat(4, 1)
        names = []
        for r in range(per_scene):
            w, b = rng.uniform(-1, 1, 2)
            name = f"img/s{s}_r{r}.png"
            _render(base, w, b).save(root / name)
            feats[name] = (float(w), float(b))
            names.append(name)
        for i in range(per_scene):
            for j in range(i + 1, per_scene):
                split = rng.choice(["train", "train", "train", "val", "test"])
                for annotator, group in judges:
                    (wi, bi), (wj, bj) = feats[names[i]], feats[names[j]]
                    du = 3.0 * ((wi - wj) + SIGN[group] * (bi - bj))
                    v0 = int(rng.binomial(7, 1 / (1 + np.exp(-du))))
                    rows.append(dict(image_0=names[i], image_1=names[j], votes_0=v0, votes_1=7 - v0, votes_tie=0,
                                     group=f"scene{s}", annotator=annotator, split=split))
    df = pd.DataFrame(rows)
    extra = df[df["annotator"] == extra_annotator].reset_index(drop=True)
    extra["split"] = np.where(np.isin(np.arange(len(extra)), rng.choice(len(extra), n_extra_train, replace=False)),
                              "train", "test")
    df[df["annotator"] != extra_annotator].to_csv(root / "manifest.csv", index=False)
    extra.to_csv(root / "extra.csv", index=False)
    return root / "manifest.csv", root / "extra.csv"


def _cli(*args: str) -> None:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output


def _group_mean(per: dict, names: list[str]) -> float:
    return float(np.mean([per[a]["accuracy"] for a in names]))


@pytest.mark.slow
def test_pluralistic_eval_per_annotator_beats_a_single_head_and_matches_train_summary(tmp_path):
    data, extra = make_two_taste_set(tmp_path / "d")
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

    # a held-out "bright" annotator from 10 pairs: >= 0.9x the accuracy of the bright group's mean mixture
    from imgpref.scorers.folder import save_scorer
    from imgpref.scorers.registry import load_scorer

    _cli("annotator", "fit", "--scorer", str(tmp_path / "plural"), "--data", str(extra), "--split", "train",
         "--name", "newbie", "--out", str(tmp_path / "plural_nb"))
    before, after = load_scorer(str(tmp_path / "plural")), load_scorer(str(tmp_path / "plural_nb"))
    assert after.head.annotators == before.head.annotators + ["newbie"]
    # the population mixture (everyone's default score) did not move
    torch.testing.assert_close(after.head.population_weights(), before.head.population_weights())
    group_w = before.head.annotator_weights(GROUPS["bright"]).mean(0)
    after.head.add_annotator("bright_mean", group_w.log())
    save_scorer(after, tmp_path / "plural_ref")
    acc = {}
    for who in ("newbie", "bright_mean"):
        out = tmp_path / f"{who}.json"
        _cli("eval", "--scorer", str(tmp_path / "plural_ref"), "--data", str(extra), "--split", "test",
             "--annotator", who, "--out", str(out), "--n-boot", "50")
        acc[who] = json.loads(out.read_text())["accuracy"]
    print(acc)
    assert acc["newbie"] >= 0.9 * acc["bright_mean"], acc
    assert acc["bright_mean"] >= 0.8, acc


# ------------------------------------------------------------------------------------- fast unit checks
def test_mixture_logits_get_no_weight_decay_and_plackett_luce_is_refused():
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.pref_heads import PluralisticHead
    from imgpref.scorers.tiny import tiny_open_clip_model
    from imgpref.train.module import RewardModelModule

    model, name = tiny_open_clip_model(0)
    bb = OpenClipBackbone.from_model(model, name)
    scorer = Scorer(bb, PluralisticHead(bb.embed_dim, 2, annotators=["x", "y"], normalize=False), ScorerInfo("p"))
    module = RewardModelModule(scorer, "bt_soft", mode="head", optimizer={"weight_decay": 0.3})
    opt = module.configure_optimizers()["optimizer"]
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(scorer.head.annotator_logits) not in decayed
    assert id(scorer.head.layers[-1].weight) in decayed
    with pytest.raises(ValueError, match="cannot train a pluralistic head"):
        RewardModelModule(scorer, "plackett_luce", mode="head")


def test_population_can_be_pinned_to_earlier_annotators():
    from imgpref.scorers.pref_heads import PluralisticHead

    head = PluralisticHead(4, 2, annotators=["x", "y"])
    with torch.no_grad():
        head.annotator_logits.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
    pop = head.population_weights().clone()
    head.add_annotator("z", torch.tensor([0.0, 5.0]))
    head.set_population(["x", "y"])
    torch.testing.assert_close(head.population_weights(), pop)
    rebuilt = PluralisticHead(**{k: v for k, v in head.describe().items() if k != "type"})
    assert rebuilt.population_annotators == ["x", "y"]
    with pytest.raises(ValueError, match="unknown"):
        head.set_population(["nobody"])


def test_score_with_annotator_uses_that_annotators_mixture(tmp_path):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.folder import save_scorer
    from imgpref.scorers.pref_heads import PluralisticHead
    from imgpref.scorers.tiny import tiny_open_clip_model

    torch.manual_seed(0)
    model, arch = tiny_open_clip_model(0)
    bb = OpenClipBackbone.from_model(model, arch)
    head = PluralisticHead(bb.embed_dim, 2, annotators=["x", "y"], normalize=False)
    with torch.no_grad():
        head.annotator_logits.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    scorer = Scorer(bb, head, ScorerInfo("p"))
    scorer.eval()
    folder = save_scorer(scorer, tmp_path / "p")
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    paths = []
    for k in range(3):
        paths.append(tmp_path / "imgs" / f"im{k}.png")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(paths[-1])
    with torch.no_grad():
        r = head.prototype_scores(scorer.embed_images(torch.stack([scorer.preprocess(Image.open(p)) for p in paths])))
    w_y = torch.tensor([1.0, np.e]) / (1 + np.e)  # softmax of y's logits (0, 1), by hand
    out = tmp_path / "s.csv"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", str(folder), "--out", str(out),
                                   "--annotator", "y", "-q"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out).sort_values("path")
    assert set(df["scorer"]) == {"p[annotator=y]"}
    np.testing.assert_allclose(df["score"].to_numpy(), (r @ w_y).numpy(), rtol=1e-5, atol=1e-5)
    res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", str(folder), "--out", str(out),
                                   "--annotator", "nobody", "-q"])
    assert res.exit_code == 2 and "does not know annotator 'nobody'" in res.output


def test_eval_annotator_options_are_usage_errors_where_they_do_not_apply(tmp_path):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.folder import save_scorer
    from imgpref.scorers.heads import LinearHead
    from imgpref.scorers.pref_heads import PluralisticHead
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, arch = tiny_open_clip_model(0)
    bb = OpenClipBackbone.from_model(model, arch)
    lin = save_scorer(Scorer(bb, LinearHead(bb.embed_dim), ScorerInfo("lin")), tmp_path / "lin")
    plural = save_scorer(Scorer(bb, PluralisticHead(bb.embed_dim, 2, annotators=["x"]), ScorerInfo("pl")),
                         tmp_path / "pl")
    (tmp_path / "img").mkdir()
    for k, v in enumerate((30, 220)):
        Image.fromarray(np.full((24, 24, 3), v, dtype=np.uint8)).save(tmp_path / "img" / f"{k}.png")
    pd.DataFrame([dict(image_0="img/0.png", image_1="img/1.png", votes_0=3, votes_1=1, votes_tie=0, group="g",
                       split="test")]).to_csv(tmp_path / "m.csv", index=False)
    for folder, opts, message in ((lin, ["--annotator", "x"], "needs a pluralistic head"),
                                  (plural, ["--annotator", "zed"], "not known to the scorer"),
                                  (plural, ["--per-annotator"], "needs a manifest with an 'annotator' column")):
        res = CliRunner().invoke(app, ["eval", "--scorer", str(folder), "--data", str(tmp_path / "m.csv"), "--out",
                                       str(tmp_path / "o.json"), *opts])
        assert res.exit_code == 2 and message in res.output, res.output
