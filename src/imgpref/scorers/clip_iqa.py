"""CLIP-IQA (Wang, Chan & Loy, AAAI 2023), zero-shot: an antonym prompt pair on any CLIP.

score = softmax(100 * [cos(img, "Good photo."), cos(img, "Bad photo.")])[0], the probability of the positive
prompt (100 = OpenAI CLIP's logit scale, as pyiqa's `clipiqa` computes it). Differences from pyiqa's `clipiqa`
metric, which is not reproduced here: pyiqa averages three antonym pairs ("Good/Bad photo.", "High/Low quality.",
"Sharp/Blurry photo.") and feeds RN50 the full-size image without its positional embedding; this preset uses the
paper's single pair on the standard CLIP input (short side to 224, centre crop). `pairs=` takes other pairs;
several pairs are averaged as pyiqa does.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from imgpref.scorers.base import Backbone, Head
from imgpref.scorers.heads import _normalize, register_head

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("Good photo.", "Bad photo."),)
LOGIT_SCALE = 100.0


@register_head("clip_iqa")
class ClipIqaHead(Head):
    """P(positive prompt) per image from fixed text embeddings of antonym pairs (buffers, saved with the head)."""

    def __init__(self, embed_dim: int, pairs: Sequence[Sequence[str]] = DEFAULT_PAIRS,
                 logit_scale: float = LOGIT_SCALE):
        super().__init__()
        self.pairs = [[str(p), str(n)] for p, n in pairs]
        if not self.pairs:
            raise ValueError("clip-iqa needs at least one (positive, negative) prompt pair")
        self.embed_dim, self.logit_scale = int(embed_dim), float(logit_scale)
        self.register_buffer("text_emb", torch.zeros(len(self.pairs), 2, self.embed_dim))

    @torch.no_grad()
    def set_text(self, backbone: Backbone) -> "ClipIqaHead":
        """Embed the prompt pairs with `backbone`'s text tower (once, at load time)."""
        flat = [t for pair in self.pairs for t in pair]
        emb = backbone.embed_texts(flat).float().reshape(len(self.pairs), 2, -1)
        self.text_emb.copy_(emb.to(self.text_emb.device))
        return self

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        img = _normalize(img_emb).float()
        txt = nn.functional.normalize(self.text_emb.float(), dim=-1)
        logits = self.logit_scale * torch.einsum("bd,kcd->bkc", img, txt)
        return logits.softmax(-1)[..., 0].mean(-1)

    def describe(self) -> dict[str, Any]:
        return {"type": "clip_iqa", "embed_dim": self.embed_dim, "pairs": self.pairs, "logit_scale": self.logit_scale}


def clip_iqa_head(backbone: Backbone, pairs: Sequence[Sequence[str]] | None = None,
                  logit_scale: float | None = None) -> ClipIqaHead:
    """A CLIP-IQA head for `backbone` (a CLIP with a text tower), its prompt pairs embedded; `logit_scale`
    defaults to 100 (OpenAI CLIP's)."""
    if not backbone.has_text:
        raise ValueError(f"clip-iqa needs a CLIP backbone with a text tower; {backbone.key!r} has none")
    head = ClipIqaHead(backbone.embed_dim, pairs or DEFAULT_PAIRS,
                       LOGIT_SCALE if logit_scale is None else float(logit_scale)).to(backbone.device)
    return head.set_text(backbone)
