"""Manifest -> (prompt, winner, loser) pairs: ties never go to image 0, splits, unreadable images, SDXL time ids."""
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from imgpref.align.pairs_data import (
    PreferencePairDataModule,
    load_pairs,
    orient_pairs,
    resize_center_crop,
    select_split,
)


def _frame(rows):
    df = pd.DataFrame(rows, columns=["image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt"])
    df["split"] = ""
    return df


def test_winner_is_side_with_more_votes_and_ties_dropped_and_counted(caplog):
    df = _frame([
        ("a", "b", 3, 1, 0, "p1"),   # a wins
        ("c", "d", 1, 3, 2, "p2"),   # d wins (tie votes never pick a side)
        ("e", "f", 0, 0, 1, "p3"),   # 0/0/1 tie
        ("g", "h", 2, 2, 5, "p4"),   # equal votes: tie
    ])
    with caplog.at_level(logging.WARNING):
        pairs = load_pairs(df)
    assert list(zip(pairs.winners, pairs.losers)) == [("a", "b"), ("d", "c")]
    assert pairs.prompts == ["p1", "p2"] and pairs.weights == [1.0, 1.0]
    assert pairs.n_ties_dropped == 2 and "2 tied pairs dropped" in caplog.text
    assert pairs.summary() == {"rows": 4, "pairs": 2, "ties_dropped": 2, "ties_kept": 0, "unreadable_pairs": 0}


def test_ties_keep_gives_both_orientations_at_half_weight():
    pairs = orient_pairs(_frame([("e", "f", 0, 0, 1, "p"), ("a", "b", 0, 1, 0, "q")]), ties="keep")
    assert list(zip(pairs.winners, pairs.losers, pairs.weights)) == [("e", "f", 0.5), ("f", "e", 0.5), ("b", "a", 1.0)]
    assert pairs.n_ties_kept == 1 and pairs.n_ties_dropped == 0
    with pytest.raises(ValueError, match="ties"):
        orient_pairs(_frame([]), ties="first")


def test_split_auto_never_trains_on_val():
    df = _frame([("a", "b", 1, 0, 0, ""), ("c", "d", 1, 0, 0, ""), ("e", "f", 1, 0, 0, "")])
    df["split"] = ["train", "val", "test"]
    assert select_split(df, "auto")["image_0"].tolist() == ["a"]
    df["split"] = ["val", "val", "test"]
    with pytest.raises(ValueError, match="none is 'train'"):
        select_split(df, "auto")
    df["split"] = ""
    assert len(select_split(df, "auto")) == 3


def test_resize_center_crop_records_true_size_and_crop():
    im = Image.fromarray(np.full((40, 48, 3), 255, np.uint8))  # h=40, w=48
    px, orig, crop = resize_center_crop(im, 32)
    # short side 40 -> 32: scale 0.8, width round(38.4) = 38; crop left (38 - 32) // 2 = 3, top 0
    assert orig == (40, 48) and crop == (0, 3)
    assert px.shape == (3, 32, 32) and torch.allclose(px, torch.ones_like(px))  # white -> +1


def test_datamodule_reads_manifest_and_leaves_out_unreadable(tmp_path):
    from imgpref.data.manifest import write_manifest

    rng = np.random.default_rng(0)
    for name, shape in (("w.png", (40, 48, 3)), ("l.png", (64, 32, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    df = pd.DataFrame({
        "image_0": ["l.png", "w.png", "w.png"], "image_1": ["w.png", "broken.png", "l.png"],
        "votes_0": [0, 1, 1], "votes_1": [1, 0, 1], "votes_tie": [0, 0, 0], "prompt": ["x", "y", "z"],
    })
    write_manifest(df, tmp_path / "m.csv")
    dm = PreferencePairDataModule(tmp_path / "m.csv", resolution=32, batch_size=2, shuffle=False)
    assert dm.summary() == {"rows": 3, "pairs": 1, "ties_dropped": 1, "ties_kept": 0, "unreadable_pairs": 1}
    assert "broken.png" in dm.train_set.pairs.unreadable[0][0]
    batch = next(iter(dm.train_dataloader()))
    assert batch["prompt"] == ["x"] and batch["pixels_w"].shape == (1, 3, 32, 32)
    # winner w.png is 40x48 (h x w): crop left 3; loser l.png is 64x32: resized to 32x64, crop top 16
    assert batch["time_ids_w"].tolist() == [[40, 48, 0, 3, 32, 32]]
    assert batch["time_ids_l"].tolist() == [[64, 32, 16, 0, 32, 32]]
    assert batch["weight"].tolist() == [1.0]
