"""Ranked lists for RankDPO: gains from several scorers, the list manifest, and list datasets.

Gains (RankDPO, arXiv 2410.18013): with n reward models and k images of one prompt, image i's gain is its win rate
`phi_i = wins_i / (n (k - 1))`, where a win is a STRICTLY higher score than another image of the same prompt under
one reward model (no score normalisation; exact ties are no win for either side).

The list manifest (data_cards/align_lists.md) is a canonical pair manifest that `imgpref align pairs --lists`
writes with every pair of a prompt's K images (oriented by gain; equal gains as 0/0/1 tie rows), `group` = the
prompt id and two extra columns `gain_0` / `gain_1` (the gains of image_0 / image_1). Any canonical reader sees
pairs; `load_lists` regroups the rows of one group into one list of images with their gains.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

GAIN_COLUMNS = ("gain_0", "gain_1")


def win_rate_gains(scores: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """RankDPO gains for one prompt: scores [n_scorers, k] (higher is better) -> phi [k] = wins / (n (k - 1))."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"need scores [n_scorers, k] with k >= 2 images; got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite to rank images")
    n, k = s.shape
    wins = (s[:, :, None] > s[:, None, :]).sum(axis=(0, 2))
    return wins / (n * (k - 1))


def list_manifest_rows(paths: Sequence[str], gains: Sequence[float], prompt: str, group: str, split: str) -> list[dict]:
    """Every pair of one prompt's images as canonical rows with gain_0 / gain_1: higher gain = image_0 with
    votes 1/0/0; equal gains give a 0/0/1 tie row (kept: the list needs every image)."""
    rows = []
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            a, b = (i, j) if gains[i] >= gains[j] else (j, i)
            tie = gains[a] == gains[b]
            rows.append({"image_0": paths[a], "image_1": paths[b], "votes_0": 0 if tie else 1, "votes_1": 0,
                         "votes_tie": 1 if tie else 0, "prompt": prompt, "group": group, "annotator": "",
                         "split": split, "gain_0": float(gains[a]), "gain_1": float(gains[b])})
    return rows


@dataclass
class ListSet:
    """Lists of one prompt's images with their gains (image paths absolute, as the manifest reader gives them)."""

    prompts: list[str]
    images: list[list[Any]]
    gains: list[list[float]]
    groups: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompts)

    def summary(self) -> dict[str, int]:
        sizes = [len(x) for x in self.images]
        return {"rows": sum(k * (k - 1) // 2 for k in sizes), "lists": len(self), "images": sum(sizes),
                "pairs": sum(k * (k - 1) // 2 for k in sizes), "ties_dropped": 0, "ties_kept": 0,
                "unreadable_pairs": 0}


def lists_from_frame(df: pd.DataFrame) -> ListSet:
    """Regroup list-manifest rows by `group` (module doc); an image with two different gains is an error."""
    missing = [c for c in ("group", *GAIN_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"a list manifest needs columns group, gain_0, gain_1 (missing: {missing}); write one with "
                         "`imgpref align pairs --lists`")
    out = ListSet([], [], [], [])
    for group, rows in df.groupby("group", sort=False):
        gains: dict[Any, float] = {}
        for col, gcol in (("image_0", "gain_0"), ("image_1", "gain_1")):
            for img, g in zip(rows[col], rows[gcol]):
                g = float(g)
                if not np.isfinite(g):
                    raise ValueError(f"group {group!r}: image {img!r} has no finite {gcol}")
                if img in gains and gains[img] != g:
                    raise ValueError(f"group {group!r}: image {img!r} has two gains ({gains[img]} and {g})")
                gains[img] = g
        if len(gains) < 2:
            continue
        prompts = {str(p) for p in rows["prompt"]} if "prompt" in rows.columns else {""}
        if len(prompts) != 1:
            raise ValueError(f"group {group!r} mixes prompts {sorted(prompts)[:3]}; a list is one prompt's images")
        out.prompts.append(prompts.pop())
        out.images.append(list(gains))
        out.gains.append(list(gains.values()))
        out.groups.append(str(group))
    return out


class ListDataset(Dataset):
    """Items {"prompt", "latents" [K, C, h, w] (cached) or "pixels" [K, 3, R, R], "gains" [K], "time_ids" [K, 6]}
    (time_ids: SDXL micro-conditioning, as `PreferencePairDataset` / `LatentPairDataset` give them)."""

    def __init__(self, lists: ListSet, resolution: int, latents: dict[str, Tensor] | None = None) -> None:
        self.lists, self.resolution, self.latents = lists, int(resolution), latents
        if latents is not None:
            from imgpref.align.latent_pairs import _key

            missing = [im for ims in lists.images for im in ims if _key(im) not in latents]
            if missing:
                raise ValueError(f"{len(missing)} list images have no cached latent (first: {missing[0]!r}); the "
                                 "latents file must come from the same `imgpref align pairs --lists` run")

    def __len__(self) -> int:
        return len(self.lists)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ims = self.lists.images[i]
        item: dict[str, Any] = {"prompt": self.lists.prompts[i],
                                "gains": torch.tensor(self.lists.gains[i], dtype=torch.float32)}
        from imgpref.align.conditioning import sdxl_time_ids

        if self.latents is not None:
            from PIL import Image

            from imgpref.align.latent_pairs import _key

            item["latents"] = torch.stack([self.latents[_key(im)] for im in ims])
            tids = []
            for im in ims:  # generated at the training size: original = target size, no crop
                with Image.open(im) as pil:
                    hw = (int(pil.size[1]), int(pil.size[0]))
                tids.append(sdxl_time_ids(hw, (0, 0), hw))
        else:
            from imgpref.align.pairs_data import _open, resize_center_crop

            crops = [resize_center_crop(_open(im), self.resolution) for im in ims]
            item["pixels"] = torch.stack([c[0] for c in crops])
            target = (self.resolution, self.resolution)
            tids = [sdxl_time_ids(c[1], c[2], target) for c in crops]
        item["time_ids"] = torch.stack(tids)
        return item


def collate_lists(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad lists to the longest K of the batch; "valid" [B, K] marks the real images."""
    k = max(len(it["gains"]) for it in items)
    key = "latents" if "latents" in items[0] else "pixels"
    x0 = items[0][key]
    x = torch.zeros(len(items), k, *x0.shape[1:], dtype=x0.dtype)
    gains = torch.zeros(len(items), k)
    valid = torch.zeros(len(items), k, dtype=torch.bool)
    tids = torch.zeros(len(items), k, 6)
    for b, it in enumerate(items):
        n = len(it["gains"])
        x[b, :n], gains[b, :n], valid[b, :n] = it[key], it["gains"], True
        if "time_ids" in it:
            tids[b, :n] = it["time_ids"]
            tids[b, n:] = it["time_ids"][0]  # padding gets valid ids (its loss terms are masked out)
    return {"prompt": [it["prompt"] for it in items], key: x, "gains": gains, "valid": valid, "time_ids": tids}


def load_lists(manifest: str | os.PathLike | pd.DataFrame, *, split: str | None = "auto") -> ListSet:
    """Read a list manifest (path or DataFrame) into lists, with the same split rule as pairs (`select_split`)."""
    from imgpref.align.pairs_data import select_split
    from imgpref.data.manifest import read_manifest

    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(Path(manifest), keep_extra=True)
    return lists_from_frame(select_split(df, split))
