"""A transformers `CLIPModel` (+ `CLIPImageProcessor`, `CLIPTokenizer`) as a Backbone (PickScore)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor

from imgpref.scorers.backbones.resize import normalize, resize_short_center_crop
from imgpref.scorers.base import Backbone


def _features(out: Any) -> Tensor:
    """transformers 5.x returns a ModelOutput whose `pooler_output` is the projected embedding; 4.x a tensor."""
    if torch.is_tensor(out):
        return out
    if getattr(out, "pooler_output", None) is not None:
        return out.pooler_output
    return out[0]


def _size_of(spec: Any, default: int) -> int:
    if isinstance(spec, int):
        return spec
    if isinstance(spec, dict):
        for k in ("shortest_edge", "height", "width"):
            if spec.get(k):
                return int(spec[k])
    for k in ("shortest_edge", "height"):
        v = getattr(spec, k, None)
        if v:
            return int(v)
    return default


class HFClipBackbone(Backbone):
    """transformers CLIP. Text is tokenised with padding="max_length", truncation, max_length 77 (as PickScore).

    `preprocess` calls the `CLIPImageProcessor` itself (short side to `size`, centre crop, normalise);
    `pixels_to_input` is a differentiable torch equivalent.
    """

    has_text = True

    def __init__(self, model: torch.nn.Module, processor: Any, tokenizer: Any, key: str,
                 source: str | None = None, weights_ref: dict | None = None, max_length: int = 77):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer
        self.key = key
        self.source = source
        self.weights_ref = weights_ref
        self.max_length = int(max_length)
        self.embed_dim = int(model.config.projection_dim)
        self.image_size = _size_of(getattr(processor, "crop_size", None), _size_of(processor.size, 224))
        self.resize_size = _size_of(processor.size, self.image_size)
        self.mean = tuple(float(m) for m in processor.image_mean)
        self.std = tuple(float(s) for s in processor.image_std)

    def preprocess(self, image: Image.Image) -> Tensor:
        # the processor gets the image as given: it converts to RGB itself (transformers 5 composites
        # transparency over white, as `imgpref.data.images.to_rgb` does), so the result is the processor's
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]

    def pixels_to_input(self, images: Tensor) -> Tensor:
        # As CLIPImageProcessor: short side to resize_size, then a crop_size centre crop placed with floor
        # offsets (transformers' rule; torchvision's CenterCrop rounds half to even instead, one pixel off
        # when the margin is 3 mod 4), values clamped as the processor's uint8 resize saturates them.
        x = resize_short_center_crop(images, self.resize_size, self.image_size, offsets="floor")
        return normalize(x.clamp(0.0, 1.0), self.mean, self.std)

    def embed_images(self, pixels: Tensor) -> Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items()}
        return _features(self.model.get_text_features(**tok))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "hf_clip",
            "key": self.key,
            "source": self.source,
            "weights_ref": self.weights_ref,
            "model_config": self.model.config.to_dict(),
            "max_length": self.max_length,
        }
