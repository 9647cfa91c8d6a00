"""Export of an aligned UNet or flow transformer in the formats plain diffusers reads, and loading it back.

LoRA: `DIR/pytorch_lora_weights.safetensors` (diffusers key format, adapter config as metadata; keys prefixed
`unet.` for SD1.5 / SDXL and `transformer.` for SD3 / FLUX), loadable with `pipe.load_lora_weights(DIR)`.
Full fine-tune: `DIR/unet/` (or `DIR/transformer/`) via `save_pretrained`, loadable with
`UNet2DConditionModel.from_pretrained(DIR, subfolder="unet")` (or the transformer class, subfolder "transformer"). Both also get `DIR/imgpref_align.yaml` naming the
base pipeline, so `load_aligned_pipeline(DIR)` can rebuild the whole thing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from imgpref.atomic import atomic_write

ALIGN_META = "imgpref_align.yaml"
LORA_FILE = "pytorch_lora_weights.safetensors"


def export_aligned(module, out_dir: str | os.PathLike, *, use_ema: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Write the module's trained weights (EMA weights when the module keeps them and `use_ema`) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hp = dict(module.hparams)
    meta = {
        "format": "lora" if module.lora_config is not None else "full",
        "base_pipeline": str(hp.get("pipeline")),
        "base_seed": int(hp.get("seed", 0)),
        "prediction_type": module.noise_scheduler.config.get("prediction_type"),
        "sdxl": bool(module.sdxl),
        "flow": module.flow,
        "method": module.method,
        "beta": module.beta,
        "ema": bool(use_ema and module._ema is not None),
        "hparams": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()},
    }
    if extra:
        meta.update(extra)
    with module.ema_weights() if use_ema else _null():
        if module.lora_config is not None:
            _save_lora(module, out)
        else:
            module.denoiser.save_pretrained(out / ("transformer" if module.flow else "unet"), safe_serialization=True)
    with atomic_write(out / ALIGN_META) as tmp:
        tmp.write_text(yaml.safe_dump(meta, sort_keys=False))
    return out


def _save_lora(module, out: Path) -> None:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft.utils import get_peft_model_state_dict

    # Saved in peft's own key format (lora_A / lora_B), which `load_lora_weights` reads as is. Converting with
    # `convert_state_dict_to_diffusers` renames only the attention projections (to_q.lora.down, ...) and leaves
    # conv / ff / proj targets as lora_A / lora_B; diffusers 0.42 then loads only half of such a mixed file.
    net = module.denoiser
    state = get_peft_model_state_dict(net)
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    # The adapter config travels as metadata so lora_alpha != rank is restored exactly on load.
    meta = net.peft_config["default"].to_dict()
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
    if module.flow:
        cls = FluxPipeline if module.flow == "flux" else StableDiffusion3Pipeline
        cls.save_lora_weights(out, transformer_lora_layers=state, safe_serialization=True,
                              transformer_lora_adapter_metadata=meta)
        return
    cls = StableDiffusionXLPipeline if module.sdxl else StableDiffusionPipeline
    cls.save_lora_weights(out, unet_lora_layers=state, safe_serialization=True, unet_lora_adapter_metadata=meta)


def read_align_meta(aligned_dir: str | os.PathLike) -> dict[str, Any]:
    """The `imgpref_align.yaml` of an export folder (or of `<run>/aligned`)."""
    d = resolve_aligned_dir(aligned_dir)
    return yaml.safe_load((d / ALIGN_META).read_text()) or {}


def resolve_aligned_dir(aligned_dir: str | os.PathLike) -> Path:
    """Accept either the export folder itself or an `imgpref align` run folder holding `aligned/`."""
    d = Path(aligned_dir)
    for cand in (d, d / "aligned"):
        if any((cand / f).is_file() for f in (LORA_FILE, "unet/config.json", "transformer/config.json")):
            return cand
    raise FileNotFoundError(
        f"{d} holds no aligned weights ({LORA_FILE} or unet/config.json); give the folder written by "
        "`imgpref align` (its aligned/ subfolder) or by imgpref.align.export.export_aligned"
    )


def load_aligned_pipeline(aligned_dir: str | os.PathLike, base: Any = None, *, torch_dtype=None):
    """Base pipeline + aligned weights, with plain diffusers calls (`load_lora_weights` or a UNet swap).

    base: a pipeline object, a spec for `load_pipeline` ("tiny", folder, hub id), or None to use the base named
    in the export's `imgpref_align.yaml`.
    """
    from imgpref.align.pipeline_io import load_pipeline

    d = resolve_aligned_dir(aligned_dir)
    meta = yaml.safe_load((d / ALIGN_META).read_text()) if (d / ALIGN_META).is_file() else {}
    if base is None:
        if "base_pipeline" not in meta:
            raise ValueError(f"{d} does not name its base pipeline ({ALIGN_META} missing); pass base=...")
        base = meta["base_pipeline"]
    pipe = base if not isinstance(base, (str, os.PathLike)) else load_pipeline(
        base, seed=int(meta.get("base_seed", 0)), torch_dtype=torch_dtype,
        prediction_type=meta.get("prediction_type"),
    )
    if (d / LORA_FILE).is_file():
        # weight_name: diffusers 0.34 refuses a folder without it when HF_HUB_OFFLINE is set
        pipe.load_lora_weights(str(d), weight_name=LORA_FILE)
    elif (d / "transformer" / "config.json").is_file():
        cls = type(pipe.transformer)
        net = cls.from_pretrained(str(d), subfolder="transformer", torch_dtype=pipe.transformer.dtype)
        pipe.register_modules(transformer=net.to(pipe.transformer.device))
    else:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(d), subfolder="unet", torch_dtype=pipe.unet.dtype)
        pipe.register_modules(unet=unet.to(pipe.unet.device))
    return pipe


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False
