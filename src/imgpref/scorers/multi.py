"""Scoring with several scorers at the cost of one backbone pass per distinct backbone.

Scorers from `load_scorers` that share a backbone key hold the same `Backbone` object; these functions group
them by key, run each backbone's image tower once (and its text tower once), then apply every head.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from imgpref.scorers.base import Scorer


def backbone_groups(scorers: Sequence[Scorer]) -> dict[str, list[Scorer]]:
    """{backbone key: scorers on it}, in first-seen order.

    Equal keys promise equal embeddings, so the group's first backbone serves every scorer in it even when
    they were loaded separately (load with `load_scorers` to also share the memory).
    """
    groups: dict[str, list[Scorer]] = {}
    for s in scorers:
        groups.setdefault(s.backbone.key, []).append(s)
    names = [s.name for s in scorers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"scorer names must be unique to key the results; duplicated: {', '.join(dup)}")
    return groups


def _param_dtype(module: torch.nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters()), None)


@torch.no_grad()
def score_with_shared_backbones(
    scorers: Sequence[Scorer],
    pixels_by_key: Mapping[str, Tensor],
    prompts: Sequence[str] | None = None,
    *,
    image_embeddings: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Score one batch with every scorer; each backbone runs once (images once, prompts once).

    pixels_by_key: {backbone key: model input [B, 3, h, w]} from each backbone's `preprocess`
    (as `torch.stack([backbone.preprocess(im) for im in batch])`), for every key in `backbone_groups(scorers)`.
    prompts: one per image, required when any scorer `needs_prompt` (ignored by prompt-free scorers).
    image_embeddings: optional {key: [B, D]} already computed (e.g. from an embedding cache); those backbones'
    image towers are skipped and `pixels_by_key` need not hold them.
    Returns {scorer name: scores [B] float32 on CPU}.
    """
    out: dict[str, Tensor] = {}
    image_embeddings = image_embeddings or {}
    for key, group in backbone_groups(scorers).items():
        bb = group[0].backbone
        if key in image_embeddings:
            img = image_embeddings[key].to(bb.device)
        else:
            if key not in pixels_by_key:
                raise ValueError(f"no pixels for backbone {key!r}; pass pixels_by_key[{key!r}] = "
                                 "stacked backbone.preprocess(image) tensors")
            pixels = pixels_by_key[key].to(bb.device)
            dtype = _param_dtype(bb)
            if dtype is not None and pixels.is_floating_point():
                pixels = pixels.to(dtype)
            img = bb.embed_images(pixels)
        n = img.shape[0]
        txt = None
        if any(s.head.needs_text for s in group):
            if prompts is None:
                names = ", ".join(s.name for s in group if s.head.needs_text)
                raise ValueError(f"scorers {names} need prompts: pass one prompt per image")
            prompts = list(prompts)
            if len(prompts) != n:
                raise ValueError(f"got {len(prompts)} prompts for {n} images; pass one prompt per image")
            txt = bb.embed_texts(prompts)
        for s in group:
            out[s.name] = s.score_embeddings(img, txt if s.head.needs_text else None).float().cpu()
    return out


def embed_images_by_key(scorers: Sequence[Scorer], pixels_by_key: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{backbone key: image embeddings [B, D]}: one pass per distinct backbone (for embedding caches)."""
    out = {}
    with torch.no_grad():
        for key, group in backbone_groups(scorers).items():
            bb = group[0].backbone
            pixels = pixels_by_key[key].to(bb.device)
            dtype = _param_dtype(bb)
            out[key] = bb.embed_images(pixels.to(dtype) if dtype is not None and pixels.is_floating_point()
                                       else pixels)
    return out
