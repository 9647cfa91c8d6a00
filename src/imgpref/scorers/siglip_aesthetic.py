"""Aesthetic Predictor V2.5 (discus0434): SigLIP so400m-patch14-384 vision tower + an MLP on the L2-normalised
pooled embedding. Weights AGPL-3.0 (loading logs it once per process).

Reference: `aesthetic_predictor_v2_5/siglip_v2_5.py`: `SiglipVisionModel` (from google/siglip-so400m-patch14-384),
its `SiglipImageProcessor` (resize to 384 x 384, bicubic, rescale, mean = std = 0.5), `pooler_output / norm`,
then `scoring_head`: Linear(1152, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout,
Linear(64, 16), Dropout, Linear(16, 1), no activations; the head file is `aesthetic_predictor_v2_5.pth`
(state dict keys `scoring_head.N.*`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from imgpref.data.images import to_rgb
from imgpref.scorers.backbones.resize import normalize
from imgpref.scorers.base import Backbone, Head
from imgpref.scorers.heads import _normalize, register_head
from imgpref.scorers.registry import LoadOptions
from imgpref.scorers.weights import find_in_folder, hf_cache_dir, hf_snapshot, load_torch_state_dict, missing

SIGLIP_REPO = "google/siglip-so400m-patch14-384"
HEAD_FILE = "aesthetic_predictor_v2_5.pth"
WHERE = (f"get {HEAD_FILE} from github.com/discus0434/aesthetic-predictor-v2-5 (models/) and the {SIGLIP_REPO} "
         "files (config.json, model.safetensors, preprocessor_config.json) into one folder, or that repo into the "
         "HF cache")


class SiglipVisionBackbone(Backbone):
    """transformers `SiglipVisionModel` + `SiglipImageProcessor`; embedding = `pooler_output` (not normalised)."""

    has_text = False

    def __init__(self, model: nn.Module, processor: Any, key: str, weights_ref: dict | None = None):
        super().__init__()
        self.model = model.eval()
        self.processor = processor
        self.key = key
        self.weights_ref = weights_ref
        self.embed_dim = int(model.config.hidden_size)
        size = processor.size
        self.image_size = int(size["height"] if isinstance(size, dict) else getattr(size, "height"))
        self.mean = tuple(float(m) for m in processor.image_mean)
        self.std = tuple(float(s) for s in processor.image_std)

    def preprocess(self, image: Image.Image) -> Tensor:
        return self.processor(images=to_rgb(image), return_tensors="pt")["pixel_values"][0]

    def pixels_to_input(self, images: Tensor) -> Tensor:
        s = self.image_size
        x = images if tuple(images.shape[-2:]) == (s, s) else \
            F.interpolate(images, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
        return normalize(x.clamp(0, 1), self.mean, self.std)

    def embed_images(self, pixels: Tensor) -> Tensor:
        return self.model(pixel_values=pixels.to(self.device)).pooler_output


@register_head("aesthetic_v2_5")
class AestheticV25Head(Head):
    """The V2.5 MLP (module `scoring_head`, as published) on the L2-normalised pooled SigLIP embedding."""

    def __init__(self, input_dim: int = 1152):
        super().__init__()
        self.input_dim = int(input_dim)
        self.scoring_head = nn.Sequential(
            nn.Linear(self.input_dim, 1024), nn.Dropout(0.5), nn.Linear(1024, 128), nn.Dropout(0.5),
            nn.Linear(128, 64), nn.Dropout(0.5), nn.Linear(64, 16), nn.Dropout(0.2), nn.Linear(16, 1),
        )

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        return self.scoring_head(_normalize(img_emb)).squeeze(-1)

    def describe(self) -> dict[str, Any]:
        return {"type": "aesthetic_v2_5", "input_dim": self.input_dim}


def _siglip_folder(opts: LoadOptions) -> Path:
    w = opts.weights
    if w is not None and w.is_dir() and (w / "config.json").is_file():
        return w
    snap = hf_snapshot(SIGLIP_REPO, required=["config.json", "preprocessor_config.json"])
    if snap is None:
        where = f"{w} and " if w is not None else ""
        raise missing("aesthetic-v2.5", f"{SIGLIP_REPO} (config.json, model.safetensors, preprocessor_config.json)",
                      f"{where}the Hugging Face cache {hf_cache_dir()}", WHERE)
    return snap


def head_file(opts: LoadOptions) -> Path:
    w = opts.weights
    path = None
    if w is not None:
        path = find_in_folder(w, [HEAD_FILE]) if w.is_dir() else (w if w.is_file() else None)
    if path is None:
        raise missing("aesthetic-v2.5", HEAD_FILE, str(w) if w is not None else "nowhere (the head is published on "
                      "GitHub, not the HF hub; pass its folder)", WHERE)
    return path


def siglip_key(opts: LoadOptions) -> str:
    w = opts.weights
    return "siglip-aesthetic-v2.5" + (f":{w.resolve()}" if w is not None and (w / "config.json").is_file() else "")


def siglip_backbone(opts: LoadOptions) -> SiglipVisionBackbone:
    from transformers import SiglipImageProcessor, SiglipVisionModel

    head_file(opts)  # fail on a missing head before loading a 400M-parameter tower
    folder = _siglip_folder(opts)
    from transformers.utils import logging as hf_logging

    # the published repo is a full SiglipModel: its text tower's keys are expected leftovers, not news
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = SiglipVisionModel.from_pretrained(str(folder))
    finally:
        hf_logging.set_verbosity(previous)
    processor = SiglipImageProcessor.from_pretrained(str(folder))
    ref = {"source": "hf", "repo": SIGLIP_REPO} if folder != opts.weights else None
    return SiglipVisionBackbone(model, processor, key=siglip_key(opts), weights_ref=ref)


def aesthetic_v25_head(backbone: SiglipVisionBackbone, opts: LoadOptions) -> AestheticV25Head:
    from imgpref.scorers.metadata import notice_licence

    path = head_file(opts)
    sd = load_torch_state_dict(path)
    if "scoring_head.0.weight" not in sd:
        raise ValueError(f"{path} is not an aesthetic predictor v2.5 head (no 'scoring_head.0.weight'; keys: "
                         f"{', '.join(list(sd)[:4])})")
    head = AestheticV25Head(int(sd["scoring_head.0.weight"].shape[1]))
    if head.input_dim != backbone.embed_dim:
        raise ValueError(f"{path} expects {head.input_dim}-d embeddings but the SigLIP tower gives "
                         f"{backbone.embed_dim}")
    head.load_state_dict(sd, strict=True)
    notice_licence("aesthetic-v2.5")
    return head.eval()
