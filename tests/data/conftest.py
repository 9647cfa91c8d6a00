"""Fixtures for the data-layer tests: tiny real images written with PIL."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def tiny_image(seed: int, size: int = 16) -> Image.Image:
    """A distinct 16x16 RGB image per seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def save_image(path: Path, seed: int) -> Path:
    """Write tiny_image(seed) to path (format by suffix) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_image(seed).save(path)
    return path


def jpeg_bytes(seed: int) -> bytes:
    """JPEG bytes of tiny_image(seed)."""
    buf = io.BytesIO()
    tiny_image(seed).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Four PNG files under tmp_path/img/."""
    return [save_image(tmp_path / "img" / f"{i}.png", i) for i in range(4)]


@pytest.fixture
def jpeg():
    """The jpeg_bytes(seed) helper."""
    return jpeg_bytes


@pytest.fixture
def save():
    """The save_image(path, seed) helper."""
    return save_image
