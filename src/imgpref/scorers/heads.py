"""Heads (embeddings -> one score per image) and the head-type registry that scorer folders rebuild from.

A head's `describe()` returns `{"type": <registered name>, **constructor kwargs}`; `build_head(desc)` calls the
registered class with those kwargs, then the folder loader fills in the weights from `model.safetensors`.
Other packages add heads with `@register_head("name")` (the training code registers GPM etc. this way).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgpref.scorers.base import Head

H = TypeVar("H", bound=type)
_HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator: make `name` rebuildable by `build_head({"type": name, ...})`."""

    def deco(cls: H) -> H:
        if name in _HEADS and _HEADS[name] is not cls and _HEADS[name].__qualname__ != cls.__qualname__:
            raise ValueError(f"head type {name!r} is already registered by {_HEADS[name].__qualname__}")
        _HEADS[name] = cls
        cls.head_type = name
        return cls

    return deco


def registered_heads() -> list[str]:
    """Names usable as `type:` of a head in scorer.yaml."""
    _ensure_builtin()
    return sorted(_HEADS)


def head_class(name: str) -> type[Head] | None:
    """The registered class of head type `name`, or None (for recipe checks: its constructor's arguments)."""
    _ensure_builtin()
    return _HEADS.get(name)


def build_head(desc: dict[str, Any]) -> Head:
    """Rebuild a head (random/initial weights) from its `describe()` dict."""
    _ensure_builtin()
    desc = dict(desc)
    kind = desc.pop("type", None)
    if kind not in _HEADS:
        raise ValueError(f"unknown head type {kind!r}; registered: {', '.join(sorted(_HEADS))} "
                         "(a head from another package must be imported, which registers it, before loading)")
    try:
        return _HEADS[kind](**desc)
    except TypeError as e:
        raise ValueError(f"cannot build head {kind!r} from {desc}: {e}") from e


def _ensure_builtin() -> None:
    import importlib

    # modules of this package that register head types, imported on first use so folders rebuild them
    for mod in ("imgpref.scorers.pixels", "imgpref.scorers.pref_heads"):
        try:
            importlib.import_module(mod)
        except ImportError as e:  # only a missing module is tolerated, not a broken one
            if getattr(e, "name", None) != mod:
                raise


def _normalize(x: Tensor) -> Tensor:
    return F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1).to(x.dtype)


@register_head("cosine")
class CosineHead(Head):
    """`weight * scale * max(cos(img, txt), clamp_min)` (no clamp when clamp_min is None); one score per image.

    PickScore: scale="learned" (holds `logit_scale`; multiplier `logit_scale.exp()`), HPSv2: scale=100,
    CLIPScore: scale=1, clamp_min=0, weight=2.5.
    """

    needs_text = True

    def __init__(self, scale: float | str = 1.0, clamp_min: float | None = None, weight: float = 1.0,
                 logit_scale_init: float = math.log(100.0)):
        super().__init__()
        if scale == "learned":
            self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        elif isinstance(scale, (int, float)):
            self.register_buffer("_scale", torch.tensor(float(scale)), persistent=False)
        else:
            raise ValueError(f"CosineHead scale must be a number or 'learned'; got {scale!r}")
        self.scale = scale
        self.clamp_min = None if clamp_min is None else float(clamp_min)
        self.weight = float(weight)

    def multiplier(self) -> Tensor:
        return self.logit_scale.exp() if self.scale == "learned" else self._scale

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if txt_emb is None:
            raise ValueError("CosineHead needs text embeddings (this scorer needs prompts)")
        if txt_emb.shape != img_emb.shape:
            raise ValueError(f"image embeddings {tuple(img_emb.shape)} and text {tuple(txt_emb.shape)} differ")
        cos = (_normalize(img_emb) * _normalize(txt_emb)).sum(-1)
        if self.clamp_min is not None:
            cos = cos.clamp(min=self.clamp_min)
        return self.weight * self.multiplier().to(cos.dtype) * cos

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "cosine", "scale": self.scale, "clamp_min": self.clamp_min, "weight": self.weight}
        return d


@register_head("laion_aesthetic")
class LaionAestheticHead(Head):
    """The LAION aesthetic predictor v2 MLP, in its published module layout (state-dict keys `layers.N.*`).

    Input: the L2-normalised image embedding (768 for ViT-L/14; `input_dim` follows the backbone for tests).
    No activations between the Linear layers, as published.
    """

    def __init__(self, input_dim: int = 768):
        super().__init__()
        self.input_dim = int(input_dim)
        self.layers = nn.Sequential(
            nn.Linear(self.input_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        return self.layers(_normalize(img_emb)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {"type": "laion_aesthetic", "input_dim": self.input_dim}


def _combine(img: Tensor, txt: Tensor | None, prompt: str) -> Tensor:
    if prompt == "none":
        return img
    if txt is None:
        raise ValueError(f"this head is prompt-conditioned ({prompt!r}); it needs text embeddings")
    return torch.cat([img, txt], dim=-1) if prompt == "concat" else img * txt


_PROMPT_MODES = ("none", "concat", "product")


def _check_prompt(prompt: str) -> str:
    if prompt not in _PROMPT_MODES:
        raise ValueError(f"prompt conditioning must be one of {_PROMPT_MODES}; got {prompt!r}")
    return prompt


@register_head("linear")
class LinearHead(Head):
    """A linear score on the (L2-normalised by default) embedding; optionally prompt-conditioned."""

    def __init__(self, input_dim: int, normalize: bool = True, prompt: str = "none"):
        super().__init__()
        self.input_dim, self.normalize, self.prompt = int(input_dim), bool(normalize), _check_prompt(prompt)
        self.needs_text = self.prompt != "none"
        self.linear = nn.Linear(self.input_dim * (2 if self.prompt == "concat" else 1), 1)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if self.normalize:
            img_emb = _normalize(img_emb)
            txt_emb = _normalize(txt_emb) if txt_emb is not None else None
        return self.linear(_combine(img_emb, txt_emb, self.prompt)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {"type": "linear", "input_dim": self.input_dim, "normalize": self.normalize, "prompt": self.prompt}


@register_head("mlp")
class MLPHead(Head):
    """MLP on the (L2-normalised by default) embedding: [Linear, GELU, Dropout] x len(hidden), Linear(., 1)."""

    def __init__(self, input_dim: int, hidden: Sequence[int] = (256,), dropout: float = 0.1,
                 normalize: bool = True, prompt: str = "none"):
        super().__init__()
        self.input_dim, self.hidden = int(input_dim), [int(h) for h in hidden]
        self.dropout, self.normalize, self.prompt = float(dropout), bool(normalize), _check_prompt(prompt)
        self.needs_text = self.prompt != "none"
        layers: list[nn.Module] = []
        width = self.input_dim * (2 if self.prompt == "concat" else 1)
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if self.normalize:
            img_emb = _normalize(img_emb)
            txt_emb = _normalize(txt_emb) if txt_emb is not None else None
        return self.layers(_combine(img_emb, txt_emb, self.prompt)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {"type": "mlp", "input_dim": self.input_dim, "hidden": self.hidden, "dropout": self.dropout,
                "normalize": self.normalize, "prompt": self.prompt}
