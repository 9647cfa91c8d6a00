"""Identities for everything that caches, shares or resumes: weight digests, backbone identities, embedding-cache
namespaces, scorer fingerprints and file identities.

- `tensors_digest` / `module_digest`: sha256 over every tensor's name, dtype, shape and raw bytes (16 hex
  digits). Equal digests mean byte-identical weights. The digest of a module is remembered on it together with
  a stamp of its tensors (storage pointer + in-place version counter), so it is computed once per load and
  recomputed only after the weights change (an optimizer step, `load_state_dict`, `.to(device)`).
- `backbone_identity`: the backbone key plus `#w<digest>` for every backbone that carries its own weights
  (trained from scratch, fine-tuned, a local folder, stored in a scorer folder). A backbone built from a
  published reference (`weights_ref` set) is identified by its key, which names that reference.
- `embedding_namespace`: identity + preprocessing + decode size + precision; the one namespace of the scoring
  `--cache` and the training embedding cache.
- `scorer_fingerprint`: embedding namespace + head type, description and weight digest + the scorer's declared
  extras: a resumed row is valid only when its scorer still has the same fingerprint.
- `file_identity`: size and mtime (ns) of an image file.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Mapping

import torch

DIGEST_SEP = "#w"
_DIGEST_RE = re.compile(r"#w[0-9a-f]{16}$")
_MEMO = "_imgpref_digest"


def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of named tensors: name, dtype, shape and bytes of each, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if not torch.is_tensor(t):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def _stamp(state: Mapping[str, Any]) -> tuple | None:
    try:
        return tuple((k, v.data_ptr(), v._version, str(v.device), v.dtype) for k, v in state.items()
                     if torch.is_tensor(v))
    except RuntimeError:  # inference tensors have no version counter: never trust a remembered digest
        return None


def remember_digest(module: torch.nn.Module, digest: str) -> None:
    """Record that `module`'s current weights have `digest` (computed from the same tensors elsewhere)."""
    object.__setattr__(module, _MEMO, (_stamp(module.state_dict()), digest))


def module_digest(module: torch.nn.Module) -> str:
    """`tensors_digest` of the module's state dict, remembered until its tensors change."""
    state = module.state_dict()
    stamp = _stamp(state)
    memo = getattr(module, _MEMO, None)
    if memo is not None and stamp is not None and memo[0] == stamp:
        return memo[1]
    digest = tensors_digest(state)
    object.__setattr__(module, _MEMO, (stamp, digest))
    return digest


def with_digest(key: str, digest: str) -> str:
    """`key` with its weight digest replaced by (or extended with) `#w<digest>`."""
    return _DIGEST_RE.sub("", str(key)) + DIGEST_SEP + digest


def carries_own_weights(backbone: torch.nn.Module) -> bool:
    """True unless the backbone has no tensors or was built from a published reference (`weights_ref`)."""
    if getattr(backbone, "weights_ref", None):
        return False
    return any(True for _ in backbone.state_dict().values())


def backbone_identity(backbone: torch.nn.Module) -> str:
    """The key that decides sharing and caching: `key#w<digest>` for backbones with their own weights."""
    key = str(getattr(backbone, "key", type(backbone).__name__))
    if not carries_own_weights(backbone):
        return key
    return with_digest(key, module_digest(backbone))


_PREPROCESS_ATTRS = ("image_size", "resize_size", "mean", "std", "resize_mode", "size", "preprocess_id")
# Bump when the code of any `preprocess` changes what it computes (e.g. HPS's resize order, alpha compositing),
# so cached embeddings made by the old code are never reused.
PREPROCESSING_VERSION = 1


def preprocessing_id(backbone: Any) -> str:
    """Short hash of what turns a file into the backbone's input: its class, sizes, mean/std, resize mode,
    the transformers processor's settings, and a `preprocess_id` attribute a backbone may declare."""
    desc: dict[str, Any] = {"class": f"{type(backbone).__module__}.{type(backbone).__qualname__}",
                            "version": PREPROCESSING_VERSION}
    for attr in _PREPROCESS_ATTRS:
        if hasattr(backbone, attr):
            desc[attr] = getattr(backbone, attr)
    proc = getattr(backbone, "processor", None)
    if proc is not None and hasattr(proc, "to_dict"):
        desc["processor"] = proc.to_dict()
    text = json.dumps(desc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def embedding_namespace(backbone: Any, *, dtype: torch.dtype = torch.float32, draft: int | None = None) -> str:
    """Namespace of cached image embeddings: backbone identity, preprocessing, decode size and precision."""
    ns = f"{backbone_identity(backbone)}|pp{preprocessing_id(backbone)}|decode{draft or 'full'}"
    if dtype != torch.float32:
        ns += "@" + str(dtype).replace("torch.", "")
    return ns


def scorer_fingerprint(scorer: Any, namespace: str) -> str:
    """Short hash of everything that decides a scorer's score for one image (besides the image and prompt):
    the embedding namespace (`embedding_namespace` of its backbone) and its head (type, description, weights)."""
    head = scorer.head
    try:
        hdesc = head.describe()
    except NotImplementedError:
        hdesc = None
    info = getattr(scorer, "info", None)
    doc = {"ns": namespace, "head": f"{type(head).__module__}.{type(head).__qualname__}", "desc": hdesc,
           "weights": module_digest(head), "needs_prompt": bool(scorer.needs_prompt),
           "extra": getattr(info, "extra", None)}  # e.g. a preset's prompt template or reference precision
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> str | None:
    """`<size>:<mtime_ns>` of a file, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return f"{st.st_size}:{st.st_mtime_ns}"
