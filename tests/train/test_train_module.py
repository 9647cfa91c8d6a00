"""RewardModelModule, training modes, data module batches and post-hoc calibration (fast, tiny models)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import minimize_scalar

from imgpref.data.datamodule import EpochBatchSampler, PreferenceDataModule, bt_order
from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
from imgpref.scorers.base import Scorer, ScorerInfo
from imgpref.scorers.heads import LinearHead
from imgpref.scorers.tiny import tiny_open_clip_model
from imgpref.train import losses
from imgpref.train.calibrate import bt_nll, fit_bt_scale
from imgpref.train.modes import apply_mode, merge_lora, trainable_parameters
from imgpref.train.module import RewardModelModule, augment

torch.set_num_threads(1)


def tiny_scorer(needs_text: bool = False) -> Scorer:
    model, name = tiny_open_clip_model(0)
    bb = OpenClipBackbone.from_model(model, name)
    head = LinearHead(bb.embed_dim, normalize=False, prompt="concat" if needs_text else "none")
    return Scorer(bb, head, ScorerInfo("t", needs_prompt=needs_text))


def names_trainable(module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------------------------- calibration
def test_fit_bt_scale_recovers_true_temperature_and_matches_scipy():
    rng = np.random.default_rng(0)
    d = rng.normal(0, 1.5, 400)
    q = 1 / (1 + np.exp(-2.5 * d))  # vote fractions generated at scale 2.5 exactly
    k = fit_bt_scale(torch.tensor(d), torch.zeros(400), q)
    assert k == pytest.approx(2.5, rel=1e-6)
    q2 = rng.uniform(0, 1, 400)
    ref = minimize_scalar(lambda s: bt_nll(s, d, q2), bounds=(1e-3, 1e3), method="bounded",
                          options={"xatol": 1e-10})
    assert fit_bt_scale(torch.tensor(d), torch.zeros(400), q2) == pytest.approx(ref.x, abs=1e-5)
    assert fit_bt_scale(torch.zeros(3), torch.zeros(3), [0.2, 0.5, 0.9]) == 1.0


def test_bt_nll_is_binary_cross_entropy():
    d, q = np.array([0.3, -1.2, 2.0]), np.array([0.6, 0.1, 1.0])
    p = 1 / (1 + np.exp(-0.7 * d))
    assert bt_nll(0.7, d, q) == pytest.approx(float(np.mean(-(q * np.log(p) + (1 - q) * np.log(1 - p)))))


# --------------------------------------------------------------------------------------------- augmentation
def test_augment_flip_only_is_an_exact_mirror_and_identity_otherwise():
    x = torch.rand(6, 3, 8, 8)
    gen = torch.Generator().manual_seed(3)
    y = augment(x, gen, hflip=True, crop_scale=1.0)
    flips = torch.rand(6, 4, generator=torch.Generator().manual_seed(3))[:, 0] < 0.5
    for i in range(6):
        expect = x[i].flip(-1) if flips[i] else x[i]
        torch.testing.assert_close(y[i], expect, atol=1e-5, rtol=0)
    assert augment(x, gen, hflip=False, crop_scale=1.0) is x


def test_augment_crop_keeps_colour_statistics_roughly():
    x = torch.rand(4, 3, 16, 16) * 0.2 + torch.tensor([0.1, 0.5, 0.8]).view(1, 3, 1, 1)
    y = augment(x, torch.Generator().manual_seed(0), hflip=True, crop_scale=0.8)
    torch.testing.assert_close(y.mean((2, 3)), x.mean((2, 3)), atol=0.03, rtol=0)


# ------------------------------------------------------------------------------------------------------ modes
def test_mode_head_trains_only_the_head():
    s = tiny_scorer()
    apply_mode(s, "head")
    assert names_trainable(s) == {"head.linear.weight", "head.linear.bias"}


def test_mode_full_freezes_unused_text_tower_of_prompt_free_scorer():
    s = tiny_scorer()
    apply_mode(s, "full")
    tr = names_trainable(s)
    assert all(n.startswith(("backbone.model.visual.", "head.")) for n in tr)
    assert sum(p.numel() for n, p in s.named_parameters() if n.startswith("backbone.model.visual.")) + 33 == \
        trainable_parameters(s)
    s2 = tiny_scorer(needs_text=True)
    apply_mode(s2, "full")
    assert trainable_parameters(s2) == sum(p.numel() for p in s2.parameters())


def test_mode_last_n_unfreezes_last_blocks_only():
    s = tiny_scorer(needs_text=True)
    apply_mode(s, {"name": "last_n", "vision_blocks": 1, "text_layers": 1})
    tr = names_trainable(s)
    assert any(n.startswith("backbone.model.visual.transformer.resblocks.1.") for n in tr)
    assert not any(n.startswith("backbone.model.visual.transformer.resblocks.0.") for n in tr)
    assert any(n.startswith("backbone.model.transformer.resblocks.1.") for n in tr)
    assert not any(n.startswith("backbone.model.transformer.resblocks.0.") for n in tr)
    assert {"backbone.model.visual.proj", "backbone.model.text_projection"} <= tr
    assert "backbone.model.visual.conv1.weight" not in tr and "backbone.model.token_embedding.weight" not in tr


def test_mode_lora_trains_adapters_and_merge_keeps_outputs():
    s = tiny_scorer()
    x = torch.rand(2, 3, 32, 32)
    apply_mode(s, {"name": "lora", "r": 4, "alpha": 8})
    tr = names_trainable(s)
    assert tr and all("lora_" in n or n.startswith("head.") for n in tr)
    assert any("visual.transformer.resblocks.0.attn" in n for n in tr)
    with torch.no_grad():  # make the adapters non-trivial (B starts at zero)
        for n, p in s.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    s.eval()
    before = s(x).detach()
    assert merge_lora(s)
    after = s(x).detach()
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert not any("lora_" in n for n, _ in s.named_parameters())
    assert "backbone.model.visual.transformer.resblocks.0.attn.in_proj_weight" in s.state_dict()


def test_unknown_mode_and_loss_are_value_errors():
    with pytest.raises(ValueError, match="unknown training mode"):
        apply_mode(tiny_scorer(), "partial")
    with pytest.raises(ValueError, match="unknown loss"):
        RewardModelModule(tiny_scorer(), "hinge")


# ------------------------------------------------------------------------------------------------ the module
def test_training_step_loss_equals_losses_bt_soft_on_item_scores():
    s = tiny_scorer()
    m = RewardModelModule(s, "bt_soft", mode="full")
    m.eval()
    batch = {"pixels": torch.randn(3, 3, 32, 32), "prompts": ["", "", ""], "i0": torch.tensor([0, 0, 1]),
             "i1": torch.tensor([1, 2, 2]), "votes": torch.tensor([[20, 3, 2], [5, 15, 5], [10, 10, 5]])}
    with torch.no_grad():
        scores = s.score_embeddings(s.embed_images(batch["pixels"]))
        got = m._loss(batch, m.embeddings(batch))
    q = torch.tensor([21 / 25, 7.5 / 25, 12.5 / 25])
    expect = losses.bt_soft(scores[[0, 0, 1]], scores[[1, 2, 2]], q)
    torch.testing.assert_close(got, expect, atol=1e-6, rtol=1e-6)


def test_plackett_luce_batch_loss_uses_group_orders():
    m = RewardModelModule(tiny_scorer(), "plackett_luce", mode="head")
    s = torch.tensor([0.5, -1.0, 2.0, 0.0])
    batch = {"order": torch.tensor([[2, 0, 1], [3, 1, 0]]), "mask": torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()}
    got = m.listwise_loss(s, batch)
    expect = (losses.plackett_luce(s, torch.tensor([2, 0, 1])) + losses.plackett_luce(s, torch.tensor([3, 1]))) / 2
    torch.testing.assert_close(got, expect)


def test_warmup_cosine_schedule_values():
    m = RewardModelModule(tiny_scorer(), "bt_soft", mode="head",
                          optimizer={"lr": 1.0, "warmup_steps": 2, "max_steps": 6, "min_lr_ratio": 0.0})
    sched = m.configure_optimizers()["lr_scheduler"]["scheduler"]
    f = sched.lr_lambdas[0]
    assert [round(f(i), 6) for i in range(7)] == [0.5, 1.0, 1.0, round(0.5 * (1 + np.cos(np.pi / 4)), 6), 0.5,
                                                  round(0.5 * (1 + np.cos(3 * np.pi / 4)), 6), 0.0]


# --------------------------------------------------------------------------------------------- data module
def _toy_manifest(tmp_path):
    from PIL import Image

    rows = []
    for g in range(3):
        paths = []
        for r in range(3):
            p = tmp_path / f"g{g}_r{r}.png"
            Image.fromarray(np.full((8, 8, 3), 40 * g + 10 * r, np.uint8)).save(p)
            paths.append(str(p))
        for a, b, v in ((0, 1, (20, 4, 1)), (0, 2, (22, 2, 1)), (1, 2, (15, 5, 5))):
            rows.append({"image_0": paths[a], "image_1": paths[b], "votes_0": v[0], "votes_1": v[1],
                         "votes_tie": v[2], "prompt": "", "group": f"g{g}", "annotator": "",
                         "split": "train" if g < 2 else "val"})
    return pd.DataFrame(rows)


def _pre(im):
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


def test_datamodule_groups_batches_map_pairs_to_the_right_items(tmp_path):
    df = _toy_manifest(tmp_path)
    dm = PreferenceDataModule(df, _pre, batch_size=3, batching="groups", listwise=True)
    dm.setup()
    assert dm.store is not None and len(dm.items) == 9
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # one scene (3 pairs) per batch
    for b in batches:
        assert b["pixels"].shape == (3, 3, 8, 8)
        # rendering r of scene g has value 40 g + 10 r: image_0 is always the lower r here
        v0 = b["pixels"][b["i0"], 0, 0, 0] * 255
        v1 = b["pixels"][b["i1"], 0, 0, 0] * 255
        assert torch.all(v1 > v0)
        assert b["votes"].tolist() == [[20, 4, 1], [22, 2, 1], [15, 5, 5]]
        # BT order of the votes: r0 > r1 > r2
        ranked = (b["pixels"][b["order"][0], 0, 0, 0] * 255).round() % 40
        assert ranked.tolist() == [0.0, 10.0, 20.0]
    (val,) = list(dm.val_dataloader())
    assert val["votes"].shape == (3, 3)


def test_batch_plan_is_a_function_of_seed_and_epoch():
    a = EpochBatchSampler(50, 8, shuffle=True, seed=1)
    b = EpochBatchSampler(50, 8, shuffle=True, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert a.plan() == b.plan()
    b.set_epoch(4)
    assert a.plan() != b.plan()
    assert sorted(sum(a.plan(), [])) == list(range(50))
    r0 = EpochBatchSampler(50, 8, shuffle=True, seed=1, rank=0, world_size=2)
    r1 = EpochBatchSampler(50, 8, shuffle=True, seed=1, rank=1, world_size=2)
    assert len(r0) == len(r1) == 4  # 7 batches, wrapped to 8 so both ranks step equally
    assert set().union(*r0.plan(), *r1.plan()) == set(range(50))


def test_bt_order_hand_example():
    # item 2 beats everyone, item 0 beats item 1
    a, b = np.array([0, 2, 2]), np.array([1, 0, 1])
    votes = np.array([[18, 5, 2], [20, 3, 2], [24, 1, 0]])
    assert bt_order(3, a, b, votes).tolist() == [2, 0, 1]


def test_unreadable_image_drops_its_pairs_and_is_reported(tmp_path):
    df = _toy_manifest(tmp_path)
    (tmp_path / "g0_r1.png").write_bytes(b"not a png")
    dm = PreferenceDataModule(df, _pre, batch_size=8)
    dm.setup()
    assert len(dm.errors) == 1 and "g0_r1" in dm.errors[0]["image"]
    assert len(dm.tables["train"]) == 4  # 6 train pairs, 2 involve the broken image


def test_datamodule_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="batching"):
        PreferenceDataModule(tmp_path / "m.csv", batching="scenes")
    with pytest.raises(ValueError, match="listwise"):
        PreferenceDataModule(tmp_path / "m.csv", listwise=True)


def test_missing_val_split_holds_out_whole_train_groups(tmp_path):
    df = _toy_manifest(tmp_path)
    df["split"] = "train"
    dm = PreferenceDataModule(df, _pre, batch_size=8, val_holdout=0.34, seed=0)
    dm.setup()
    tr, va = dm.tables["train"], dm.tables["val"]
    assert len(va) == 3 and len(tr) == 6  # one of three scenes, all of its pairs
    assert set(tr.group.tolist()).isdisjoint(va.group.tolist())
