"""Scoring with several scorers at the cost of one backbone pass per distinct backbone.

Scorers from `load_scorers` that share a backbone key hold the same `Backbone` object; these functions group
them by key, run each backbone's image tower once (and its text tower once), then apply every head.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from imgpref.scorers.base import Scorer
from imgpref.scorers.identity import backbone_identity


def backbone_groups(scorers: Sequence[Scorer]) -> dict[str, list[Scorer]]:
    """{backbone identity: scorers on it}, in first-seen order.

    The identity (`imgpref.scorers.identity.backbone_identity`) is the backbone key plus a digest of its
    weights for every backbone that carries its own weights, so two backbones are grouped only when their
    weights are byte-identical (or both are the same published reference): the group's first backbone then
    serves every scorer in it even when they were loaded separately (load with `load_scorers` to also share
    the memory). Two models of one architecture trained separately are two groups.
    """
    groups: dict[str, list[Scorer]] = {}
    for s in scorers:
        groups.setdefault(backbone_identity(s.backbone), []).append(s)
    names = [s.name for s in scorers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"scorer names must be unique to key the results; duplicated: {', '.join(dup)}")
    return groups


def _lookup(by_key: Mapping[str, Tensor], group_key: str, backbone) -> Tensor | None:
    # callers key inputs by group key (from backbone_groups) or by backbone.key (same preprocessing either way)
    if group_key in by_key:
        return by_key[group_key]
    return by_key.get(backbone.key)


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
    (as `torch.stack([backbone.preprocess(im) for im in batch])`), keyed by `backbone.key` or by the group
    keys of `backbone_groups(scorers)`.
    prompts: one per image, required when any scorer `needs_prompt` (ignored by prompt-free scorers).
    image_embeddings: optional {key: [B, D]} already computed (e.g. from an embedding cache); those backbones'
    image towers are skipped and `pixels_by_key` need not hold them.
    Returns {scorer name: scores [B] float32 on CPU}.
    """
    out: dict[str, Tensor] = {}
    image_embeddings = image_embeddings or {}
    for key, group in backbone_groups(scorers).items():
        bb = group[0].backbone
        emb = _lookup(image_embeddings, key, bb)
        if emb is not None:
            img = emb.to(bb.device)
        else:
            pixels = _lookup(pixels_by_key, key, bb)
            if pixels is None:
                raise ValueError(f"no pixels for backbone {bb.key!r}; pass pixels_by_key[{bb.key!r}] = "
                                 "stacked backbone.preprocess(image) tensors")
            pixels = pixels.to(bb.device)
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
        txt_by: dict[tuple, Tensor] = {}  # one text pass per distinct text (scorers may prefix prompts)
        for s in group:
            if s.head.needs_text:
                texts = tuple(s.prompt_texts(prompts))
                if texts not in txt_by:
                    txt_by[texts] = bb.embed_texts(list(texts))
                txt = txt_by[texts]
            out[s.name] = s.score_embeddings(img, txt if s.head.needs_text else None).float().cpu()
    return out


def embed_images_by_key(scorers: Sequence[Scorer], pixels_by_key: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{group key (`backbone_groups`): image embeddings [B, D]}: one pass per distinct backbone."""
    out = {}
    with torch.no_grad():
        for key, group in backbone_groups(scorers).items():
            bb = group[0].backbone
            pixels = _lookup(pixels_by_key, key, bb)
            if pixels is None:
                raise ValueError(f"no pixels for backbone {bb.key!r}")
            pixels = pixels.to(bb.device)
            dtype = _param_dtype(bb)
            out[key] = bb.embed_images(pixels.to(dtype) if dtype is not None and pixels.is_floating_point()
                                       else pixels)
    return out
