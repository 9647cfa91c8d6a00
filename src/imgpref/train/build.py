"""Build the Scorer a recipe starts from (the `scorer:` section of a training YAML).

    scorer:
      name: my-scorer                      # name stored in the scorer folder
      from: null                           # start from a preset name or scorer folder instead (load_scorer),
                                           #   optionally with a new `head:` (fresh weights)
      needs_prompt: false                  # prompt-conditioned (T2I) scorer
      init_seed: 0                         # seed for random initial weights (backbone from scratch, head)
      backbone:
        type: open_clip                    # or hf_clip
        model_name: ViT-H-14               # open_clip architecture name
        model_config: null                 # a dict: registered with open_clip as JSON under model_name
        pretrained: null                   # open_clip tag (weights from the open_clip/HF cache), null = random
        weights: null                      # a local open_clip weights file instead of the cache
        resize_mode: center_crop           # or pad (HPS style)
        # hf_clip: source: <folder with config.json + weights>, processor: <folder> (defaults to source)
      head: {type: linear, normalize: true}   # any registered head; input_dim is filled in from the backbone
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo

# the keys build_scorer / build_backbone read (checked by imgpref.recipes before anything is built)
SCORER_KEYS = ("name", "description", "from", "needs_prompt", "init_seed", "backbone", "head")
BACKBONE_KEYS: dict[str, tuple[str, ...]] = {
    "open_clip": ("type", "model_name", "model_config", "pretrained", "weights", "resize_mode"),
    "hf_clip": ("type", "source", "processor"),
}
# with `from:`, the loaded scorer brings these; a recipe that also sets them would be silently ignored
FROM_IGNORES = ("backbone", "needs_prompt", "description")


def build_backbone(cfg: dict[str, Any]) -> Backbone:
    """An open_clip or transformers CLIP backbone from a recipe's `scorer.backbone` section."""
    cfg = dict(cfg)
    kind = cfg.get("type", "open_clip")
    if kind == "open_clip":
        import open_clip

        from imgpref.scorers import published
        from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
        from imgpref.scorers.registry import LoadOptions
        from imgpref.scorers.tiny import register_open_clip_config

        name = cfg.get("model_name")
        if not name:
            raise ValueError("scorer.backbone.model_name is required for an open_clip backbone (e.g. ViT-H-14)")
        if cfg.get("model_config") is not None:
            from imgpref.scorers.tiny import _registered

            known = open_clip.get_model_config(name)
            if known is not None and name not in _registered and known != cfg["model_config"]:
                raise ValueError(f"scorer.backbone.model_name {name!r} is an open_clip architecture with another "
                                 "config; give the custom model_config a new name")
            register_open_clip_config(name, copy.deepcopy(cfg["model_config"]))
        elif open_clip.get_model_config(name) is None:
            raise ValueError(f"unknown open_clip architecture {name!r}; see open_clip.list_models() or give "
                             "scorer.backbone.model_config")
        tag = cfg.get("pretrained")
        mode = cfg.get("resize_mode", "center_crop")
        if tag or cfg.get("weights"):
            extra = {"arch": name}
            if cfg.get("weights"):
                extra["backbone_weights"] = str(cfg["weights"])
            bb = published.open_clip_pretrained_backbone(f"backbone {name}", name, str(tag or "local"),
                                                         LoadOptions(extra=extra), folder_ok=False)
            if mode != bb.resize_mode:
                bb = OpenClipBackbone.from_model(bb.model, name, resize_mode=mode, weights_ref=bb.weights_ref)
            return bb
        model = open_clip.create_model(name, pretrained=None)
        return OpenClipBackbone.from_model(model, name, resize_mode=mode, key=f"open_clip:{name}:scratch")
    if kind == "hf_clip":
        from imgpref.scorers import published

        src = cfg.get("source")
        if not src:
            raise ValueError("scorer.backbone.source (a local transformers CLIP folder) is required for hf_clip")
        model_dir = Path(src).expanduser()
        if not model_dir.is_dir():
            raise FileNotFoundError(f"scorer.backbone.source {src!r} is not a folder; download the CLIP model "
                                    "(e.g. huggingface-cli download laion/CLIP-ViT-H-14-laion2B-s32B-b79K) "
                                    "and give its local path")
        proc = Path(cfg.get("processor") or model_dir).expanduser()
        return published.load_hf_clip(model_dir, proc, key=f"hf_clip:{model_dir.resolve()}")
    raise ValueError(f"unknown scorer.backbone.type {kind!r}; use open_clip or hf_clip")


def build_head_for(backbone: Backbone, cfg: dict[str, Any], needs_prompt: bool) -> Head:
    """A registered head from `cfg` with input_dim taken from the backbone."""
    from imgpref.scorers.heads import build_head

    cfg = dict(cfg or {"type": "linear"})
    if cfg.get("type") == "cosine":
        return build_head(cfg)
    cfg.setdefault("input_dim", int(backbone.embed_dim))
    if needs_prompt and cfg.get("type") in ("linear", "mlp"):
        cfg.setdefault("prompt", "concat")
    return build_head(cfg)


def build_scorer(cfg: dict[str, Any]) -> Scorer:
    """The Scorer a training recipe starts from (see the module docstring)."""
    cfg = dict(cfg or {})
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    if cfg.get("from"):
        from imgpref.scorers.registry import load_scorer

        scorer = load_scorer(cfg["from"])
        # what is trained here is no longer the published reference: it must not claim the reference's name or
        # run in its precision (`imgpref.scorers.fidelity`); the caption prefix is kept (it is how it embeds text)
        for k in ("reference", "reference_precision"):
            scorer.info.extra.pop(k, None)
        if cfg.get("head"):
            scorer.head = build_head_for(scorer.backbone, cfg["head"], scorer.needs_prompt)
        if cfg.get("name"):
            scorer.info.name = str(cfg["name"])
        return scorer
    if "backbone" not in cfg:
        raise ValueError("the recipe's scorer section needs `backbone:` (or `from:` a preset / scorer folder)")
    backbone = build_backbone(cfg["backbone"])
    needs_prompt = bool(cfg.get("needs_prompt", False))
    head = build_head_for(backbone, cfg.get("head") or {"type": "linear"}, needs_prompt)
    info = ScorerInfo(name=str(cfg.get("name", "trained-scorer")), higher_is_better=True,
                      needs_prompt=needs_prompt or bool(getattr(head, "needs_text", False)),
                      description=str(cfg.get("description", "trained with imgpref train")))
    return Scorer(backbone, head, info)
