"""The committed world base: one fp16 safetensors pack (CLIP + VAE + UNet) in the package, loaded in seconds.

`imgpref world pretrain --out DIR` rebuilds the models (minutes); `pack_world(DIR)` stores them here as
`pretrained/world_base.safetensors` (float16, the text encoder stored once as the CLIP's text tower) with their
configs in `pretrained/world_base.json`, so tests and the demo never retrain. `load_world()` rebuilds the
pipeline and CLIP from the pack (float32); `world_dirs()` materialises them once as `save_pretrained` folders
under `$IMGPREF_CACHE/world/<digest>` (default `~/.cache/imgpref/world/<digest>`) for path-based recipes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

PACK_DIR = Path(__file__).resolve().parent / "pretrained"
PACK_WEIGHTS = "world_base.safetensors"
PACK_META = "world_base.json"


def pack_world(pipe, clip, dest: str | os.PathLike = PACK_DIR, report: dict[str, Any] | None = None) -> Path:
    """Write the pack (fp16 weights + configs + `report`) of a pretrained world into `dest`."""
    from safetensors.torch import save_file

    from imgpref.atomic import atomic_write

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, module in (("clip", clip), ("vae", pipe.vae), ("unet", pipe.unet)):
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().to(torch.float16).contiguous()
    meta = {"clip": clip.config.to_dict(), "vae": dict(pipe.vae.config), "unet": dict(pipe.unet.config),
            "scheduler": dict(pipe.scheduler.config), "report": report or {}}
    with atomic_write(dest / PACK_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    os.chmod(dest / PACK_WEIGHTS, 0o644)  # package data: readable by everyone, like the other files
    with atomic_write(dest / PACK_META) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1, default=str))
    return dest


def _pack_files(pack: str | os.PathLike) -> tuple[Path, Path]:
    pack = Path(pack)
    weights, meta = pack / PACK_WEIGHTS, pack / PACK_META
    if not weights.is_file() or not meta.is_file():
        raise FileNotFoundError(
            f"no world base pack in {pack} (expected {PACK_WEIGHTS} and {PACK_META}); build one with "
            "`imgpref world pretrain --out DIR --pack`")
    return weights, meta


def _clean_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def load_world(pack: str | os.PathLike = PACK_DIR) -> tuple[Any, Any]:
    """(StableDiffusionPipeline, CLIPModel) rebuilt from a pack, in float32 and eval mode."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPConfig, CLIPModel

    from imgpref.world.base_model import assemble_pipeline
    from imgpref.world.clip_pretrain import text_encoder_from_clip

    weights, meta_file = _pack_files(pack)
    meta = json.loads(meta_file.read_text())
    sd = load_file(str(weights))
    parts = {p: {k[len(p) + 1:]: v.float() for k, v in sd.items() if k.startswith(p + ".")} for p in ("clip", "vae", "unet")}
    clip = CLIPModel(CLIPConfig(**_clean_config(meta["clip"])))
    clip.load_state_dict(parts["clip"])
    vae = AutoencoderKL.from_config(_clean_config(meta["vae"]))
    vae.load_state_dict(parts["vae"])
    unet = UNet2DConditionModel.from_config(_clean_config(meta["unet"]))
    unet.load_state_dict(parts["unet"])
    pipe = assemble_pipeline(text_encoder_from_clip(clip), vae.requires_grad_(False), unet)
    pipe.scheduler = DDIMScheduler.from_config(_clean_config(meta["scheduler"]))
    return pipe, clip.eval()


def pack_digest(pack: str | os.PathLike = PACK_DIR) -> str:
    """First 16 hex digits of the SHA-256 of the pack's weights (names its cache folder)."""
    weights, _ = _pack_files(pack)
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


# Libraries whose versions decide trained weights too: initialisation (diffusers, transformers models), the
# training loop (Lightning) and the kernels (torch).
WEIGHT_LIBRARIES = ("torch", "diffusers", "transformers", "lightning")


def code_digest(modules: Sequence[str]) -> str:
    """SHA-256 (16 hex digits) of the source bytes of `modules` and the versions of `WEIGHT_LIBRARIES`. A cache
    of weights that code trains must be keyed on it: an edit to that code or another library release can change
    the weights."""
    import importlib
    import inspect
    from importlib.metadata import version

    h = hashlib.sha256(" ".join(f"{lib}=={version(lib)}" for lib in WEIGHT_LIBRARIES).encode())
    for name in modules:
        source = inspect.getsourcefile(importlib.import_module(name))
        if source is None:
            raise ValueError(f"no source file for module {name!r}; a weights cache key needs the code's bytes")
        h.update(name.encode() + b"\0" + Path(source).read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    root = os.environ.get("IMGPREF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imgpref")
    return Path(root) / "world"


def world_dirs(pack: str | os.PathLike = PACK_DIR, cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """{"pipeline": DIR, "clip": DIR}: `save_pretrained` folders of the pack, written once per digest.

    "pipeline" is a `--pipeline` / recipe `pipeline:` folder for `imgpref align`; "clip" is an `hf_clip` backbone
    `source:` for `imgpref train`.
    """
    from imgpref.world.base_model import save_world

    root = Path(cache) if cache is not None else cache_root()
    final = root / pack_digest(pack)
    materialise_once(final, lambda tmp: save_world(*load_world(pack), tmp),
                     marker=("pipeline/model_index.json", "clip/config.json"))
    return {"pipeline": final / "pipeline", "clip": final / "clip"}


def materialise_once(final: str | os.PathLike, write: Callable[[Path], Any],
                     marker: str | Sequence[str]) -> Path:
    """`final`, written by `write(tmp_folder)` unless every `marker` file (relative to it) already exists.

    The folder is written beside `final` and renamed into place, so a reader sees no folder or the whole
    folder, never half of it; an incomplete `final` (an interrupted earlier write) is replaced.
    """
    final = Path(final)
    markers = [marker] if isinstance(marker, str) else list(marker)
    if all((final / m).is_file() for m in markers):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished first: keep its (identical) folder
        shutil.rmtree(tmp, ignore_errors=True)
    return final
