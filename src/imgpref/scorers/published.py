"""Loading code for the published scorers: PickScore, HPSv2 / v2.1, LAION aesthetic v2, CLIPScore.

Each loader takes `LoadOptions` (weights path, device, dtype, `extra` overrides) and returns a Backbone; the
heads are built in `presets.py`. `extra` may hold `arch=` (an open_clip model name) or `model_config=` (an
open_clip JSON config dict) to read a checkpoint of the published layout at another size: tests build tiny
checkpoints this way; the published checkpoints need no override.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from imgpref.scorers.backbones.hf_clip_backbone import HFClipBackbone
from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
from imgpref.scorers.registry import LoadOptions
from imgpref.scorers.weights import (find_in_folder, hf_cache_dir, hf_file, hf_snapshot, load_torch_state_dict,
                                     missing)

PICKSCORE_REPO = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"hpsv2": "HPS_v2_compressed.pt", "hpsv2.1": "HPS_v2.1_compressed.pt"}
LAION_HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
# The head is published in github.com/christophschuhmann/improved-aesthetic-predictor; this HF mirror is only
# consulted when `head_repo=` is not given and the file is already in the local HF cache (or online).
LAION_HEAD_REPO = "camenduru/improved-aesthetic-predictor"
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pt")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


# --- architecture overrides ----------------------------------------------------------------------------------
def open_clip_arch(opts: LoadOptions, default: str) -> str:
    """The open_clip model name to build: `arch=`, or a `model_config=` dict registered under a content name."""
    cfg = opts.extra.get("model_config")
    if cfg is not None:
        from imgpref.scorers.tiny import register_open_clip_config

        if isinstance(cfg, (str, Path)):
            cfg = json.loads(Path(cfg).read_text())
        name = "imgpref-cfg-" + hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]
        return register_open_clip_config(name, cfg)
    arch = str(opts.extra.get("arch", default))
    if arch == "imgpref-tiny-vit":
        from imgpref.scorers.tiny import register_open_clip_config

        register_open_clip_config()
    return arch


def _arch_tag(arch: str, default: str) -> str:
    return "" if arch == default else f":{arch}"


def _open_clip_model(arch: str, *, pretrained: str | None = None, quick_gelu: bool = False) -> torch.nn.Module:
    import open_clip

    if open_clip.get_model_config(arch) is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models() "
                         "(or pass model_config=<dict> for a custom one)")
    import logging

    # open_clip warns "No pretrained weights loaded ... initialized randomly": we load them right after
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=quick_gelu)
    finally:
        logging.disable(previous)
    return model.eval()


def _first_error(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:2])[:300]


# buffers that some open_clip versions save and others rebuild, and the metadata that OpenAI's CLIP
# checkpoints (TorchScript `ViT-L-14.pt`, ...) keep beside the weights and open_clip's
# `build_model_from_openai_state_dict` drops: harmless when extra
_TOLERATED_EXTRA = ("attn_mask", "position_ids", "input_resolution", "context_length", "vocab_size")


def load_open_clip_state(model: torch.nn.Module, sd: dict[str, Any], path: Path, arch: str) -> None:
    """Load `sd` into `model`: every model parameter must be present with its shape (ValueError otherwise)."""
    try:
        res = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ValueError(f"{path} does not match open_clip {arch}: {_first_error(e)}") from e
    extra = [k for k in res.unexpected_keys if not k.endswith(_TOLERATED_EXTRA)]
    if res.missing_keys or extra:
        raise ValueError(f"{path} does not match open_clip {arch}: missing keys {res.missing_keys[:4]}, "
                         f"unexpected keys {extra[:4]} (is it a checkpoint of another architecture?)")


# --- PickScore -------------------------------------------------------------------------------------------------
def _pickscore_folders(opts: LoadOptions) -> tuple[Path, Path]:
    if opts.weights is not None:
        w = opts.weights
        if not w.is_dir() or not (w / "config.json").is_file():
            raise missing("pickscore", "config.json of the CLIP model", str(w),
                          "PATH must be a folder with config.json, model weights, preprocessor_config.json "
                          "and tokenizer files")
        proc = w if (w / "preprocessor_config.json").is_file() else None
        if proc is None:
            proc = hf_snapshot(PICKSCORE_PROCESSOR_REPO, allow_patterns=["*.json", "*.txt"],
                               required=["preprocessor_config.json"])
        if proc is None:
            raise missing("pickscore", "preprocessor_config.json", f"{w} and the Hugging Face cache {hf_cache_dir()} "
                          f"(repo {PICKSCORE_PROCESSOR_REPO})",
                          "copy the processor and tokenizer files of that repo into the weights folder")
        return w, proc
    model_dir = hf_snapshot(PICKSCORE_REPO, required=["config.json"])
    if model_dir is None:
        raise missing("pickscore", f"model {PICKSCORE_REPO} (config.json + model weights)",
                      f"the Hugging Face cache {hf_cache_dir()}")
    proc = hf_snapshot(PICKSCORE_PROCESSOR_REPO, allow_patterns=["*.json", "*.txt"],
                       required=["preprocessor_config.json"])
    if proc is None:
        raise missing("pickscore", f"processor {PICKSCORE_PROCESSOR_REPO} (preprocessor_config.json, tokenizer)",
                      f"the Hugging Face cache {hf_cache_dir()}")
    return model_dir, proc


def load_hf_clip(model_dir: Path, proc_dir: Path, key: str, weights_ref: dict | None = None) -> HFClipBackbone:
    """A transformers CLIP backbone from a model folder and a processor/tokenizer folder."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    if find_in_folder(proc_dir, _TOKENIZER_FILES) is None:
        raise FileNotFoundError(f"no tokenizer files (tokenizer.json or vocab.json + merges.txt) in {proc_dir}")
    model = CLIPModel.from_pretrained(str(model_dir))
    processor = CLIPImageProcessor.from_pretrained(str(proc_dir))
    tokenizer = CLIPTokenizer.from_pretrained(str(proc_dir))
    return HFClipBackbone(model.eval(), processor, tokenizer, key=key, source=str(model_dir), weights_ref=weights_ref)


def pickscore_backbone(opts: LoadOptions) -> HFClipBackbone:
    model_dir, proc_dir = _pickscore_folders(opts)
    ref = None if opts.weights is not None else {"source": "hf", "repo": PICKSCORE_REPO,
                                                  "processor_repo": PICKSCORE_PROCESSOR_REPO}
    return load_hf_clip(model_dir, proc_dir, key=pickscore_key(opts), weights_ref=ref)


def pickscore_key(opts: LoadOptions) -> str:
    return "pickscore" + (f":{opts.weights.resolve()}" if opts.weights is not None else "")


# --- HPSv2 ----------------------------------------------------------------------------------------------------
def hps_checkpoint(version: str, opts: LoadOptions) -> Path:
    fname = HPS_FILES[version]
    if opts.weights is not None:
        w = opts.weights
        path = find_in_folder(w, [fname]) if w.is_dir() else (w if w.is_file() else None)
        if path is None:
            raise missing(version, fname, str(w))
        return path
    path = hf_file(HPS_REPO, fname)
    if path is None:
        raise missing(version, fname, f"the Hugging Face cache {hf_cache_dir()} (repo {HPS_REPO})")
    return path


def hps_backbone(version: str, opts: LoadOptions) -> OpenClipBackbone:
    arch = open_clip_arch(opts, "ViT-H-14")
    path = hps_checkpoint(version, opts)
    model = _open_clip_model(arch)
    load_open_clip_state(model, load_torch_state_dict(path), path, arch)
    ref = None if opts.weights is not None else {"source": "hf", "repo": HPS_REPO, "file": HPS_FILES[version]}
    return OpenClipBackbone.from_model(model, arch, resize_mode="pad", key=hps_key(version, opts), weights_ref=ref)


def hps_key(version: str, opts: LoadOptions) -> str:
    return f"{version}{_arch_tag(open_clip_arch(opts, 'ViT-H-14'), 'ViT-H-14')}"


# --- open_clip with published (pretrained-tag) weights: LAION aesthetic backbone, CLIPScore -------------------
def open_clip_pretrained_backbone(preset: str, arch_default: str, tag: str, opts: LoadOptions,
                                  folder_ok: bool = True) -> OpenClipBackbone:
    """open_clip `arch` with the weights of pretrained `tag`: from `backbone_weights=` / a file in the weights
    folder / the open_clip (HF) cache. QuickGELU follows the tag (OpenAI CLIP uses it)."""
    import open_clip

    arch = open_clip_arch(opts, arch_default)
    cfg = open_clip.get_pretrained_cfg(arch_default, tag) or {}
    quick = bool(opts.extra.get("quick_gelu", cfg.get("quick_gelu", False) if arch == arch_default else False))
    file: Path | None = None
    bw = opts.extra.get("backbone_weights")
    looked = []
    if bw is not None:
        file = Path(bw).expanduser()
        if not file.is_file():
            raise missing(preset, f"open_clip {arch} weights", str(file))
    elif folder_ok and opts.weights is not None:
        w = opts.weights
        if w.is_file() and w.suffix in (".bin", ".safetensors", ".pt") \
                and preset.startswith(("clipscore", "clip-iqa")):
            file = w
        elif w.is_dir():
            file = find_in_folder(w, OPEN_CLIP_WEIGHT_FILES + (f"{arch}.pt", f"{arch}.safetensors"))
            looked.append(str(w))
    if file is None:
        hub = str(cfg.get("hf_hub", "")).strip("/")
        if hub:
            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                file = hf_file(hub, fname)
                if file is not None:
                    break
            looked.append(f"the Hugging Face cache {hf_cache_dir()} (repo {hub})")
    if file is None:
        also = f" or OpenAI's TorchScript {arch_default}.pt" if tag == "openai" else ""
        raise missing(preset, f"open_clip {arch_default} '{tag}' weights (open_clip_pytorch_model.bin{also})",
                      " and ".join(looked) or "nowhere (no source known)",
                      "or backbone_weights=FILE")
    sd = load_torch_state_dict(file)
    model = _open_clip_model(arch, quick_gelu=quick)
    load_open_clip_state(model, sd, file, arch)
    ref = {"source": "open_clip", "model_name": arch, "pretrained": tag, "quick_gelu": quick} \
        if arch == arch_default else None
    key = f"open_clip:{arch}:{tag}" if arch == arch_default else f"open_clip:{arch}:{file.resolve()}"
    return OpenClipBackbone.from_model(model, arch, resize_mode="center_crop", key=key, weights_ref=ref)


def open_clip_pretrained_key(arch_default: str, tag: str, opts: LoadOptions) -> str:
    arch = open_clip_arch(opts, arch_default)
    if arch == arch_default:
        return f"open_clip:{arch}:{tag}"
    bw = opts.extra.get("backbone_weights")
    src = Path(bw).expanduser() if bw is not None else opts.weights
    return f"open_clip:{arch}:{src.resolve() if src is not None else 'random'}"


def laion_head_file(opts: LoadOptions) -> Path:
    if opts.weights is not None:
        w = opts.weights
        path = find_in_folder(w, [LAION_HEAD_FILE]) if w.is_dir() else (w if w.is_file() else None)
        if path is None:
            raise missing("laion-aesthetic", LAION_HEAD_FILE, str(w))
        return path
    repo = str(opts.extra.get("head_repo", LAION_HEAD_REPO))
    path = hf_file(repo, LAION_HEAD_FILE)
    if path is None:
        raise missing("laion-aesthetic", LAION_HEAD_FILE, f"the Hugging Face cache {hf_cache_dir()} (repo {repo})",
                      "it is published at github.com/christophschuhmann/improved-aesthetic-predictor")
    return path


def read_laion_head_state(path: Path) -> dict[str, Any]:
    sd = load_torch_state_dict(path)
    if "layers.0.weight" not in sd:
        raise ValueError(f"{path} is not a LAION aesthetic head state dict (no 'layers.0.weight'; keys: "
                         f"{', '.join(list(sd)[:5])})")
    return sd
