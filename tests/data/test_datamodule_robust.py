"""PreferenceDataModule without preload: a file that breaks at decode time drops its pairs, never the epoch; image
bytes embedded in a manifest get the same checks (decompression bomb, alpha) as files, through one loader."""
from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from imgpref.data.datamodule import PreferenceDataModule, open_image


def _to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(im.resize((8, 8)), dtype=np.float32) / 255.0).permute(2, 0, 1)


def _jpeg(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format="JPEG", quality=95)
    return path


def _truncated_manifest(tmp_path: Path) -> Path:
    for name, seed in (("a", 0), ("b", 1), ("c", 2), ("bad", 3)):
        _jpeg(tmp_path / f"{name}.jpg", seed)
    raw = (tmp_path / "bad.jpg").read_bytes()
    (tmp_path / "bad.jpg").write_bytes(raw[: len(raw) // 2])  # truncated: the header (and verify()) still pass
    with Image.open(tmp_path / "bad.jpg") as im:
        im.verify()
    pairs = [("a", "b"), ("a", "bad"), ("b", "c"), ("c", "bad"), ("bad", "b")]
    rows = [{"image_0": f"{x}.jpg", "image_1": f"{y}.jpg", "votes_0": 2, "votes_1": 1, "votes_tie": 0,
             "group": f"g{i}", "split": "train"} for i, (x, y) in enumerate(pairs)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv"


@pytest.mark.parametrize("batch_size", [1, 8])
def test_truncated_image_without_preload_drops_its_pairs_not_the_epoch(tmp_path, caplog, batch_size):
    dm = PreferenceDataModule(_truncated_manifest(tmp_path), _to_tensor, preload=False, batch_size=batch_size,
                              val_holdout=0.0, seed=0)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="imgpref.data.datamodule"):
        batches = list(dm.train_dataloader())
    for batch in batches:
        assert batch["pixels"].shape[0] == len(batch["prompts"])
    kept = sum(int(b["votes"].shape[0]) for b in batches)
    assert kept == 2  # a-b and b-c; the three pairs with bad.jpg are left out
    assert any("bad.jpg" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)
    if batch_size == 1:  # a batch whose only pair was dropped comes out empty (the module skips it)
        assert sum(int(b["votes"].shape[0]) == 0 for b in batches) == 3


def test_empty_batch_is_skipped_by_the_training_module():
    from imgpref.train.module import RewardModelModule

    empty = {"pixels": torch.zeros(0), "prompts": [], "i0": torch.zeros(0, dtype=torch.long),
             "i1": torch.zeros(0, dtype=torch.long), "votes": torch.zeros(0, 3, dtype=torch.long)}
    # the check comes before the module touches its scorer, so no model is needed
    assert RewardModelModule.training_step(None, empty, 0) is None
    assert RewardModelModule.validation_step(None, empty, 0) is None


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR announcing width x height (8-bit greyscale) and no pixel data: what a
    decompression bomb's header says before any pixel is allocated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_embedded_bytes_get_the_bomb_check_of_files(tmp_path):
    # 10000 x 10000 = 1e8 pixels: above the 89,478,485 limit but below PIL's own hard error (2x), so only the
    # shared loader's check refuses it from the header; the old bytes path went on to decode it
    bomb = _png_header_only(10_000, 10_000)
    with pytest.raises(ValueError, match="decompression bomb"):
        open_image(bomb)
    (tmp_path / "bomb.png").write_bytes(bomb)
    with pytest.raises(ValueError, match="decompression bomb"):
        open_image(str(tmp_path / "bomb.png"))


def test_embedded_bytes_get_alpha_and_exif_handling_of_files(tmp_path):
    # a fully transparent black RGBA image: composited over white like a file (dropping alpha gives black)
    buf = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buf, format="PNG")
    assert np.asarray(open_image(buf.getvalue())).tolist() == [[[255, 255, 255]] * 4] * 4
    # EXIF orientation 6 (rotate 90 degrees clockwise to display): a 6x2 stored image is shown as 2x6
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (6, 2), (10, 20, 30)).save(buf, format="JPEG", exif=exif.tobytes())
    assert open_image(buf.getvalue()).size == (2, 6)
    (tmp_path / "r.jpg").write_bytes(buf.getvalue())
    assert open_image(str(tmp_path / "r.jpg")).size == (2, 6)
