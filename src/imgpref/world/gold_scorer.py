"""The gold judge as an imgpref Scorer: presets `world-gold` (utility), `world-gold-fidelity`, `world-gold-aesthetics`.

So the gold judge plugs into everything that takes a scorer (`imgpref eval --scorer world-gold`, `imgpref align
eval --scorer world-gold`, `align pairs`), without `imgpref.scorers` importing the world: importing this module
(or calling `register_world_scorers()`; `imgpref world` does) registers the presets.

The "backbone" is the identity on pixels at 32 px (images of another size are resized, short side then centre
crop), and the "text embedding" of a prompt is its parsed PromptSpec encoded as 4 numbers; the head decodes
both and runs `imgpref.world.judge.judge`. The judge is numpy code: scores carry no gradient
(`as_differentiable_reward` works but its gradient is zero).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from imgpref.data.images import to_rgb
from imgpref.scorers.base import Backbone, Head, ScorerInfo
from imgpref.scorers.pixels import resize_center_crop
from imgpref.world.judge import judge
from imgpref.world.scenes import COLOURS, SHAPES, PromptSpec, caption, parse_prompt

_COLOURS = tuple(COLOURS)
KINDS = {"world-gold": "utility", "world-gold-fidelity": "fidelity", "world-gold-aesthetics": "aesthetics",
         "world-gold-taste1": "taste1"}  # taste1: the second taste group's utility (annotators.AnnotatorConfig)


class WorldPixelsBackbone(Backbone):
    """Identity 'embedding' of the pixels at `size` px (flattened [3*size*size]); prompts -> PromptSpec codes."""

    has_text = True

    def __init__(self, size: int = 32):
        super().__init__()
        self.size = int(size)
        self.embed_dim = 3 * self.size * self.size
        self.key = f"world-pixels-{self.size}"

    def preprocess(self, image: Image.Image) -> Tensor:
        image = to_rgb(image)
        arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return self.pixels_to_input(arr[None])[0]

    def pixels_to_input(self, images: Tensor) -> Tensor:
        if images.shape[-2:] == (self.size, self.size):
            return images
        return resize_center_crop(images, self.size).clamp(0.0, 1.0)

    def embed_images(self, pixels: Tensor) -> Tensor:
        return pixels.reshape(pixels.shape[0], -1)

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        rows = []
        for p in prompts:
            s = parse_prompt(p)
            rows.append([s.count, _COLOURS.index(s.colour), SHAPES.index(s.shape), _COLOURS.index(s.background)])
        return torch.tensor(rows, dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {"type": "world_pixels", "size": self.size}


class WorldGoldHead(Head):
    """Decodes pixels and PromptSpec codes and returns the gold judge's `kind` (utility/fidelity/aesthetics, or
    taste1: the utility of the second taste group, which weights aesthetics more)."""

    needs_text = True

    def __init__(self, kind: str = "utility", size: int = 32):
        super().__init__()
        self.kind, self.size = kind, int(size)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if txt_emb is None:
            raise ValueError("the world gold judge needs prompts (one world prompt per image)")
        x = img_emb.detach().float().cpu().reshape(-1, 3, self.size, self.size).clamp(0.0, 1.0)
        codes = txt_emb.detach().cpu().round().long().tolist()
        prompts = [caption(PromptSpec(int(c), _COLOURS[k], SHAPES[s], _COLOURS[b])) for c, k, s, b in codes]
        j = judge(x, prompts)
        if self.kind == "taste1":  # group 1 of two taste groups weights aesthetics more (imgpref.world.annotators)
            from imgpref.world.annotators import AnnotatorConfig, group_utility

            out = group_utility(j["fidelity"], j["aesthetics"], AnnotatorConfig().group_weights[1])
        else:
            out = j[self.kind]
        return torch.as_tensor(out, dtype=img_emb.dtype, device=img_emb.device)

    def describe(self) -> dict[str, Any]:
        return {"type": "world_gold", "kind": self.kind, "size": self.size}


def register_world_scorers() -> None:
    """Register the `world-gold*` presets (idempotent)."""
    from imgpref.scorers.registry import Preset, list_scorers, register_preset

    have = set(list_scorers())
    for name, kind in KINDS.items():
        if name in have:
            continue
        register_preset(Preset(
            info=ScorerInfo(name=name, higher_is_better=True, score_range=(0.0, 1.0), needs_prompt=True,
                            description=f"the procedural world's gold judge ({kind}; imgpref.world.judge), 32 px"),
            backbone_key=lambda o: "world-pixels-32",
            build_backbone=lambda o: WorldPixelsBackbone(32),
            build_head=lambda b, o, k=kind: WorldGoldHead(k, 32),
            weights_help="weight-free (hand-written judge on pixels)",
        ))


register_world_scorers()
