"""The Scorer contract: a backbone (embeddings) plus a head (embeddings -> one score per image).

Every scorer, prompt-conditioned or not, learned or weight-free, is a `Scorer`. Several scorers may hold the
same `Backbone` object; `imgpref.scorers.multi.score_with_shared_backbones` then runs that backbone once for
all of them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import Tensor, nn


def check_unit_range(images: Tensor, what: str = "images") -> None:
    """Raise if `images` is not a float tensor [B, 3, H, W] with values in [0, 1]."""
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"{what} must be a float tensor [B, 3, H, W]; got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floating point in [0, 1]; got dtype {images.dtype} (divide uint8 by 255)")
    lo, hi = float(images.detach().min()), float(images.detach().max())
    # A small tolerance: decoders and VAEs overshoot by rounding. Anything in [-1, 1] is the classic mistake.
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"{what} must lie in [0, 1]; got min {lo:.4f}, max {hi:.4f} "
            "(diffusers VAE output is in [-1, 1]: use (x / 2 + 0.5).clamp(0, 1))"
        )


class Backbone(nn.Module, ABC):
    """Turns images (and, for CLIP, prompts) into embeddings. Frozen or trainable; heads sit on top.

    `key` identifies the weights *and* the preprocessing: two backbones with the same key give the same
    embeddings for the same file, so the key names the embedding cache and decides backbone sharing.
    """

    key: str = "abstract"
    has_text: bool = False
    embed_dim: int = 0

    @abstractmethod
    def preprocess(self, image: Image.Image) -> Tensor:
        """PIL image (RGB) -> model input tensor [3, H, W] (for DataLoader workers)."""

    @abstractmethod
    def pixels_to_input(self, images: Tensor) -> Tensor:
        """Differentiable path: float images in [0, 1], [B, 3, H, W] -> model input [B, 3, h, w]."""

    @abstractmethod
    def embed_images(self, pixels: Tensor) -> Tensor:
        """Model input (from `preprocess` or `pixels_to_input`) -> image embeddings [B, D] (not normalised)."""

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> text embeddings [B, D] (not normalised). Only for backbones with `has_text`."""
        raise ValueError(f"backbone {self.key!r} has no text encoder; it cannot embed prompts")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """YAML-ready description that `imgpref.scorers.folder` can rebuild this backbone from."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved in a scorer folder")


class Head(nn.Module, ABC):
    """Embeddings -> one score per image. `needs_text` heads receive the text embedding too."""

    needs_text: bool = False

    @abstractmethod
    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        """[B, D] (and [B, D]) -> [B]."""

    def describe(self) -> dict[str, Any]:
        """YAML-ready description (type + hyper-parameters; weights go to safetensors)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved in a scorer folder")

    def extras(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> dict[str, Tensor]:
        """Per-image outputs beside the score, {column: [B]} (e.g. HPSv3's "sigma"); none by default."""
        return {}

    def score_and_extras(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """(scores [B], extras); heads whose extras come from the same pass override this to run it once."""
        return self(img_emb, txt_emb), self.extras(img_emb, txt_emb)


@dataclass
class ScorerInfo:
    """Metadata every scorer declares."""

    name: str
    higher_is_better: bool = True
    score_range: tuple[float, float] | None = None
    needs_prompt: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Scorer(nn.Module):
    """A backbone + a head + metadata. See DESIGN.md, "Scorer"."""

    def __init__(self, backbone: Backbone, head: Head, info: ScorerInfo):
        super().__init__()
        if info.needs_prompt and not backbone.has_text:
            raise ValueError(f"scorer {info.name!r} needs prompts but backbone {backbone.key!r} has no text encoder")
        self.backbone = backbone
        self.head = head
        self.info = info

    # metadata -----------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.info.name

    @property
    def higher_is_better(self) -> bool:
        return self.info.higher_is_better

    @property
    def score_range(self) -> tuple[float, float] | None:
        return self.info.score_range

    @property
    def needs_prompt(self) -> bool:
        return self.info.needs_prompt

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    # the contract ---------------------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> Tensor:
        return self.backbone.preprocess(image)

    def embed_images(self, pixels: Tensor) -> Tensor:
        return self.backbone.embed_images(pixels)

    def prompt_texts(self, prompts: Sequence[str]) -> list[str]:
        """The texts this scorer embeds for `prompts`: each prefixed with `info.extra["caption_prefix"]` when
        set (CLIPScore's reference code prefixes every caption with "A photo depicts ")."""
        prefix = str(self.info.extra.get("caption_prefix") or "")
        return [prefix + str(p) for p in prompts]

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        return self.backbone.embed_texts(self.prompt_texts(prompts))

    def score_embeddings(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if self.needs_prompt and txt_emb is None:
            raise ValueError(f"scorer {self.name!r} needs prompts: pass --prompt/--prompts or prompts=[...]")
        return self.head(img_emb, txt_emb if self.head.needs_text else None)

    def _prompt_embeddings(self, prompts: Sequence[str] | None, n: int) -> Tensor | None:
        if not self.head.needs_text:
            return None
        if prompts is None:
            raise ValueError(f"scorer {self.name!r} needs prompts: pass prompts=[...] (one per image)")
        prompts = list(prompts)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} images; pass one prompt per image")
        return self.embed_texts(prompts)

    @torch.no_grad()
    def score(self, images: Sequence[Image.Image] | Tensor, prompts: Sequence[str] | None = None) -> Tensor:
        """PIL images (or float [B, 3, H, W] in [0, 1]) -> scores [B] (no gradients, eval mode).

        Runs in eval mode (dropout off) and restores the previous mode, so a scorer being trained can be
        scored mid-training and still gets deterministic scores.
        """
        was_training = self.training
        self.eval()
        try:
            return self._score(images, prompts)
        finally:
            self.train(was_training)

    def _score(self, images: Sequence[Image.Image] | Tensor, prompts: Sequence[str] | None) -> Tensor:
        img = self._embed(images)
        if img is None:
            return torch.empty(0)
        txt = self._prompt_embeddings(prompts, img.shape[0])
        return self.score_embeddings(img, txt).float()

    def _embed(self, images: Sequence[Image.Image] | Tensor) -> Tensor | None:
        """Image embeddings of PIL images or float [B, 3, H, W] in [0, 1]; None for an empty list."""
        if torch.is_tensor(images):
            check_unit_range(images)
            pixels = self.backbone.pixels_to_input(images.to(self.device))
        else:
            images = list(images)
            if not images:
                return None
            # each backbone converts to RGB itself (transparency over white, as the file loader and the CLIP
            # processor do); a plain convert("RGB") would drop alpha
            inputs = [self.preprocess(im) for im in images]
            if len({tuple(t.shape) for t in inputs}) > 1:  # aspect-preserving backbones (HPSv3): one at a time
                dtype = next((p.dtype for p in self.backbone.parameters()), torch.float32)
                return torch.cat([self.embed_images(t.unsqueeze(0).to(self.device).to(dtype)) for t in inputs])
            pixels = torch.stack(inputs).to(self.device)
        dtype = next((p.dtype for p in self.backbone.parameters()), torch.float32)
        return self.embed_images(pixels.to(dtype) if pixels.is_floating_point() else pixels)

    @torch.no_grad()
    def score_with_extras(self, images: Sequence[Image.Image] | Tensor,
                          prompts: Sequence[str] | None = None) -> dict[str, Tensor]:
        """{"score": [B]} plus the head's extra columns (e.g. HPSv3's "sigma"); no gradients, eval mode."""
        was_training = self.training
        self.eval()
        try:
            img = self._embed(images)
            if img is None:
                return {"score": torch.empty(0)}
            txt = self._prompt_embeddings(prompts, img.shape[0])
            if self.needs_prompt and txt is None:
                raise ValueError(f"scorer {self.name!r} needs prompts: pass prompts=[...] (one per image)")
            score, extra = self.head.score_and_extras(img, txt if self.head.needs_text else None)
            return {"score": score.float(), **{k: v.float() for k, v in extra.items()}}
        finally:
            self.train(was_training)

    def forward(self, images: Tensor, prompts: Sequence[str] | None = None) -> Tensor:
        """Differentiable: float images in [0, 1] -> scores [B], gradients flow to pixels and parameters."""
        check_unit_range(images)
        img = self.embed_images(self.backbone.pixels_to_input(images))
        txt = self._prompt_embeddings(prompts, img.shape[0])
        return self.score_embeddings(img, txt)

    # rewards ----------------------------------------------------------------------------------------------------
    def as_reward(self) -> Callable[[Tensor, Sequence[str] | None], Tensor]:
        """Batched `reward(images in [0, 1], prompts) -> Tensor[B]` for labelling (no gradients).

        Lower-is-better scorers are negated so that a reward is always "more is better".
        """
        sign = 1.0 if self.higher_is_better else -1.0

        @torch.no_grad()
        def reward(images: Tensor, prompts: Sequence[str] | None = None) -> Tensor:
            return sign * self.forward(images, prompts).float()

        return reward

    def as_differentiable_reward(self) -> Callable[[Tensor, Sequence[str] | None], Tensor]:
        """Same as `as_reward`, with gradients through the pixels (for DRaFT/AlignProp-style training)."""
        sign = 1.0 if self.higher_is_better else -1.0

        def reward(images: Tensor, prompts: Sequence[str] | None = None) -> Tensor:
            return sign * self.forward(images, prompts).float()

        return reward

    def __repr__(self) -> str:  # nn.Module's repr would print the whole ViT
        return f"Scorer(name={self.name!r}, backbone={self.backbone.key!r}, head={type(self.head).__name__})"
