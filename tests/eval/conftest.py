"""Tiny hand-computable scorers and manifests for the evaluation tests.

`MeanRGB` embeds an image as its mean RGB in [0, 1]; `Linear` scores w . e. Solid-colour images therefore score
exactly w . (r, g, b) / 255, so every expected metric can be worked out by hand.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo

torch.set_num_threads(1)


class MeanRGB(Backbone):
    key = "test-mean-rgb"
    has_text = True
    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.calls = 0  # images embedded, to check each distinct image is scored once

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        a = np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)

    def pixels_to_input(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += pixels.shape[0]
        return pixels.mean(dim=(2, 3))

    def embed_texts(self, prompts):
        # prompt "x" * k -> (k, 0, 0): a prompt-conditioned head can then scale the red channel by the prompt
        return torch.tensor([[float(len(p)), 0.0, 0.0] for p in prompts])


class Linear(Head):
    def __init__(self, w=(1.0, 0.0, 0.0)):
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))

    def forward(self, img_emb, txt_emb=None):
        return img_emb @ self.w


class TextDot(Head):
    needs_text = True

    def forward(self, img_emb, txt_emb=None):
        return (img_emb * txt_emb).sum(dim=1)


def make_scorer(w=(1.0, 0.0, 0.0), bt_scale: float | None = None, higher_is_better: bool = True) -> Scorer:
    extra = {} if bt_scale is None else {"bt_scale": bt_scale}
    return Scorer(MeanRGB(), Linear(w), ScorerInfo(name="red", higher_is_better=higher_is_better, extra=extra))


def make_prompt_scorer() -> Scorer:
    return Scorer(MeanRGB(), TextDot(), ScorerInfo(name="red-times-len", needs_prompt=True))


def solid(folder: Path, name: str, red: int) -> str:
    """A 6x6 solid image with the given red value (score red / 255 under make_scorer())."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (red, 40, 80)).save(folder / name)
    return name


def write_manifest_csv(path: Path, rows: list[dict]) -> Path:
    cols = ["image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group", "split"]
    # object dtype first: filling a float column with "" is deprecated in pandas (Pandas4Warning)
    pd.DataFrame(rows).reindex(columns=cols).astype(object).fillna("").to_csv(path, index=False)
    return path


@pytest.fixture
def red_scorer() -> Scorer:
    return make_scorer()


@pytest.fixture
def kit():
    """Builders for tests (conftest modules cannot be imported under --import-mode=importlib)."""
    from types import SimpleNamespace

    return SimpleNamespace(make_scorer=make_scorer, make_prompt_scorer=make_prompt_scorer, solid=solid,
                           write_manifest_csv=write_manifest_csv)
