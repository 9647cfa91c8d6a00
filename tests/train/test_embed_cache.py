"""Embedding table for head-only training: values equal a direct backbone pass, disk cache, pair batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.train.embed_cache import CachedPairs, EmbeddingTable, attach_features, weights_fingerprint

torch.set_num_threads(1)


def _backbone(seed: int = 0):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, name = tiny_open_clip_model(seed=seed)
    return OpenClipBackbone.from_model(model, name)


@pytest.fixture(scope="module")
def backbone():
    return _backbone(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    from skimage import data

    root = tmp_path_factory.mktemp("imgs")
    out = []
    for name, arr in [("astronaut", data.astronaut()), ("chelsea", data.chelsea()), ("coffee", data.coffee())]:
        p = root / f"{name}.png"
        Image.fromarray(arr).resize((48, 40)).save(p)
        out.append(p)
    jpg = root / "rocket.jpg"
    Image.fromarray(data.rocket()).resize((60, 40)).save(jpg, quality=90)
    out.append(jpg)
    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    out.append(bad)
    return out


def _direct(backbone, paths) -> torch.Tensor:
    from imgpref.data.images import load_image

    with torch.no_grad():
        x = torch.stack([backbone.preprocess(load_image(p)) for p in paths])
        return backbone.embed_images(x).float()


def test_table_equals_direct_backbone_pass_and_reports_bad_files(backbone, files):
    good, bad = files[:4], files[4]
    images = [str(p) for p in [good[0], good[1], good[0], bad, good[2], good[3]]]  # a duplicate and a broken file
    table = EmbeddingTable.build(backbone, images, batch_size=2)
    assert len(table) == 5 and table.dim == backbone.embed_dim
    assert table.keys == [str(p) for p in [good[0], good[1], bad, good[2], good[3]]]
    rows = table.indices([str(p) for p in good])
    torch.testing.assert_close(table.emb[rows], _direct(backbone, good), rtol=1e-5, atol=1e-5)
    assert not bool(table.ok[table.index_of(str(bad))])
    assert bool(table.emb[table.index_of(str(bad))].isnan().all())
    assert "not an image" in table.errors[str(bad)]
    assert table.stats["computed"] == 4 and table.stats["failed"] == 1 and table.stats["cache_hits"] == 0
    # the embeddings are ordinary tensors: a head trained on them gets gradients
    head = torch.nn.Linear(table.dim, 1)
    head(table.emb[rows]).sum().backward()
    assert head.weight.grad is not None
    with pytest.raises(KeyError, match="not in this embedding table"):
        table.index_of("/nowhere.png")


def test_disk_cache_hits_and_weight_fingerprint(backbone, files, tmp_path):
    good = [str(p) for p in files[:4]]
    first = EmbeddingTable.build(backbone, good, cache_dir=tmp_path / "cache")
    again = EmbeddingTable.build(backbone, good, cache_dir=tmp_path / "cache")
    assert again.stats["cache_hits"] == 4 and again.stats["computed"] == 0
    torch.testing.assert_close(again.emb, first.emb)
    # a different random initialisation of the same architecture has the same key but must not hit
    other = _backbone(seed=1)
    assert other.key == backbone.key and weights_fingerprint(other) != weights_fingerprint(backbone)
    fresh = EmbeddingTable.build(other, good, cache_dir=tmp_path / "cache")
    assert fresh.stats["cache_hits"] == 0 and fresh.stats["computed"] == 4
    # embedded bytes (Parquet manifests) hash like the file with the same bytes
    blob = Path(good[0]).read_bytes()
    from_bytes = EmbeddingTable.build(backbone, [blob], cache_dir=tmp_path / "cache")
    assert from_bytes.stats["cache_hits"] == 1
    torch.testing.assert_close(from_bytes.emb[0], first.emb[0])
    assert from_bytes.index_of(blob) == 0


def test_text_table(backbone):
    texts = EmbeddingTable.build_texts(backbone, ["a cat", "a dog", "a cat"])
    assert texts.keys == ["a cat", "a dog"]
    with torch.no_grad():
        direct = backbone.embed_texts(["a dog"]).float()
    torch.testing.assert_close(texts.gather(["a dog"]), direct, rtol=1e-5, atol=1e-5)


def test_cached_pairs_batches(backbone, files):
    good, bad = [str(p) for p in files[:4]], str(files[4])
    table = EmbeddingTable.build(backbone, good + [bad])
    img0 = [good[0], good[1], good[2], bad, good[0]]
    img1 = [good[1], good[2], good[3], good[0], good[3]]
    votes = np.array([[3, 1, 1], [0, 5, 0], [2, 2, 1], [1, 0, 0], [4, 0, 1]])
    pairs = CachedPairs(table, img0, img1, votes)
    assert len(pairs) == 4 and pairs.dropped == 1  # the pair with the broken image is gone
    batch = pairs[[0, 3, 1]]  # pairs (0,1), (0,3), (1,2) of the kept list: images 0,1,2,3 once each
    assert batch["emb"].shape == (4, table.dim) and batch["prompts"] == [""] * 4
    torch.testing.assert_close(batch["emb"][batch["i0"]], table.gather([good[0], good[0], good[1]]))
    torch.testing.assert_close(batch["emb"][batch["i1"]], table.gather([good[1], good[3], good[2]]))
    assert batch["votes"].tolist() == [[3, 1, 1], [4, 0, 1], [0, 5, 0]]
    # an epoch of the loader visits every pair exactly once
    seen = []
    for b in pairs.loader(batch_size=3, shuffle=True, seed=1):
        seen += [tuple(v) for v in b["votes"].tolist()]
    assert sorted(seen) == sorted(tuple(v) for v in votes[[0, 1, 2, 4]].tolist())


def test_cached_pairs_with_prompts_make_image_prompt_items(backbone, files):
    good = [str(p) for p in files[:3]]
    table = EmbeddingTable.build(backbone, good)
    texts = EmbeddingTable.build_texts(backbone, ["red", "blue"])
    pairs = CachedPairs(table, [good[0], good[0]], [good[1], good[2]], [[1, 0, 0], [0, 1, 0]],
                        prompts=["red", "blue"], texts=texts)
    batch = pairs[[0, 1]]
    assert batch["emb"].shape[0] == 4  # good[0] under "red" and under "blue" are two items
    assert [batch["prompts"][int(i)] for i in batch["i0"]] == ["red", "blue"]
    torch.testing.assert_close(batch["txt"][batch["i1"]], texts.gather(["red", "blue"]))


@pytest.mark.parametrize("preload", [False, True])
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")  # training_step called directly
def test_attach_features_feeds_the_reward_module_in_head_mode(backbone, tmp_path, preload):
    from imgpref.data.datamodule import PreferenceDataModule
    from imgpref.data.manifest import read_manifest
    from imgpref.data.synth import make_rendering_dataset
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.heads import LinearHead
    from imgpref.train.losses import bt_soft, vote_fraction
    from imgpref.train.module import RewardModelModule

    make_rendering_dataset(tmp_path / "synth", scenes=3, seed=0, size=32)
    manifest = tmp_path / "synth" / "manifest.csv"
    dm = PreferenceDataModule(manifest, backbone.preprocess, batch_size=8, preload=preload)
    table = attach_features(dm, backbone)
    assert (dm.store is not None) == preload  # preloaded inputs are embedded without decoding again
    assert table.stats["computed"] == len(dm.items) and table.stats["failed"] == 0
    torch.testing.assert_close(dm.features, table.gather(dm.items))
    batch = next(iter(dm.train_dataloader()))
    assert "emb" in batch and "pixels" not in batch
    scorer = Scorer(backbone, LinearHead(backbone.embed_dim), ScorerInfo(name="t"))
    module = RewardModelModule(scorer, "bt_soft", mode="head")
    loss = module.training_step(batch, 0)
    s = scorer.head(batch["emb"])
    torch.testing.assert_close(loss, bt_soft(s[batch["i0"]], s[batch["i1"]], vote_fraction(batch["votes"])))
    # the same pairs through CachedPairs give the same embeddings
    df = read_manifest(manifest, split="train")
    pairs = CachedPairs.from_manifest(table, df)
    assert len(pairs) == len(df)
    b2 = pairs[list(range(len(df)))]
    torch.testing.assert_close(b2["emb"][b2["i0"]], table.gather(list(df["image_0"])))


def test_attach_features_with_a_broken_image(backbone, tmp_path):
    from imgpref.data.datamodule import PreferenceDataModule
    from imgpref.data.synth import make_rendering_dataset

    make_rendering_dataset(tmp_path / "synth", scenes=3, seed=1, size=32)
    from imgpref.data.manifest import read_manifest

    broken = Path(read_manifest(tmp_path / "synth" / "manifest.csv", split="train")["image_0"][0])
    broken.write_bytes(b"not a png at all")
    dm = PreferenceDataModule(tmp_path / "synth" / "manifest.csv", backbone.preprocess, batch_size=8, preload=True)
    dm.setup("fit")
    n_before = {k: len(t) for k, t in dm.tables.items()}
    table = attach_features(dm, backbone, texts=False)
    key = str(broken)
    assert not bool(table.ok[table.index_of(key)]) and key in table.errors
    assert dm.text_features is None
    assert {k: len(t) for k, t in dm.tables.items()} == n_before  # the data module had dropped its pairs already
    assert bool(torch.isfinite(dm.features).all())
    for b in dm.train_dataloader():
        assert bool(torch.isfinite(b["emb"]).all())


def test_text_table_embeds_the_scorers_caption_prefix(backbone):
    # CLIPScore's reference embeds "A photo depicts " + caption; cached head training must embed the same text
    # as `Scorer.embed_texts` does at scoring time, while rows stay keyed by the plain prompt
    prompts = ["a red car", "a dog"]
    table = EmbeddingTable.build_texts(backbone, prompts, prompt_texts=lambda ps: ["A photo depicts " + p for p in ps])
    with torch.no_grad():
        want = backbone.embed_texts(["A photo depicts a red car", "A photo depicts a dog"]).float()
        plain = backbone.embed_texts(prompts).float()
    got = table.gather(prompts)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_image_table_decodes_at_full_size_like_score(backbone, tmp_path):
    # a large JPEG: reduced-size (draft) decoding would change the model input; training embeds what
    # `imgpref score` embeds by default, i.e. the full-size decode
    from skimage import data

    p = tmp_path / "big.jpg"
    Image.fromarray(data.astronaut()).resize((1024, 1024)).save(p, quality=92)
    table = EmbeddingTable.build(backbone, [p])
    with Image.open(p) as im:
        x = backbone.preprocess(im.convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        want = backbone.embed_images(x).float()
    torch.testing.assert_close(table.emb, want, rtol=1e-5, atol=1e-6)
