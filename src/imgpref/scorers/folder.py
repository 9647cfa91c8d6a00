"""Scorer folders: `scorer.yaml` (what to build) + `model.safetensors` (head weights, and backbone weights when
they are not a published reference). Self-describing: loading needs no registration step.

scorer.yaml:
    format: imgpref-scorer/1
    info: {name, higher_is_better, score_range, needs_prompt, description, extra}
    backbone: {type: open_clip | hf_clip | pixels, ..., key, weights: folder | reference, weights_ref: {...}}
    head: {type: <registered head type>, **hyper-parameters}

The backbone `key` of a folder that stores its backbone weights ends in `#w<digest>`, the sha256 of those tensors
(`imgpref.scorers.identity`); loading recomputes it from `model.safetensors` and never trusts the yaml, so
`load_scorers` shares a backbone between two folders only when their weights are byte-identical. Nothing read
from the yaml becomes a file name: an open_clip config stored in it is registered under a name derived from its
content, and `model_name` must be a plain name. A damaged folder (bad YAML, missing key, corrupt safetensors,
unknown architecture) raises one ValueError naming the file and the problem.

Backbone weights are stored under `backbone.` keys when the backbone has no published reference
(`backbone.weights_ref is None`, e.g. a tiny or fine-tuned model) or when `include_backbone=True`; otherwise
the yaml names the published weights (`weights_ref`) and loading finds them like the preset does. An
open_clip architecture unknown to open_clip (e.g. a tiny one) is stored as its JSON config inside the yaml; a
transformers CLIP stores its config and its processor / tokenizer files in `hf_processor/`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from imgpref.atomic import atomic_write
from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo
from imgpref.scorers.identity import remember_digest, tensors_digest, with_digest
from imgpref.scorers.heads import build_head
from imgpref.scorers.weights import download_attempts, hf_cache_dir, hf_offline, missing

CONFIG_NAME = "scorer.yaml"
WEIGHTS_NAME = "model.safetensors"
HF_PROCESSOR_DIR = "hf_processor"
FORMAT = "imgpref-scorer/1"


def _plain(x: Any) -> Any:
    """YAML-safe copy (tuples -> lists, numpy/torch scalars -> python)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        return x.item()
    return x


def _tensors(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (views of one buffer)
    return {f"{prefix}{k}": v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_scorer(scorer: Scorer, folder: str | Path, *, include_backbone: bool | None = None) -> Path:
    """Write `scorer` as a scorer folder; returns the folder.

    include_backbone: store the backbone weights in the folder. Default: only when the backbone has no
    published reference (`weights_ref` is None). Pass True after fine-tuning a published backbone.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bb: Backbone = scorer.backbone
    bdesc = dict(bb.describe())
    ref = getattr(bb, "weights_ref", None)
    store_bb = (ref is None) if include_backbone is None else bool(include_backbone)
    has_params = any(True for _ in bb.parameters())
    tensors = _tensors(scorer.head, "head.")
    if store_bb and has_params:
        tensors.update(_tensors(bb, "backbone."))
        bdesc["weights"] = "folder"
    else:
        bdesc["weights"] = "reference" if has_params else "none"
    if bdesc.get("type") == "hf_clip":
        bb.processor.save_pretrained(str(folder / HF_PROCESSOR_DIR))
        bb.tokenizer.save_pretrained(str(folder / HF_PROCESSOR_DIR))
    with atomic_write(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if bdesc["weights"] == "folder":
        # the key names these exact weights (loading recomputes the digest from the file, never trusts it)
        bdesc["key"] = with_digest(bb.key, _backbone_digest(tensors))
    info = scorer.info
    doc = {
        "format": FORMAT,
        "info": {"name": info.name, "higher_is_better": info.higher_is_better,
                 "score_range": list(info.score_range) if info.score_range is not None else None,
                 "needs_prompt": info.needs_prompt, "description": info.description, "extra": info.extra},
        "backbone": bdesc,
        "head": scorer.head.describe(),
    }
    with atomic_write(folder / CONFIG_NAME) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(doc), sort_keys=False), encoding="utf-8")
    return folder


def _backbone_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of the `backbone.` tensors, named as in the backbone's own state dict (see `identity`)."""
    return tensors_digest({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})


def read_config(folder: str | Path) -> dict[str, Any]:
    """The parsed scorer.yaml of `folder` (FileNotFoundError / ValueError naming the problem)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a scorer folder: {CONFIG_NAME} not found in it")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not valid YAML ({first}); fix it or save the scorer again") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with keys 'info', 'backbone' and 'head'")
    for k in ("backbone", "head"):
        if not isinstance(doc.get(k), dict):
            raise ValueError(f"{path}: missing or malformed key {k!r} (a mapping; expected keys 'info', "
                             "'backbone' and 'head')")
        if not doc[k].get("type"):
            raise ValueError(f"{path}: missing key '{k}.type'")
    if doc.get("info") is not None and not isinstance(doc["info"], dict):
        raise ValueError(f"{path}: key 'info' must be a mapping")
    return doc


def _need(desc: dict[str, Any], key: str, what: str = "backbone") -> Any:
    if key not in desc or desc[key] is None:
        raise ValueError(f"{CONFIG_NAME}: missing key '{what}.{key}'")
    return desc[key]


def _build_open_clip(desc: dict[str, Any], sd: dict[str, torch.Tensor] | None, weights: Path | None) -> Backbone:
    import open_clip

    from imgpref.scorers import published
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.registry import LoadOptions
    from imgpref.scorers.tiny import check_model_name

    name, cfg = check_model_name(_need(desc, "model_name"), "backbone.model_name"), desc.get("model_config")
    for k in ("image_size", "mean", "std"):
        _need(desc, k)
    if cfg is not None and not isinstance(cfg, dict):
        raise ValueError(f"{CONFIG_NAME}: backbone.model_config must be a mapping (an open_clip JSON config)")
    known = open_clip.get_model_config(name)
    if cfg is not None and known != cfg:
        # registered under a name derived from the config's content: no file name comes from the folder
        name = published.open_clip_arch(LoadOptions(extra={"model_config": cfg}), name)
    elif known is None:
        raise ValueError(f"{CONFIG_NAME}: unknown open_clip architecture {name!r} (not an open_clip model name "
                         "and no backbone.model_config given)")
    ref = desc.get("weights_ref") or {}
    if sd is None and ref:
        opts = LoadOptions(weights=weights, extra={"arch": name})
        if ref.get("source") == "open_clip":
            opts.extra["quick_gelu"] = ref.get("quick_gelu", False)
            base = published.open_clip_pretrained_backbone(f"backbone {name}", name, ref["pretrained"], opts)
        elif ref.get("source") == "hf" and ref.get("file") in published.HPS_FILES.values():
            version = {v: k for k, v in published.HPS_FILES.items()}[ref["file"]]
            base = published.hps_backbone(version, opts)
        else:
            raise ValueError(f"unknown backbone weights reference {ref} in {CONFIG_NAME}")
        model = base.model
    else:
        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=bool(
            (desc.get("weights_ref") or {}).get("quick_gelu", False)))
        if sd is not None:
            model.load_state_dict({k[len("model."):]: v for k, v in sd.items()}, strict=True)
    from imgpref.scorers.backbones.open_clip_backbone import cached_tokenizer

    return OpenClipBackbone(model.eval(), name, cached_tokenizer(name), desc["image_size"], desc["mean"], desc["std"],
                            desc.get("resize_mode", "center_crop"), desc.get("key"), model_config=cfg,
                            weights_ref=desc.get("weights_ref") if sd is None else None)


def _build_hf_clip(desc: dict[str, Any], sd: dict[str, torch.Tensor] | None, folder: Path,
                   weights: Path | None) -> Backbone:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from imgpref.scorers import published
    from imgpref.scorers.backbones.hf_clip_backbone import HFClipBackbone
    from imgpref.scorers.registry import LoadOptions

    if sd is None:
        base = published.pickscore_backbone(LoadOptions(weights=weights))
        return HFClipBackbone(base.model, base.processor, base.tokenizer, key=desc.get("key", base.key),
                              source=base.source, weights_ref=desc.get("weights_ref"),
                              max_length=desc.get("max_length", 77))
    model = CLIPModel(CLIPConfig(**desc["model_config"]))
    model.load_state_dict({k[len("model."):]: v for k, v in sd.items()}, strict=True)
    proc_dir = folder / HF_PROCESSOR_DIR
    processor = CLIPImageProcessor.from_pretrained(str(proc_dir))
    tokenizer = CLIPTokenizer.from_pretrained(str(proc_dir))
    return HFClipBackbone(model.eval(), processor, tokenizer, key=desc["key"], source=str(folder),
                          weights_ref=None, max_length=desc.get("max_length", 77))


def build_backbone(desc: dict[str, Any], sd: dict[str, torch.Tensor] | None, folder: Path,
                   weights: Path | None = None) -> Backbone:
    """Rebuild a backbone from its description (+ its weights from the folder, when stored there)."""
    kind = desc.get("type")
    if kind == "pixels":
        from imgpref.scorers.pixels import PixelStatsBackbone

        return PixelStatsBackbone(int(desc.get("size", 256)))
    if kind == "open_clip":
        return _build_open_clip(desc, sd, weights)
    if kind == "hf_clip":
        return _build_hf_clip(desc, sd, folder, weights)
    raise ValueError(f"{folder / CONFIG_NAME}: unknown backbone type {kind!r} (open_clip, hf_clip or pixels)")


def load_scorer_folder(
    folder: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    weights: str | Path | None = None,
    backbone_cache: Callable[[str, Callable[[], Backbone]], Backbone] | None = None,
) -> Scorer:
    """Load a scorer folder written by `save_scorer` (or by hand in the same format).

    weights: where to find *referenced* published backbone weights when they are not in the HF cache.
    backbone_cache: `(key, build) -> Backbone`, used by `load_scorers` to share backbones by key.
    """
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    doc = read_config(folder)
    wpath = folder / WEIGHTS_NAME
    if not wpath.is_file():
        raise FileNotFoundError(f"{folder}: {WEIGHTS_NAME} not found (a scorer folder holds {CONFIG_NAME} + "
                                f"{WEIGHTS_NAME})")
    try:
        tensors = load_file(str(wpath))
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types for damaged files)
        raise ValueError(f"{wpath} cannot be read as safetensors ({_first_line(exc)}); the file is damaged or "
                         "not a safetensors file: save the scorer again") from None
    bdesc, hdesc = dict(doc["backbone"]), dict(doc["head"])
    bsd = {k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")} or None
    hsd = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    wp = Path(weights).expanduser() if weights is not None else None
    key = str(bdesc.get("key") or f"{bdesc.get('type')}:{bdesc.get('model_name', 'folder')}")
    digest = tensors_digest(bsd) if bsd else None
    if digest is not None:
        # the weights stored here decide the identity: recomputed from the file, whatever the yaml's key says
        key = with_digest(key, digest)
    bdesc["key"] = key

    def build() -> Backbone:
        try:
            bb = build_backbone(bdesc, bsd, folder, wp)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{folder}: {exc}") from None
        except (KeyError, RuntimeError, TypeError) as exc:  # a config that does not fit the architecture
            raise ValueError(f"{folder / CONFIG_NAME}: cannot build the {bdesc.get('type')} backbone "
                             f"({type(exc).__name__}: {_first_line(exc)})") from None
        bb.key = key
        if digest is not None and _same_tensors(bb, bsd):
            remember_digest(bb, digest)  # saves hashing the weights again at scoring time
        if device is not None or dtype is not None:
            bb = bb.to(device=device, dtype=dtype)
        return bb.eval()

    backbone = backbone_cache(key, build) if backbone_cache is not None else build()
    try:
        head: Head = build_head(hdesc)
        missing_keys, unexpected = head.load_state_dict(hsd, strict=False)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{folder / CONFIG_NAME}: cannot build head {hdesc.get('type')!r} with the weights of "
                         f"{WEIGHTS_NAME} ({_first_line(exc)})") from None
    if missing_keys or unexpected:
        raise ValueError(f"{wpath}: head weights do not match head {hdesc.get('type')!r} "
                         f"(missing {missing_keys[:3]}, unexpected {unexpected[:3]})")
    head = head.to(device=backbone.device, dtype=dtype).eval() if dtype is not None else head.to(backbone.device).eval()
    i = doc.get("info") or {}
    info = ScorerInfo(
        name=str(i.get("name") or folder.name),
        higher_is_better=bool(i.get("higher_is_better", True)),
        score_range=tuple(i["score_range"]) if i.get("score_range") is not None else None,
        needs_prompt=bool(i.get("needs_prompt", head.needs_text)),
        description=str(i.get("description", "")),
        extra=dict(i.get("extra") or {}),
    )
    return Scorer(backbone, head, info)


def _first_line(exc: BaseException) -> str:
    """The exception's message on one line (at most 300 characters): errors are reported as one line."""
    text = " ".join(str(exc).split())
    return (text[:297] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _same_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return set(state) == set(tensors) and all(state[k].dtype == v.dtype for k, v in tensors.items())


def resolve_hf_hub(repo: str, weights: Path | None = None) -> Path:
    """A local snapshot of the scorer folder published as `repo` (HF cache; downloaded only when online)."""
    if weights is not None and (Path(weights) / CONFIG_NAME).is_file():
        return Path(weights)
    from huggingface_hub import snapshot_download

    for local_only in download_attempts():
        try:
            path = Path(snapshot_download(repo, local_files_only=local_only))
        except Exception:
            continue
        if (path / CONFIG_NAME).is_file():
            return path
    raise missing(f"hf-hub:{repo}", f"scorer folder ({CONFIG_NAME} + {WEIGHTS_NAME})",
                  f"the Hugging Face cache {hf_cache_dir()}" + (" (offline)" if hf_offline() else ""),
                  "or pass the local folder itself instead of hf-hub:...")
