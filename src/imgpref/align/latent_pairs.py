"""Cached on-policy latents for scorer-labelled pairs.

`imgpref align pairs` samples images from the pipeline being aligned, so the final latents each image was
decoded from are known exactly. It stores them in `latents.safetensors` beside the manifest (one tensor per
image, keyed by the image path relative to that folder). Training on those latents is exactly on-policy and
skips the VAE encode, which otherwise replaces the sample by `encode(decode(z))`: harmless for a good VAE, but a
different latent altogether for a VAE that does not reconstruct (such as the random tiny one in tests).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from imgpref.atomic import atomic_write

LATENTS_FILE = "latents.safetensors"


def save_latents(latents: Tensor, rel_paths: Sequence[str], out_dir: str | os.PathLike) -> Path:
    """Write latents [N, C, h, w] keyed by the images' paths relative to `out_dir` to `out_dir/latents.safetensors`."""
    from safetensors.torch import save_file

    if latents.shape[0] != len(rel_paths):
        raise ValueError(f"got {len(rel_paths)} paths for {latents.shape[0]} latents")
    out = Path(out_dir) / LATENTS_FILE
    tensors = {str(p): latents[i].detach().float().cpu().contiguous() for i, p in enumerate(rel_paths)}
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp), metadata={"keys": "image paths relative to this file's folder"})
    return out


def find_latents_file(manifest: str | os.PathLike, latents: str | os.PathLike) -> Path:
    """`latents="auto"` -> `latents.safetensors` beside the manifest; otherwise the given file."""
    path = Path(manifest).parent / LATENTS_FILE if str(latents) == "auto" else Path(latents)
    if not path.is_file():
        raise FileNotFoundError(
            f"latents file {str(path)!r} not found; it is written by `imgpref align pairs` beside manifest.csv. "
            "Leave data.latents unset to VAE-encode the images instead"
        )
    return path


def load_latents(path: str | os.PathLike) -> dict[str, Tensor]:
    """{absolute image path: latent [C, h, w]} from a latents file (keys resolved against its folder)."""
    from safetensors.torch import load_file

    path = Path(path)
    root = path.parent
    return {os.path.normpath(str((root / k).resolve())): v for k, v in load_file(str(path)).items()}


class LatentPairDataset(Dataset):
    """Items {"prompt", "latents_w", "latents_l", "weight", "time_ids_w", "time_ids_l"} for pairs whose images have
    cached latents (`DiffusionPreferenceModule.pair_losses` uses "latents_*" instead of encoding pixels)."""

    def __init__(self, pairs: Any, latents: dict[str, Tensor]) -> None:
        missing = [im for im in list(pairs.winners) + list(pairs.losers) if _key(im) not in latents]
        if missing:
            raise ValueError(
                f"{len(missing)} pair images have no cached latent (first: {missing[0]!r}); the latents file must "
                "come from the same `imgpref align pairs` run as the manifest, or leave data.latents unset"
            )
        self.pairs = pairs
        self.latents = latents

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from imgpref.align.conditioning import sdxl_time_ids

        zw = self.latents[_key(self.pairs.winners[i])]
        zl = self.latents[_key(self.pairs.losers[i])]
        # Generated at the training size: original size = target size, no crop (SDXL micro-conditioning).
        from PIL import Image

        with Image.open(self.pairs.winners[i]) as im:
            hw = (int(im.size[1]), int(im.size[0]))
        tid = sdxl_time_ids(hw, (0, 0), hw)
        return {"prompt": self.pairs.prompts[i], "latents_w": zw, "latents_l": zl,
                "weight": torch.tensor(self.pairs.weights[i], dtype=torch.float32), "time_ids_w": tid, "time_ids_l": tid}


def _key(image: Any) -> str:
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError("cached latents need image paths, not embedded image bytes")
    return os.path.normpath(str(Path(image).resolve()))
