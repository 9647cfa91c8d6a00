"""Finding published weights: a local path first, then the Hugging Face cache; one clear line when missing.

Offline (HF_HUB_OFFLINE=1, or no network) nothing is downloaded; online, a file missing from the cache is
downloaded once by huggingface_hub into its cache, as `huggingface-cli download` would.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable


class WeightsNotFoundError(FileNotFoundError):
    """Published weights are not available locally; the message is one line saying how to provide them."""


def hf_offline() -> bool:
    """True when huggingface_hub must not touch the network."""
    val = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    if val.strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return False


_NET: dict[str, bool] = {}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the HF endpoint answers a TCP connect (checked once per process): without it huggingface_hub
    would retry with back-off for ~20 s per file before failing."""
    if "ok" not in _NET:
        import socket
        from urllib.parse import urlparse

        try:
            from huggingface_hub import constants

            url = urlparse(constants.ENDPOINT)
        except Exception:  # pragma: no cover
            url = urlparse("https://huggingface.co")
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
                _NET["ok"] = True
        except OSError:
            _NET["ok"] = False
    return _NET["ok"]


def download_attempts() -> tuple[bool, ...]:
    """local_files_only values to try: the cache first, then (online only) a download."""
    return (True,) if hf_offline() or not hub_reachable() else (True, False)


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def missing(preset: str, what: str, looked: str, extra_hint: str = "") -> WeightsNotFoundError:
    """The one-line error: which file, where it was looked for, how to provide it."""
    hint = f"; {extra_hint}" if extra_hint else ""
    return WeightsNotFoundError(
        f"{preset}: {what} not found (looked in {looked}); download it and pass --weights PATH "
        f"(Python: weights=PATH, the file or a folder holding it){hint}"
    )


def find_in_folder(folder: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        p = folder / n
        if p.is_file():
            return p
    return None


def hf_file(repo: str, filename: str, *, revision: str | None = None) -> Path | None:
    """Path of `repo/filename` from the HF cache (downloading it when online); None when unavailable."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        return None
    for local_only in download_attempts():
        try:
            return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=local_only))
        except Exception:
            continue
    return None


def hf_snapshot(repo: str, *, allow_patterns: list[str] | None = None, required: Iterable[str] = ()) -> Path | None:
    """Local snapshot folder of `repo` (downloading when online) holding every `required` file; else None."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover
        return None
    for local_only in download_attempts():
        try:
            path = Path(snapshot_download(repo, allow_patterns=allow_patterns, local_files_only=local_only))
        except Exception:
            continue
        if all((path / r).is_file() for r in required):
            return path
    return None


def is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip with `constants.pkl` and `code/`, e.g. OpenAI's
    `ViT-L-14.pt`) rather than a `torch.save` checkpoint."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def load_torchscript_state_dict(path: Path) -> dict[str, Any]:
    """The state dict of a TorchScript archive, loaded on the CPU. `torch.jit.load` reads TorchScript code
    and tensors (no pickled Python objects); the module is never run, only its tensors are kept."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the only reader
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read {path} as a TorchScript archive: {e}") from e
    return {k: v.detach() for k, v in module.state_dict().items()}


def load_torch_state_dict(path: Path) -> dict[str, Any]:
    """A state dict from a torch checkpoint (raw, or under "state_dict"/"model"), safely (weights_only=True);
    a TorchScript archive (OpenAI's CLIP `*.pt` files) gives its module's state dict."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if is_torchscript_archive(path):
        return load_torchscript_state_dict(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read {path} as a torch checkpoint with weights_only=True: {e}") from e
    for k in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
