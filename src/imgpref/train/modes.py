"""Which parameters of a Scorer train: `head`, `last_n`, `lora`, `full`.

- head:   backbone frozen; only the head trains. With an embedding cache the backbone runs once, before training.
- last_n: HPSv2-style; the last `vision_blocks` transformer blocks of the image tower (plus its final norm and
          projection) and the last `text_layers` layers of the text tower (plus final norm and projection) train.
- lora:   peft LoRA adapters on the attention projections of the CLIP towers; base weights frozen. Adapters are
          merged into the weights before the scorer folder is written (`merge_lora`).
- full:   everything trains, except the text tower of a prompt-free scorer (unused, so it would only hold
          optimizer state and break DDP's "every parameter gets a gradient" check).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from imgpref.scorers.base import Scorer

MODES = ("head", "last_n", "lora", "full")
# the options each mode reads besides `name` (head's are read by imgpref.train.run.train); the recipe checker
# (imgpref.recipes) accepts exactly these
MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "head": ("cache_embeddings", "cache_dir"),
    "last_n": ("vision_blocks", "text_layers"),
    "lora": ("r", "alpha", "dropout"),
    "full": (),
}


def _towers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module], list[nn.Module]]:
    """(vision blocks, vision tail modules/params holders, text layers, text tail) of an open_clip or HF CLIP."""
    if hasattr(model, "visual") and hasattr(model.visual, "transformer"):  # open_clip CLIP
        v = model.visual
        vblocks = list(v.transformer.resblocks)
        vtail = [m for m in (getattr(v, "ln_post", None), getattr(v, "attn_pool", None)) if m is not None]
        tblocks = list(model.transformer.resblocks) if hasattr(model, "transformer") else []
        ttail = [m for m in (getattr(model, "ln_final", None),) if m is not None]
        return vblocks, vtail, tblocks, ttail
    if hasattr(model, "vision_model") and hasattr(model, "text_model"):  # transformers CLIPModel
        vblocks = list(model.vision_model.encoder.layers)
        vtail = [model.vision_model.post_layernorm, model.visual_projection]
        tblocks = list(model.text_model.encoder.layers)
        ttail = [model.text_model.final_layer_norm, model.text_projection]
        return vblocks, vtail, tblocks, ttail
    raise ValueError(f"mode needs a CLIP backbone (open_clip or transformers); got {type(model).__name__}")


def _text_params(model: nn.Module) -> list[nn.Parameter]:
    """Parameters used only by the text tower (and the logit scale, unused by every imgpref head)."""
    if hasattr(model, "visual"):
        return [p for n, p in model.named_parameters() if not n.startswith("visual.")]
    if hasattr(model, "text_model"):
        return [p for n, p in model.named_parameters() if n.startswith(("text_model.", "text_projection"))
                or n == "logit_scale"]
    return []


def _set(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def apply_mode(scorer: Scorer, mode: dict[str, Any] | str) -> dict[str, Any]:
    """Set `requires_grad` on `scorer`'s parameters for `mode` (a name or {"name": ..., options}).

    Options (`MODE_OPTIONS`): last_n: vision_blocks (default 20), text_layers (default 11); lora: r (8), alpha (16),
    dropout (0.0), adapting the attention of the towers that train; head: cache_embeddings (true), cache_dir (null)
    are read by `imgpref.train.run.train`
    (embeddings computed once by `imgpref.train.embed_cache.attach_features`). Returns the normalised mode dict.
    Raises ValueError for unknown modes / options.
    """
    mode = {"name": mode} if isinstance(mode, str) else dict(mode)
    name = mode.get("name", "full")
    if name not in MODES:
        raise ValueError(f"unknown training mode {name!r}; use one of {', '.join(MODES)}")
    backbone, head = scorer.backbone, scorer.head
    model = getattr(backbone, "model", None)
    _set(head.parameters(), True)
    uses_text = bool(getattr(head, "needs_text", False))
    if name == "head":
        _set(backbone.parameters(), False)
    elif name == "full":
        _set(backbone.parameters(), True)
        if model is not None and not uses_text:
            _set(_text_params(model), False)
    elif name == "last_n":
        if model is None:
            raise ValueError("mode last_n needs a CLIP backbone with a `.model`")
        nv, nt = int(mode.setdefault("vision_blocks", 20)), int(mode.setdefault("text_layers", 11))
        if nv < 0 or nt < 0:
            raise ValueError(f"last_n needs vision_blocks >= 0 and text_layers >= 0; got {nv}, {nt}")
        _set(backbone.parameters(), False)
        vblocks, vtail, tblocks, ttail = _towers(model)
        train = (vblocks[len(vblocks) - nv:] if nv else []) + (vtail if nv else [])
        if uses_text:
            train += (tblocks[len(tblocks) - nt:] if nt else []) + (ttail if nt else [])
        for m in train:
            _set(m.parameters(), True)
        if nv and hasattr(model, "visual") and isinstance(getattr(model.visual, "proj", None), nn.Parameter):
            model.visual.proj.requires_grad_(True)
        if uses_text and nt and isinstance(getattr(model, "text_projection", None), nn.Parameter):
            model.text_projection.requires_grad_(True)
    else:  # lora
        if model is None:
            raise ValueError("mode lora needs a CLIP backbone with a `.model`")
        _inject_lora(backbone, mode, uses_text)
    return mode


def _inject_lora(backbone: nn.Module, mode: dict[str, Any], uses_text: bool) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    model = backbone.model
    r, alpha = int(mode.setdefault("r", 8)), int(mode.setdefault("alpha", 16))
    dropout = float(mode.setdefault("dropout", 0.0))
    if hasattr(model, "visual"):
        # open_clip attention is nn.MultiheadAttention (fused in_proj + out_proj); peft adapts it as a whole
        targets = r"visual\.transformer\.resblocks\.\d+\.attn"
        if uses_text:
            targets = r"(visual\.)?transformer\.resblocks\.\d+\.attn"
    else:
        tower = "(vision_model|text_model)" if uses_text else "vision_model"
        targets = tower + r"\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
    for p in backbone.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    backbone.model = inject_adapter_in_model(config, model)
    for n, p in backbone.model.named_parameters():
        if "lora_" in n:
            p.requires_grad_(True)


def merge_lora(scorer: Scorer) -> bool:
    """Fold LoRA adapters into the base weights and remove the wrappers (so a plain scorer folder can be saved).

    Returns True when adapters were merged."""
    from peft.tuners.lora import LoraLayer

    model = getattr(scorer.backbone, "model", None)
    if model is None:
        return False
    found = False
    while True:  # outermost adapter first; peft nests them (open_clip attention wraps its out_proj too)
        outer = next(((name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)), None)
        if outer is None:
            break
        name, m = outer
        if not getattr(m, "merged", False):
            m.merge()
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, m.get_base_layer())
        found = True
    if found:
        _restore_parameters(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return bool(found)


def _restore_parameters(model: nn.Module) -> None:
    """peft's MultiheadAttention adapter swaps weights for plain tensors while active; merged, they must be
    Parameters again or they vanish from the state dict (and from the saved scorer folder)."""
    import torch

    for m in model.modules():
        for attr in ("in_proj_weight", "in_proj_bias", "weight", "bias"):
            v = m.__dict__.get(attr)
            if torch.is_tensor(v) and attr not in m._parameters:
                del m.__dict__[attr]
                m.register_parameter(attr, nn.Parameter(v.detach().clone()))


def trainable_parameters(module: nn.Module) -> int:
    """Number of parameters with requires_grad."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
