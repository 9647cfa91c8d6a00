"""Fixtures for the scoring tests: tiny CLIP scorers that count their backbone calls, and image folders."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo


class CountingClipBackbone(Backbone):
    """A tiny open_clip model behind the Backbone contract; counts embed_images calls and images."""

    has_text = True

    def __init__(self, seed: int = 0, delay: float = 0.0):
        super().__init__()
        import open_clip

        from imgpref.scorers.tiny import tiny_open_clip_model

        self.model, name = tiny_open_clip_model(seed)
        self.key = f"test-tiny-clip-seed{seed}"
        size = self.model.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.transform = open_clip.image_transform(self.size, is_train=False)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.embed_dim = int(self.model.text_projection.shape[1])
        self.calls = 0
        self.images = 0
        self.delay = delay

    def preprocess(self, image):
        return self.transform(image)

    def pixels_to_input(self, images):
        x = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bicubic", antialias=True)
        mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
        std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed_images(self, pixels):
        self.calls += 1
        self.images += pixels.shape[0]
        if self.delay:
            import time

            time.sleep(self.delay)
        return self.model.encode_image(pixels)

    def embed_texts(self, prompts):
        return self.model.encode_text(self.tokenizer(list(prompts)))


class CosineHead(Head):
    """CLIPScore-like: 100 * cos(image, text)."""

    needs_text = True

    def forward(self, img_emb, txt_emb=None):
        return 100 * torch.nn.functional.cosine_similarity(img_emb.float(), txt_emb.float(), dim=-1)


class LinearHead(Head):
    """A linear aesthetic head on normalised embeddings, seeded."""

    def __init__(self, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(dim, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(1, dim, generator=g))
            self.lin.bias.fill_(float(seed))

    def forward(self, img_emb, txt_emb=None):
        x = img_emb.float()
        return self.lin(x / x.norm(dim=-1, keepdim=True)).squeeze(-1)


def make_scorers(n_linear: int = 2, cosine: bool = True, delay: float = 0.0, seed: int = 0):
    bb = CountingClipBackbone(seed=seed, delay=delay).eval()
    out = [Scorer(bb, LinearHead(bb.embed_dim, k + 1).eval(), ScorerInfo(name=f"lin{k + 1}")) for k in range(n_linear)]
    if cosine:
        out.append(Scorer(bb, CosineHead(), ScorerInfo(name="cos", needs_prompt=True)))
    return bb, out


@pytest.fixture
def scorers():
    return make_scorers()


def textured(seed: int, size=(40, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    arr = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    ramp = np.linspace(0, 1, w)[None, :, None]
    arr = np.clip(0.6 * arr + 0.4 * ramp, 0, 1)
    return Image.fromarray((arr * 255).astype(np.uint8), "RGB")


def png_with_size(width: int, height: int) -> bytes:
    """A small valid PNG whose header claims width x height (a decompression-bomb header; nothing allocated)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    # IHDR is the first chunk: 8-byte signature, 4 length, 4 type, then width, height
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def write_good_images(folder: Path, n: int, size=(40, 32), fmt="png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"img{k:03d}.{fmt}"
        textured(k, size).save(p)
        paths.append(p)
    return paths


def write_bad_and_odd_images(folder: Path) -> dict[str, str | None]:
    """Every awkward input kind. Returns {file name: expected error substring or None (scored)}."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str | None] = {}
    base = textured(99, (48, 32))

    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.jpg"] = "truncated"
    buf = io.BytesIO()
    base.save(buf, format="PNG")
    (folder / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expect["truncated.png"] = "Error"
    (folder / "zero.png").write_bytes(b"")
    expect["zero.png"] = "empty file"
    (folder / "text.jpg").write_text("this is not an image\n")
    expect["text.jpg"] = "not an image"
    (folder / "bomb.png").write_bytes(png_with_size(30000, 30000))  # > 2x PIL's limit: error at open
    expect["bomb.png"] = "decompression bomb"
    (folder / "bomb_warn.png").write_bytes(png_with_size(10000, 10000))  # between 1x and 2x: PIL only warns
    expect["bomb_warn.png"] = "decompression bomb"

    base.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    expect["cmyk.jpg"] = None
    arr16 = (np.arange(48 * 32).reshape(32, 48) % 256).astype(np.uint16) * 257
    Image.fromarray(arr16).save(folder / "sixteen.png")
    expect["sixteen.png"] = None
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 16, 32))
    pal.save(folder / "palette_alpha.png", transparency=0)  # index 0 (red) is transparent
    expect["palette_alpha.png"] = None
    base.convert("L").save(folder / "gray.png")
    expect["gray.png"] = None
    la = base.convert("LA")
    la.putalpha(128)
    la.save(folder / "gray_alpha.png")
    expect["gray_alpha.png"] = None
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    base.save(folder / "rotated.jpg", quality=95, exif=exif)
    expect["rotated.jpg"] = None
    frames = [Image.new("RGB", (24, 24), c) for c in ((200, 30, 30), (30, 200, 30))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    expect["anim.gif"] = None
    try:
        frames[0].save(folder / "anim.webp", save_all=True, append_images=frames[1:], duration=50, lossless=True)
        expect["anim.webp"] = None
    except (OSError, ValueError, KeyError):  # Pillow built without WebP
        pass
    return expect


# pytest runs with --import-mode=importlib, so tests reach these helpers through fixtures, not imports
@pytest.fixture(scope="session")
def odd_folder(tmp_path_factory):
    """A folder of every awkward kind and the expected error substring per name (None: must be scored)."""
    folder = tmp_path_factory.mktemp("odd")
    return folder, write_bad_and_odd_images(folder)


@pytest.fixture
def scorer_factory():
    return make_scorers


@pytest.fixture
def good_images():
    return write_good_images
