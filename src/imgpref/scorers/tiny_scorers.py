"""Tiny open_clip scorers (random weights) for tests, benchmarks and demos of the scoring engines."""
from __future__ import annotations

import torch

from imgpref.scorers.base import Scorer, ScorerInfo


def tiny_clip_scorers(seed: int = 0, n_linear: int = 2, cosine: bool = True) -> list[Scorer]:
    """`n_linear` seeded linear heads (`lin1`, ...) and optionally a prompt-conditioned cosine head (`cos`), all
    on one tiny open_clip backbone built from the package's tiny config (same code paths as a real CLIP)."""
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.heads import CosineHead, LinearHead
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, name = tiny_open_clip_model(seed)
    bb = OpenClipBackbone.from_model(model, name, key=f"tiny-clip-seed{seed}")
    out = []
    for k in range(n_linear):
        head = LinearHead(bb.embed_dim)
        g = torch.Generator().manual_seed(seed * 100 + k + 1)
        with torch.no_grad():
            head.linear.weight.copy_(torch.randn(head.linear.weight.shape, generator=g))
            head.linear.bias.fill_(float(k))
        out.append(Scorer(bb, head.eval(), ScorerInfo(name=f"lin{k + 1}")))
    if cosine:
        out.append(Scorer(bb, CosineHead(scale=100.0).eval(), ScorerInfo(name="cos", needs_prompt=True)))
    return out
