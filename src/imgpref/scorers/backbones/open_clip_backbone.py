"""An open_clip CLIP model as a Backbone (HPSv2, LAION aesthetic, CLIPScore, tiny test models)."""
from __future__ import annotations

import copy
import functools
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor

from imgpref.data.images import to_rgb
from imgpref.scorers.backbones.resize import RESIZE_MODES, pixels_to_clip_input, unit_tensor
from imgpref.scorers.base import Backbone

# open_clip's names for our two eval preprocessing modes
_OPEN_CLIP_MODE = {"center_crop": "shortest", "pad": "longest"}


class OpenClipBackbone(Backbone):
    """open_clip `CLIP` + tokenizer + eval preprocessing.

    resize_mode "center_crop": bicubic resize of the short side to `image_size`, centre crop (open_clip's default
    eval transform; `preprocess` *is* open_clip's `image_transform(..., is_train=False)`, and `pixels_to_input` a
    differentiable torch equivalent, equal up to resampling rounding). "pad": HPSv2's eval transform, in HPS's
    order: the image becomes a float tensor first, the tensor's long side is resized to `image_size` (bicubic,
    antialiased, no clamping), zero (black) padding centred, then normalise; `preprocess` and `pixels_to_input`
    are the same computation (`resize.resize_long_pad`).

    weights_ref: where the weights are published (e.g. {"source": "open_clip", "pretrained": "openai"}), so a
    scorer folder can refer to them instead of copying them; None means "save the weights in the folder".
    """

    has_text = True

    def __init__(
        self,
        model: torch.nn.Module,
        model_name: str,
        tokenizer: Any,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        resize_mode: str = "center_crop",
        key: str | None = None,
        model_config: dict | None = None,
        weights_ref: dict | None = None,
    ):
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}; got {resize_mode!r}")
        self.model = model.eval()
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.resize_mode = resize_mode
        self.key = key or f"open_clip:{model_name}:{resize_mode}{self.image_size}"
        self.model_config = copy.deepcopy(model_config)
        self.weights_ref = weights_ref
        self.embed_dim = _embed_dim(model)
        import open_clip

        self._transform = open_clip.image_transform(
            self.image_size, is_train=False, mean=self.mean, std=self.std,
            resize_mode=_OPEN_CLIP_MODE[resize_mode], interpolation="bicubic", fill_color=0,
        )

    @classmethod
    def from_model(cls, model: torch.nn.Module, model_name: str, *, resize_mode: str = "center_crop",
                   key: str | None = None, weights_ref: dict | None = None) -> "OpenClipBackbone":
        """Wrap an open_clip model, taking image size / mean / std from its preprocess config."""
        import open_clip

        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        return cls(model, model_name, cached_tokenizer(model_name), int(size), mean, std, resize_mode, key,
                   model_config=open_clip.get_model_config(model_name), weights_ref=weights_ref)

    def preprocess(self, image: Image.Image) -> Tensor:
        # transparency composited over white, as the file loader does (`imgpref.data.images.to_rgb`)
        image = to_rgb(image)
        if self.resize_mode == "pad":  # HPS converts to a tensor first and resizes the tensor
            return pixels_to_clip_input(unit_tensor(image)[None], self.image_size, self.mean, self.std, "pad")[0]
        return self._transform(image)

    def pixels_to_input(self, images: Tensor) -> Tensor:
        return pixels_to_clip_input(images, self.image_size, self.mean, self.std, self.resize_mode)

    def embed_images(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels.to(self.device))

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "open_clip",
            "model_name": self.model_name,
            "model_config": self.model_config,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_mode": self.resize_mode,
            "key": self.key,
            "weights_ref": self.weights_ref,
        }


@functools.lru_cache(maxsize=8)
def cached_tokenizer(model_name: str) -> Any:
    """open_clip's tokenizer for `model_name`; building the BPE tables takes ~1 s, so build each once."""
    import open_clip

    return open_clip.get_tokenizer(model_name)


def _embed_dim(model: torch.nn.Module) -> int:
    out = getattr(model.visual, "output_dim", None)
    if out is None and getattr(model, "text_projection", None) is not None:
        out = model.text_projection.shape[-1]
    return int(out or 0)
