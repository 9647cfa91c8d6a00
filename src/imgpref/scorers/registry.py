"""Named scorer presets, and `load_scorer` / `load_scorers` / `list_scorers`.

`load_scorer(spec)` accepts a preset name (`list_scorers()`), a scorer folder (`scorer.yaml` +
`model.safetensors`, see `imgpref.scorers.folder`) or `hf-hub:org/repo` (a scorer folder in the Hugging Face
cache). Backbones are identified by `Backbone.key`; `load_scorers` builds each distinct backbone once and hands
the same object to every scorer on it, so k heads cost one backbone pass (`imgpref.scorers.multi`).
"""
from __future__ import annotations

import difflib
import hashlib
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo
from imgpref.scorers.identity import carries_own_weights, file_identity, module_digest, with_digest

HF_PREFIX = "hf-hub:"


@dataclass
class LoadOptions:
    """What the caller asked for; passed to preset builders."""

    weights: Path | None = None
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. arch= / model_config= overrides for tests


@dataclass
class Preset:
    """A named scorer: metadata + how to name, build and load its backbone and head."""

    info: ScorerInfo
    backbone_key: Callable[[LoadOptions], str]
    build_backbone: Callable[[LoadOptions], Backbone]
    build_head: Callable[[Backbone, LoadOptions], Head]
    weights_help: str = ""  # how to provide weights, shown by `imgpref score --help`-style listings

    @property
    def name(self) -> str:
        return self.info.name


_PRESETS: dict[str, Preset] = {}
# Backbones loaded in this process, by (key, device, dtype). Weak: a backbone nobody holds is freed.
_BACKBONES: "weakref.WeakValueDictionary[tuple, Backbone]" = weakref.WeakValueDictionary()


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add a named preset (plugins and the training code may add their own)."""
    if preset.name in _PRESETS and not overwrite:
        raise ValueError(f"a scorer preset named {preset.name!r} already exists; pass overwrite=True to replace it")
    _PRESETS[preset.name] = preset
    return preset


def _ensure_presets() -> None:
    if not _PRESETS:
        from imgpref.scorers import presets  # noqa: F401  (registers on import)

        _load_plugin_presets()


def _load_plugin_presets() -> None:
    """Presets declared as entry points of the group `imgpref.scorers` (a callable that registers them), so a
    package, or an optional part of imgpref such as the world's gold judge, adds presets without `scorers`
    importing it. A plugin that fails to load is logged and skipped."""
    import logging
    from importlib.metadata import entry_points

    for ep in entry_points(group="imgpref.scorers"):
        try:
            ep.load()()
        except Exception as exc:  # a broken plugin must not take the built-in presets down with it
            logging.getLogger(__name__).warning("scorer plugin %s failed to load: %s", ep.name, exc)


def list_scorers() -> list[str]:
    """Names of all registered presets, sorted."""
    _ensure_presets()
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`; unknown names raise ValueError listing the closest valid names."""
    _ensure_presets()
    if name in _PRESETS:
        return _PRESETS[name]
    lowered = name.lower().replace("_", "-")
    if lowered in _PRESETS:
        return _PRESETS[lowered]
    close = difflib.get_close_matches(lowered, list(_PRESETS), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(
        f"unknown scorer {name!r}: {hint}valid presets: {', '.join(sorted(_PRESETS))}; "
        "or pass a scorer folder (with scorer.yaml) or hf-hub:org/repo"
    )


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if str(dtype) not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
    return names[str(dtype)]


def _options(weights, device, dtype, extra) -> LoadOptions:
    return LoadOptions(
        weights=Path(weights).expanduser() if weights is not None else None,
        device=torch.device(device) if device is not None else None,
        dtype=_resolve_dtype(dtype),
        extra=dict(extra),
    )


def _place(module: torch.nn.Module, opts: LoadOptions) -> torch.nn.Module:
    if opts.device is not None or opts.dtype is not None:
        module = module.to(device=opts.device, dtype=opts.dtype)
    return module.eval()


def _cached_backbone(key: str, opts: LoadOptions, build: Callable[[], Backbone], share: bool,
                     local: dict[tuple, Backbone] | None) -> Backbone:
    ck = (key, str(opts.device), str(opts.dtype))
    if share:
        if local is not None and ck in local:
            return local[ck]
        hit = _BACKBONES.get(ck)
        if hit is not None:
            if local is not None:
                local[ck] = hit
            return hit
    backbone = _place(build(), opts)
    if share:
        _BACKBONES[ck] = backbone
        if local is not None:
            local[ck] = backbone
    return backbone


def _source_identity(opts: LoadOptions) -> str:
    """Size and mtime of the local weight files a preset reads (a folder: of every file in it), or ""."""
    parts = []
    for src in (opts.weights, opts.extra.get("backbone_weights")):
        if src is None:
            continue
        path = Path(src).expanduser()
        files = sorted(p for p in path.rglob("*") if p.is_file())[:5000] if path.is_dir() else [path]
        parts.extend(f"{p}={file_identity(p)}" for p in files)
    if not parts:
        return ""
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _is_folder_spec(spec: str | Path) -> bool:
    p = Path(spec).expanduser()
    if p.name == "scorer.yaml" and p.is_file():
        return True
    if not p.is_dir():
        return False
    # a directory that happens to share a preset's name (e.g. ./hpsv2 holding weights) does not shadow it
    _ensure_presets()
    return (p / "scorer.yaml").is_file() or str(spec) not in _PRESETS


def _load_one(spec: str | Path, opts: LoadOptions, share: bool, local: dict | None) -> Scorer:
    if isinstance(spec, Path) or _is_folder_spec(spec) or str(spec).startswith(HF_PREFIX):
        from imgpref.scorers import folder

        if str(spec).startswith(HF_PREFIX):
            path = folder.resolve_hf_hub(str(spec)[len(HF_PREFIX):], weights=opts.weights)
        else:
            path = Path(spec).expanduser()
            if path.is_file():
                path = path.parent
        if not (path / folder.CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a scorer folder: {folder.CONFIG_NAME} not found in it")
        return folder.load_scorer_folder(
            path, device=opts.device, dtype=opts.dtype, weights=opts.weights if opts.weights else None,
            backbone_cache=(lambda key, build: _cached_backbone(key, opts, build, share, local)),
        )
    spec = str(spec)
    if ("/" in spec or "\\" in spec or spec.startswith(".")) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"scorer folder {spec!r} does not exist (nor is it a preset name; see list_scorers())")
    preset = get_preset(spec)
    key = preset.backbone_key(opts)
    src = _source_identity(opts)

    def build() -> Backbone:
        bb = preset.build_backbone(opts)
        if carries_own_weights(bb):  # weights from a local file or folder: the key names their digest
            bb.key = with_digest(bb.key, module_digest(bb))
        return bb

    # local weight files are shared only while unchanged (the key names their path, not their bytes)
    backbone = _cached_backbone(f"{key}|{src}" if src else key, opts, build, share, local)
    head = _place(preset.build_head(backbone, opts), opts)
    if opts.device is None and backbone.device != torch.device("cpu"):
        head = head.to(backbone.device)
    return Scorer(backbone, head, replace(preset.info, extra=dict(preset.info.extra)))


def load_scorer(
    spec: str | Path,
    *,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    share_backbone: bool = False,
    **overrides: Any,
) -> Scorer:
    """Load a scorer: a preset name, a scorer folder, or `hf-hub:org/repo`.

    weights: a local file or folder with the preset's published weights (see the preset's `weights_help`);
    without it, weights come from the Hugging Face / open_clip cache (offline: a clear error names the file).
    device / dtype: where and in which precision to put the model (default: CPU, stored precision).
    share_backbone: reuse a backbone already loaded in this process with the same key (off by default so that
    fine-tuning one scorer never changes another).
    overrides: preset-specific options, e.g. `arch=` (an open_clip model name) or `model_config=` (a dict)
    to load a checkpoint of the published layout at another size (tests use tiny architectures).
    """
    opts = _options(weights, device, dtype, overrides)
    return _load_one(spec, opts, share_backbone, None)


def load_scorers(
    specs: Iterable[str | Path],
    *,
    weights: dict[str, str | Path] | str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> list[Scorer]:
    """Load several scorers; those whose backbones have the same key share ONE `Backbone` object.

    weights: one path for a single spec, or a dict {spec: path} for several.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("no scorer given: pass at least one preset name, folder or hf-hub:org/repo")
    if weights is not None and not isinstance(weights, dict):
        if len(specs) != 1:
            raise ValueError("with several scorers, pass weights as a dict {scorer: path}")
        weights = {str(specs[0]): weights}
    weights = {str(k): v for k, v in (weights or {}).items()}
    local: dict[tuple, Backbone] = {}
    out = []
    for spec in specs:
        opts = _options(weights.get(str(spec)), device, dtype, overrides)
        out.append(_load_one(spec, opts, True, local))
    return out
