"""Tiny CLIP architectures for tests, the offline demo and benchmarks.

They are real open_clip / transformers CLIP models (same classes and code paths as ViT-H/14), only narrow and
shallow, with random initial weights. The open_clip config is written as JSON and registered with
`open_clip.add_model_config`, exactly as a user would add a custom architecture.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

TINY_OPEN_CLIP = "imgpref-tiny-vit"

TINY_OPEN_CLIP_CONFIG: dict = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_registered: set[str] = set()
# An open_clip model name: it becomes a file name (open_clip reads configs from `<name>.json`) and a registry
# key, so nothing that could leave a folder ("/", ".."), name a hub repo ("hf-hub:") or hide (leading ".").
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_model_name(name: object, what: str = "open_clip model name") -> str:
    """`name` if it is a plain open_clip model name (letters, digits, `_`, `.`, `-`; no `..`), else ValueError."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '_', '.' and '-' only (at most 100 "
                         "characters, starting with a letter or digit, no '..')")
    return name


def register_open_clip_config(name: str = TINY_OPEN_CLIP, config: dict | None = None) -> str:
    """Register `config` with open_clip under `name` (a validated plain name); returns the name to use.

    open_clip only reads configs from JSON files: the file is written to a private temporary folder, read by
    `open_clip.add_model_config`, and the folder is removed again (the config stays registered in memory).
    """
    import open_clip

    check_model_name(name)
    if name in _registered and config is None:
        return name
    folder = Path(tempfile.mkdtemp(prefix="imgpref-clipcfg-"))
    try:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(config or TINY_OPEN_CLIP_CONFIG))
        open_clip.add_model_config(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
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
