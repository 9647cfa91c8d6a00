"""Backbone identity: two backbones are shared (and share cache entries) only when their weights are
byte-identical. Regression tests for issue 7 item 1 (on the commit before, two scorers trained from one recipe
shared the first one's backbone in `load_scorers` and hit each other's `--cache` entries)."""
from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
from imgpref.scorers.base import Scorer, ScorerInfo
from imgpref.scorers.folder import CONFIG_NAME, WEIGHTS_NAME, save_scorer
from imgpref.scorers.heads import LinearHead
from imgpref.scorers.multi import backbone_groups
from imgpref.scorers.registry import load_scorer, load_scorers
from imgpref.scorers.tiny import tiny_open_clip_model


def scratch_scorer(seed: int, name: str) -> Scorer:
    """A tiny CLIP 'trained from scratch' (random weights of `seed`), keyed as train/build.py keys it."""
    model, arch = tiny_open_clip_model(seed)
    bb = OpenClipBackbone.from_model(model, arch, key=f"open_clip:{arch}:scratch")
    torch.manual_seed(123)  # the same head for both: only the backbones differ
    return Scorer(bb, LinearHead(bb.embed_dim).eval(), ScorerInfo(name=name))


def sha256_of_backbone_tensors(folder) -> str:
    """The digest written independently: sha256 over name|dtype|shape + raw bytes of each `backbone.` tensor."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
        names = sorted(k for k in f.keys() if k.startswith("backbone."))
        for k in names:
            t = f.get_tensor(k).contiguous()
            h.update(f"{k[len('backbone.'):]}|{t.dtype}|{tuple(t.shape)}\n".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    return save_scorer(scratch_scorer(0, "run-a"), root / "a"), save_scorer(scratch_scorer(1, "run-b"), root / "b")


def test_same_recipe_different_weights_never_share_a_backbone(two_folders, images):
    fa, fb = two_folders
    alone_a, alone_b = load_scorer(fa).score(images), load_scorer(fb).score(images)
    assert (alone_a - alone_b).abs().max() > 1e-3  # the two runs really differ
    a, b = load_scorers([fa, fb])
    assert a.backbone is not b.backbone and a.backbone.key != b.backbone.key
    torch.testing.assert_close(b.score(images), alone_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.score(images), alone_a, rtol=1e-5, atol=1e-5)
    # the same folder twice is still one backbone
    a1, a2 = load_scorers([fa, str(fa / CONFIG_NAME)])
    assert a1.backbone is a2.backbone


def test_key_digest_is_the_sha256_of_the_stored_weights_and_never_read_from_the_yaml(two_folders, tmp_path):
    fa, fb = two_folders
    a = load_scorer(fa)
    assert a.backbone.key == f"open_clip:imgpref-tiny-vit:scratch#w{sha256_of_backbone_tensors(fa)}"
    # a folder whose yaml claims the other folder's key is still identified by its own bytes
    import shutil

    forged = tmp_path / "forged"
    shutil.copytree(fb, forged)
    doc = yaml.safe_load((forged / CONFIG_NAME).read_text())
    doc["backbone"]["key"] = a.backbone.key
    (forged / CONFIG_NAME).write_text(yaml.safe_dump(doc))
    x, y = load_scorers([fa, forged])
    assert x.backbone is not y.backbone
    assert y.backbone.key.endswith(sha256_of_backbone_tensors(fb))


def test_in_memory_backbones_with_one_key_are_grouped_only_when_identical(images):
    a, b = scratch_scorer(0, "a"), scratch_scorer(1, "b")
    assert a.backbone.key == b.backbone.key  # same recipe, same declared key
    groups = backbone_groups([a, b])
    assert [len(g) for g in groups.values()] == [1, 1]
    twin = scratch_scorer(0, "twin")  # separately built, byte-identical weights: one group
    assert [len(g) for g in backbone_groups([a, twin]).values()] == [2]


def test_identity_follows_in_place_weight_changes():
    from imgpref.scorers.identity import backbone_identity

    s = scratch_scorer(0, "a")
    before = backbone_identity(s.backbone)
    with torch.no_grad():
        next(s.backbone.parameters()).add_(1e-3)  # an optimizer step changes the weights in place
    after = backbone_identity(s.backbone)
    assert after != before and after.split("#w")[0] == before.split("#w")[0]


def test_scoring_cache_is_namespaced_by_the_weights(two_folders, tmp_path, images):
    from imgpref.scorers.score_paths import score_paths

    folder = tmp_path / "imgs"
    folder.mkdir()
    for k, im in enumerate(images):
        im.save(folder / f"{k}.png")
    fa, fb = two_folders
    cache = tmp_path / "cache"
    first = score_paths(folder, [fa], cache=cache, num_workers=0, progress=False)
    assert first.attrs["stats"]["cache_hits"] == 0
    want_b = score_paths(folder, [fb], num_workers=0, progress=False)
    got_b = score_paths(folder, [fb], cache=cache, num_workers=0, progress=False)
    assert got_b.attrs["stats"]["cache_hits"] == 0  # run-a's entries are not run-b's
    torch.testing.assert_close(torch.tensor(got_b["score"].to_numpy()), torch.tensor(want_b["score"].to_numpy()),
                               rtol=1e-5, atol=1e-5)
    again = score_paths(folder, [fa], cache=cache, num_workers=0, progress=False)
    assert again.attrs["stats"]["cache_hits"] == len(images)


def test_local_weight_file_rewritten_in_place_is_not_served_from_memory(tmp_path, images, prompts):
    from imgpref.scorers import tiny_checkpoints as tc

    path = tc.write_tiny_hps_checkpoint(tmp_path / "HPS_v2_compressed.pt", seed=2)
    first = load_scorer("hpsv2", weights=path, arch="imgpref-tiny-vit", share_backbone=True)
    assert "#w" in first.backbone.key  # local weights carry their digest
    want_first = first.score(images, prompts)
    tc.write_tiny_hps_checkpoint(path, seed=7)  # same path, other weights (e.g. a new training run)
    import os

    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse file-system clocks
    second = load_scorer("hpsv2", weights=path, arch="imgpref-tiny-vit", share_backbone=True)
    assert second.backbone is not first.backbone and second.backbone.key != first.backbone.key
    assert (second.score(images, prompts) - want_first).abs().max() > 1e-3
