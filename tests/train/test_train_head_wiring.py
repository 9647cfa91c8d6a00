"""Training wiring of preference heads and weights: GPM cycles through RewardModelModule, PickScore's per-prompt
weights counted over the whole split, annotators from the manifest for pluralistic heads, the on-disk
embedding cache of head mode."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from imgpref.data.datamodule import PairBatches, PairTable, PreferenceDataModule
from imgpref.data.synth import make_rendering_dataset
from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
from imgpref.scorers.base import Scorer, ScorerInfo
from imgpref.scorers.heads import LinearHead
from imgpref.scorers.pref_heads import GPMHead
from imgpref.scorers.tiny import tiny_open_clip_model
from imgpref.train.embed_cache import CachedPairs, EmbeddingTable
from imgpref.train.module import RewardModelModule
from imgpref.train.run import load_recipe, train
from tiny_recipe import small_overrides  # tests/tiny_recipe.py

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs" / "train"
SMALL = small_overrides("imgpref-tiny-rendering-test")


def _scorer(head) -> Scorer:
    model, name = tiny_open_clip_model(0)
    return Scorer(OpenClipBackbone.from_model(model, name), head, ScorerInfo("t"))


# ------------------------------------------------------------------------------------------------ GPM cycles
def _cycle_accuracy(head_kind: str) -> float:
    """Train a head (head mode, cached embeddings) through RewardModelModule + a Lightning Trainer on a planted
    cycle a > b > c > a (25 votes each, all for the winner); return the accuracy of the trained pair logits."""
    torch.manual_seed(0)
    dim = 64
    head = GPMHead(dim, k=1, normalize=False) if head_kind == "gpm" else LinearHead(dim, normalize=False)
    module = RewardModelModule(_scorer(head), "bt_soft", mode="head",
                               optimizer={"lr": 0.05, "schedule": "constant"})
    emb = torch.randn(3, dim)
    table = EmbeddingTable(["a", "b", "c"], emb, torch.ones(3, dtype=torch.bool))
    pairs = CachedPairs(table, ["a", "b", "c"], ["b", "c", "a"], [[25, 0, 0]] * 3)
    trainer = L.Trainer(max_epochs=120, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=pairs.loader(batch_size=3, shuffle=False))
    module.eval()
    with torch.no_grad():
        d = module.pair_logits(pairs[[0, 1, 2]])
    return float((d > 0).double().mean())


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")  # train only
def test_gpm_head_fits_a_planted_cycle_and_a_linear_head_cannot():
    assert _cycle_accuracy("gpm") == 1.0
    # any scalar reward orders a, b, c, so at most 2 of the 3 cyclic pairs are right
    assert _cycle_accuracy("linear") <= 2 / 3


def test_module_pair_logit_is_the_gpm_pair_logit_not_the_scalar_difference():
    torch.manual_seed(1)
    head = GPMHead(8, k=2, normalize=False)
    with torch.no_grad():
        head.layers[-1].weight.normal_()
        head.layers[-1].bias.normal_()
    module = RewardModelModule(_scorer(head), "bt_soft", mode="head")
    emb = torch.randn(3, 8)
    batch = {"emb": emb, "prompts": [""] * 3, "i0": torch.tensor([0, 1]), "i1": torch.tensor([1, 2]),
             "votes": torch.tensor([[3, 1, 0], [0, 2, 2]])}
    with torch.no_grad():
        d = module.pair_logits(batch)
        expect = head.pair_logit(emb[[0, 1]], emb[[1, 2]])
        s = head(emb)
    torch.testing.assert_close(d, expect)
    assert not torch.allclose(d, s[[0, 1]] - s[[1, 2]], atol=1e-4)  # the intransitive part is really there
    q = torch.tensor([0.75, 0.25])
    loss = module._loss(batch, (emb, None))
    ref = -(q * torch.nn.functional.logsigmoid(expect) + (1 - q) * torch.nn.functional.logsigmoid(-expect)).mean()
    torch.testing.assert_close(loss, ref)


# ---------------------------------------------------------------------------------- PickScore prompt weights
# scores s = emb[:, 0] (linear head, weight (1, 0), bias 0). Pairs: p0 (2 vs 0, prompt "a", image 0 wins),
# p1 (0 vs 1, prompt "a", image 1 wins), p2 (1 vs 1, prompt "b", tie). Cross-entropies by hand:
CE = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(2)]  # 0.126928, 0.313262, 0.693147


def _pick_module(**loss_kwargs) -> RewardModelModule:
    head = LinearHead(2, normalize=False)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.linear.bias.zero_()
    return RewardModelModule(_scorer(head), "pickscore", mode="head", loss_kwargs=loss_kwargs)


def _pick_dataset() -> PairBatches:
    """Items 0..4 with scores 2, 0, 0, 1, 1; pairs p0 = (0, 1), p1 = (2, 3), p2 = (3, 4) as above."""
    table = PairTable(i0=np.array([0, 2, 3]), i1=np.array([1, 3, 4]),
                      votes=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), group=np.array([0, 0, 1]),
                      prompt=np.array([0, 0, 1]), annotator=np.array(["", "", ""], dtype=object))
    emb = torch.tensor([[2.0, 0], [0.0, 0], [0.0, 0], [1.0, 0], [1.0, 0]])
    return PairBatches(table, list(range(5)), ["a", "a", "a", "b", "b"], None, emb, None, False, feature_key="emb")


def test_pickscore_loss_weights_pairs_by_prompt_counts_of_the_whole_split():
    ds = _pick_dataset()
    full, part = ds.__getitems__([0, 1, 2]), ds.__getitems__([0, 2])
    assert full["prompt_weight"].tolist() == [0.5, 0.5, 1.0] and part["prompt_weight"].tolist() == [0.5, 1.0]
    m = _pick_module()
    assert m.prompt_weighting  # default on for the pickscore loss
    with torch.no_grad():
        got_full = m._loss(full, m.embeddings(full))
        got_part = m._loss(part, m.embeddings(part))
    assert got_full.item() == pytest.approx((0.5 * CE[0] + 0.5 * CE[1] + CE[2]) / 2, abs=1e-6)  # 0.456621
    # counts come from the split, not the batch: p0 keeps weight 1/2 although it is alone with "a" here
    assert got_part.item() == pytest.approx((0.5 * CE[0] + CE[2]) / 1.5, abs=1e-6)  # 0.504407
    off = _pick_module(prompt_weighting=False)
    with torch.no_grad():
        assert off._loss(full, off.embeddings(full)).item() == pytest.approx(sum(CE) / 3, abs=1e-6)  # 0.377779
    with pytest.raises(ValueError, match="prompt_weighting"):
        RewardModelModule(_scorer(LinearHead(2)), "bt_soft", mode="head", loss_kwargs={"prompt_weighting": True})


def test_pickscore_recipe_turns_prompt_weighting_on():
    cfg = load_recipe(RECIPES / "pickapic_pickscore.yaml")
    assert cfg["loss"] == {"name": "pickscore", "prompt_weighting": True}


def test_datamodule_batches_carry_split_wide_prompt_weights_and_annotators(tmp_path):
    make_rendering_dataset(tmp_path / "d", scenes=3, seed=1, size=16)
    df = pd.read_csv(tmp_path / "d" / "manifest.csv")
    df["split"] = "train"
    df["prompt"] = np.where(df["group"] == "scene_0000", "p0", "p1")  # 15 vs 30 pairs
    df["annotator"] = ["x" if k % 2 else "y" for k in range(len(df))]
    df.to_csv(tmp_path / "d" / "m.csv", index=False)
    dm = PreferenceDataModule(tmp_path / "d" / "m.csv", None, batch_size=4, val_holdout=0.0, preload=False)
    dm.setup("fit")
    dm.set_features(torch.zeros(len(dm.items), 2))
    assert dm.annotator_names() == ["x", "y"]
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["annotators"]) == 4 and set(batch["annotators"]) <= {"x", "y"}
    t = dm.tables["train"]
    first = dm.train_dataloader().batch_sampler.plan()[0]
    expect = [1 / 15 if dm.prompts[int(t.i0[k])] == "p0" else 1 / 30 for k in first]
    torch.testing.assert_close(batch["prompt_weight"], torch.tensor(expect, dtype=torch.float32))


# ------------------------------------------------------------------------------------------ pluralistic runs
def test_pluralistic_head_trains_per_annotator_through_train(tmp_path):
    """Two annotators with opposite tastes on the same pairs: one scalar reward cannot fit both, a pluralistic
    head learns one mixture per annotator (names taken from the manifest) and fits each."""
    from imgpref.scorers.registry import load_scorer

    make_rendering_dataset(tmp_path / "d", scenes=4, seed=3, size=32)
    df = pd.read_csv(tmp_path / "d" / "manifest.csv")
    df = df[df["split"].isin(["train", "val"])]
    y = df.copy()
    y[["votes_0", "votes_1"]] = df[["votes_1", "votes_0"]].to_numpy()
    df = pd.concat([df.assign(annotator="x"), y.assign(annotator="y")], ignore_index=True)
    df.to_csv(tmp_path / "d" / "m.csv", index=False)
    res = train(RECIPES / "tiny_rendering.yaml", tmp_path / "d" / "m.csv", tmp_path / "o", progress=False,
                overrides=SMALL + ["mode.name=head", "scorer.head={type: pluralistic, n_prototypes: 2,"
                                   " normalize: false}", "optimizer.lr=0.05", "optimizer.warmup_steps=0",
                                   "trainer.max_epochs=60", "trainer.early_stopping=null", "augment=null"])
    head = res.scorer.head
    assert head.annotators == ["x", "y"]
    w = head.annotator_weights(["x", "y"]).detach()
    assert torch.allclose(w.sum(-1), torch.ones(2)) and (w[0] - w[1]).abs().max() > 0.5  # distinct mixtures
    # per-annotator agreement with each annotator's majority on the train pairs
    tr = df[df["split"] == "train"]
    tr = tr[tr["votes_0"] != tr["votes_1"]]
    imgs = sorted(set(tr["image_0"]) | set(tr["image_1"]))
    from PIL import Image

    with torch.no_grad():
        e = res.scorer.embed_images(torch.stack([res.scorer.preprocess(Image.open(tmp_path / "d" / p)) for p in imgs]))
    row = {p: k for k, p in enumerate(imgs)}
    for name in ("x", "y"):
        sub = tr[tr["annotator"] == name]
        a = e[[row[p] for p in sub["image_0"]]]
        b = e[[row[p] for p in sub["image_1"]]]
        with torch.no_grad():
            d = head(a, annotators=[name] * len(sub)) - head(b, annotators=[name] * len(sub))
        acc = float(((d > 0).numpy() == (sub["votes_0"] > sub["votes_1"]).to_numpy()).mean())
        assert acc >= 0.75, (name, acc)  # one scalar reward: acc_x + acc_y = 1 (opposite tastes)
    loaded = load_scorer(tmp_path / "o")
    assert loaded.head.annotators == ["x", "y"]
    torch.testing.assert_close(loaded.head.annotator_weights(["x", "y"]), w)


# --------------------------------------------------------------------------------------- on-disk embeddings
def test_head_mode_cache_dir_makes_a_second_run_skip_the_backbone(tmp_path, monkeypatch):
    make_rendering_dataset(tmp_path / "d", scenes=4, seed=1, size=32)
    calls = {"n": 0}
    orig = OpenClipBackbone.embed_images

    def counting(self, pixels):
        calls["n"] += int(pixels.shape[0])
        return orig(self, pixels)

    monkeypatch.setattr(OpenClipBackbone, "embed_images", counting)
    over = SMALL + ["mode.name=head", f"mode.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1"]
    first = train(RECIPES / "tiny_rendering.yaml", tmp_path / "d" / "manifest.csv", tmp_path / "o1",
                  overrides=over, progress=False)
    n_first, calls["n"] = calls["n"], 0
    second = train(RECIPES / "tiny_rendering.yaml", tmp_path / "d" / "manifest.csv", tmp_path / "o2",
                   overrides=over, progress=False)
    assert n_first > 0 and calls["n"] == 0  # every embedding read back from the content-hash cache
    assert second.metrics["val_nll"] == pytest.approx(first.metrics["val_nll"], abs=1e-6)
