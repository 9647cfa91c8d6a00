"""Tiny CLIP architectures for tests, the offline demo and benchmarks.

They are real open_clip / transformers CLIP models (same classes and code paths as ViT-H/14), only narrow and
shallow, with random initial weights. The open_clip config is written as JSON and registered with
`open_clip.add_model_config`, exactly as a user would add a custom architecture.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

TINY_OPEN_CLIP = "imgpref-tiny-vit"

TINY_OPEN_CLIP_CONFIG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_registered: set[str] = set()


def register_open_clip_config(name: str = TINY_OPEN_CLIP, config: dict | None = None) -> str:
    """Write `config` as `<name>.json` and register it with open_clip; returns the model name to use."""
    import open_clip

    if name in _registered and config is None:
        return name
    folder = Path(tempfile.mkdtemp(prefix="imgpref-clipcfg-"))
    (folder / f"{name}.json").write_text(json.dumps(config or TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(folder)
    _registered.add(name)
    return name


def tiny_open_clip_model(seed: int = 0, name: str = TINY_OPEN_CLIP, config: dict | None = None):
    """A randomly initialised tiny open_clip CLIP (eval mode) and its registered model name."""
    import open_clip
    import torch

    register_open_clip_config(name, config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    return model.eval(), name
