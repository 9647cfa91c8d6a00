"""Loading the diffusers pipeline an alignment run starts from: "tiny", a local folder, or a hub id (offline-safe)."""
from __future__ import annotations

import os
from pathlib import Path

TINY_SPECS = {"tiny": "sd15", "tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}
TINY_FLOW_SPECS = {"tiny-sd3": "sd3", "tiny-flux": "flux"}  # flow-matching, built by imgpref.align.tiny_flow


def is_sdxl(pipe) -> bool:
    """True for SDXL-style pipelines (two text encoders, add_time_ids)."""
    return getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__


def load_pipeline(spec: str | os.PathLike, *, seed: int = 0, torch_dtype=None, prediction_type: str | None = None):
    """Return a diffusers pipeline for `spec`.

    spec: "tiny" / "tiny-sd15" / "tiny-sdxl" (built in code, `imgpref.align.tiny`, seeded by `seed`), a folder
    written by `save_pretrained`, or a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5" (read from
    the local Hugging Face cache; with no network and no cached copy the error names the model and how to
    provide it). `prediction_type` overrides the scheduler's (e.g. "v_prediction").
    """
    from diffusers import DiffusionPipeline

    spec_s = str(spec)
    if spec_s in TINY_SPECS:
        from imgpref.align.tiny import build_tiny_pipeline

        return build_tiny_pipeline(seed=seed, kind=TINY_SPECS[spec_s], prediction_type=prediction_type or "epsilon")
    if spec_s in TINY_FLOW_SPECS:
        from imgpref.align.tiny_flow import build_tiny_flow_pipeline

        return build_tiny_flow_pipeline(TINY_FLOW_SPECS[spec_s], seed=seed)
    path = Path(spec_s).expanduser()
    local = path.is_dir()
    if not local and (spec_s.startswith((".", "/", "~")) or spec_s.count("/") != 1):
        raise FileNotFoundError(
            f"pipeline {spec_s!r} is not a folder and not a hub id 'org/name'; give a folder written by "
            "save_pretrained, a hub id, or 'tiny' / 'tiny-sdxl' for the offline test pipelines"
        )
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        pipe = DiffusionPipeline.from_pretrained(str(path) if local else spec_s, **kwargs)
    except (OSError, ValueError) as exc:
        if local:
            raise FileNotFoundError(f"could not load a diffusers pipeline from folder {path}: {exc}") from exc
        raise FileNotFoundError(
            f"could not load pipeline {spec_s!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "imgpref downloads nothing by itself: either give a local folder (pipeline=/path/to/model, written by "
            f"save_pretrained), or put the model in the Hugging Face cache first (`huggingface-cli download "
            f"{spec_s}` on a machine with network, then copy ~/.cache/huggingface or set HF_HOME); set "
            "HF_HUB_OFFLINE=1 to read the cache without network access."
        ) from exc
    if getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is None:
        raise ValueError(f"pipeline {spec_s!r} has no UNet or transformer ({type(pipe).__name__}); an SD1.5, SDXL, "
                         "SD3/SD3.5 or FLUX pipeline is needed")
    if prediction_type is not None and getattr(pipe, "unet", None) is None:
        raise ValueError(f"prediction_type applies to UNet pipelines only; {type(pipe).__name__} is flow-matching")
    if prediction_type is not None and pipe.scheduler.config.prediction_type != prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction_type)
    if hasattr(pipe, "safety_checker"):
        pipe.safety_checker = None
    return pipe
