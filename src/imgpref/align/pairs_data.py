"""(prompt, winner, loser) pairs for diffusion alignment, read from a canonical preference manifest.

The winner is the image with more votes (votes_0 vs votes_1; tie votes never pick a side). Pairs with equal
votes_0 and votes_1 (including 0/0/k) are ties: dropped by default and counted (`PairSet.n_ties_dropped`,
logged by the trainer), or with `ties="keep"` kept as BOTH orientations, each with weight 0.5, so the loss pulls
the two images' likelihoods together instead of favouring one. No tie is ever assigned to image 0.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from imgpref.align.conditioning import sdxl_time_ids

log = logging.getLogger(__name__)
TIES = ("drop", "keep")


@dataclass
class PairSet:
    """Oriented pairs plus what was left out and why."""

    prompts: list[str]
    winners: list[Any]  # path strings or bytes
    losers: list[Any]
    weights: list[float]
    n_rows: int
    n_ties_dropped: int = 0
    n_ties_kept: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (image, reason) of pairs left out

    def __len__(self) -> int:
        return len(self.prompts)

    def summary(self) -> dict[str, int]:
        return {
            "rows": self.n_rows,
            "pairs": len(self),
            "ties_dropped": self.n_ties_dropped,
            "ties_kept": self.n_ties_kept,
            "unreadable_pairs": len(self.unreadable),
        }


def select_split(df: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Rows for training: split="auto" takes the "train" rows if the manifest marks any, all rows when no split is
    marked at all, and otherwise refuses (never silently training on "val" or "test"). None keeps all rows."""
    if split is None:
        return df.reset_index(drop=True)
    marks = set(df["split"].astype(str)) if "split" in df.columns else {""}
    if split == "auto":
        if "train" in marks:
            return df[df["split"] == "train"].reset_index(drop=True)
        if marks <= {""}:
            return df.reset_index(drop=True)
        raise ValueError(
            f"the manifest marks splits {sorted(marks - {''})} but none is 'train'; pass split='val' (or another) "
            "explicitly, or split=None to use every row"
        )
    out = df[df["split"] == split].reset_index(drop=True)
    if len(out) == 0:
        raise ValueError(f"no rows with split {split!r}; the manifest has splits {sorted(marks)}")
    return out


def orient_pairs(df: pd.DataFrame, ties: str = "drop") -> PairSet:
    """Turn manifest rows into (prompt, winner, loser, weight) pairs; see the module docstring for ties."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}; got {ties!r}")
    prompts: list[str] = []
    winners: list[Any] = []
    losers: list[Any] = []
    weights: list[float] = []
    dropped = kept = 0
    v0 = df["votes_0"].to_numpy(dtype=np.int64)
    v1 = df["votes_1"].to_numpy(dtype=np.int64)
    prompt_col = df["prompt"] if "prompt" in df.columns else pd.Series([""] * len(df))
    for i, (a, b, p) in enumerate(zip(df["image_0"], df["image_1"], prompt_col)):
        p = "" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p)
        if v0[i] > v1[i]:
            prompts.append(p), winners.append(a), losers.append(b), weights.append(1.0)
        elif v1[i] > v0[i]:
            prompts.append(p), winners.append(b), losers.append(a), weights.append(1.0)
        elif ties == "drop":
            dropped += 1
        else:
            kept += 1
            for w, l in ((a, b), (b, a)):
                prompts.append(p), winners.append(w), losers.append(l), weights.append(0.5)
    return PairSet(prompts, winners, losers, weights, n_rows=len(df), n_ties_dropped=dropped, n_ties_kept=kept)


def _open(image: Any) -> Image.Image:
    from imgpref.data.images import ImageLoadError, _to_rgb, load_image

    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as im:
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im)).copy()
        except Exception as exc:  # noqa: BLE001  (undecodable bytes become a per-pair record)
            raise ImageLoadError("<embedded bytes>", f"{type(exc).__name__}: {exc}") from exc
    return load_image(image)


def resize_center_crop(im: Image.Image, resolution: int) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
    """Resize the short side to `resolution`, centre-crop a square; return (pixels in [-1, 1] [3, R, R],
    original (h, w), crop (top, left) in the resized image) - the last two are SDXL's micro-conditioning."""
    w0, h0 = im.size
    scale = resolution / min(w0, h0)
    w1, h1 = max(resolution, round(w0 * scale)), max(resolution, round(h0 * scale))
    im = im.resize((w1, h1), Image.BICUBIC)
    top, left = (h1 - resolution) // 2, (w1 - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 127.5 - 1.0
    return arr, (h0, w0), (top, left)


class PreferencePairDataset(Dataset):
    """Items: {"prompt", "pixels_w", "pixels_l" ([3, R, R] in [-1, 1]), "weight", "time_ids_w", "time_ids_l"}.

    Images are opened when the dataset is built only if `check_images` (then unreadable pairs are left out and
    listed in `pairs.unreadable`); otherwise an unreadable image raises ImageLoadError naming the file.
    """

    def __init__(self, pairs: PairSet, resolution: int, check_images: bool = True) -> None:
        if resolution <= 0 or resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8; got {resolution}")
        self.resolution = int(resolution)
        if check_images:
            pairs = _drop_unreadable(pairs)
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pw, orig_w, crop_w = resize_center_crop(_open(self.pairs.winners[i]), self.resolution)
        pl, orig_l, crop_l = resize_center_crop(_open(self.pairs.losers[i]), self.resolution)
        target = (self.resolution, self.resolution)
        return {
            "prompt": self.pairs.prompts[i],
            "pixels_w": pw,
            "pixels_l": pl,
            "weight": torch.tensor(self.pairs.weights[i], dtype=torch.float32),
            "time_ids_w": sdxl_time_ids(orig_w, crop_w, target),
            "time_ids_l": sdxl_time_ids(orig_l, crop_l, target),
        }


def _drop_unreadable(pairs: PairSet) -> PairSet:
    from imgpref.data.images import ImageLoadError

    bad: dict[int, tuple[str, str]] = {}
    status: dict[Any, str | None] = {}
    for i, (w, l) in enumerate(zip(pairs.winners, pairs.losers)):
        for img in (w, l):
            key = img if not isinstance(img, (bytes, bytearray, memoryview)) else hash(bytes(img))
            if key not in status:
                try:
                    _open(img)
                    status[key] = None
                except ImageLoadError as exc:
                    status[key] = exc.reason
            if status[key] is not None and i not in bad:
                bad[i] = (img if isinstance(img, str) else "<embedded bytes>", status[key])
    if not bad:
        return pairs
    for img, reason in sorted(set(bad.values())):
        log.warning("unreadable image, its pairs are left out: %s (%s)", img, reason)
    keep = [i for i in range(len(pairs)) if i not in bad]
    return PairSet(
        [pairs.prompts[i] for i in keep], [pairs.winners[i] for i in keep], [pairs.losers[i] for i in keep],
        [pairs.weights[i] for i in keep], n_rows=pairs.n_rows, n_ties_dropped=pairs.n_ties_dropped,
        n_ties_kept=pairs.n_ties_kept, unreadable=list(bad.values()),
    )


def load_pairs(manifest: str | os.PathLike | pd.DataFrame, *, split: str | None = "auto", ties: str = "drop") -> PairSet:
    """Read a canonical manifest (path or an already read DataFrame) into oriented pairs; logs dropped ties."""
    from imgpref.data.manifest import read_manifest

    df = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(Path(manifest))
    pairs = orient_pairs(select_split(df, split), ties=ties)
    if pairs.n_ties_dropped:
        log.warning("%d tied pairs dropped (equal votes for both images); use ties='keep' to keep them",
                    pairs.n_ties_dropped)
    return pairs


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"prompt": [it["prompt"] for it in items]}
    for k in ("pixels_w", "pixels_l", "latents_w", "latents_l", "weight", "time_ids_w", "time_ids_l"):
        if k in items[0]:  # latents_* replace pixels_* with cached latents (imgpref.align.latent_pairs)
            out[k] = torch.stack([it[k] for it in items])
    return out


class PreferencePairDataModule(L.LightningDataModule):
    """Train (and optional val) pairs from one manifest.

    split: which rows train on ("auto": see `select_split`); val_split: rows for validation (None: none).
    latents: None (VAE-encode the images) or "auto" / a file of cached latents written by `imgpref align pairs`
    (`imgpref.align.latent_pairs`): exact on-policy latents, no VAE encode.
    lists: read the manifest as ranked lists (`imgpref.align.lists`, written by `imgpref align pairs --lists`) and
    yield list batches for RankDPO (model.method: rankdpo) instead of pairs.
    """

    def __init__(
        self,
        manifest: str | os.PathLike | pd.DataFrame,
        resolution: int = 32,
        batch_size: int = 2,
        ties: str = "drop",
        split: str | None = "auto",
        val_split: str | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        check_images: bool = True,
        seed: int = 0,
        latents: str | None = None,
        lists: bool = False,
    ) -> None:
        super().__init__()
        self.lists = bool(lists)
        # latents: None (VAE-encode the images), "auto" (the latents.safetensors that `imgpref align pairs` writes
        # beside the manifest) or a path: train on those cached on-policy latents (imgpref.align.latent_pairs).
        self.latents = latents
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.manifest, self.resolution, self.batch_size = manifest, int(resolution), int(batch_size)
        self.ties, self.split, self.val_split = ties, split, val_split
        self.num_workers, self.shuffle, self.check_images, self.seed = num_workers, shuffle, check_images, seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._latent_cache: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from imgpref.data.manifest import read_manifest

        df = self.manifest if isinstance(self.manifest, pd.DataFrame) else \
            read_manifest(Path(self.manifest), keep_extra=self.lists)
        if self.lists:
            self._setup_lists(df)
            return
        train = load_pairs(df, split=self.split, ties=self.ties)
        if len(train) == 0:
            raise ValueError(f"no usable pairs in {self.manifest!s}: {train.summary()}")
        self.train_set = self._dataset(train)
        if len(self.train_set) == 0:
            raise ValueError(f"no readable pairs in {self.manifest!s}: {self.train_set.pairs.summary()}")
        if self.val_split:
            self.val_set = self._dataset(load_pairs(df, split=self.val_split, ties=self.ties))

    def _setup_lists(self, df: pd.DataFrame) -> None:
        from imgpref.align.lists import ListDataset, load_lists

        cache = self._cached_latents() if self.latents else None
        train = load_lists(df, split=self.split)
        if len(train) == 0:
            raise ValueError(f"no lists of >= 2 images in {self.manifest!s}; write them with `imgpref align pairs --lists`")
        self.train_set = ListDataset(train, self.resolution, cache)
        if self.val_split:
            self.val_set = ListDataset(load_lists(df, split=self.val_split), self.resolution, cache)

    def _cached_latents(self) -> dict:
        from imgpref.align.latent_pairs import find_latents_file, load_latents

        if isinstance(self.manifest, pd.DataFrame):
            raise ValueError("latents='auto' needs the manifest's path; pass latents=/path/to/latents.safetensors")
        if self._latent_cache is None:
            self._latent_cache = load_latents(find_latents_file(self.manifest, self.latents))
        return self._latent_cache

    def _dataset(self, pairs: PairSet) -> Dataset:
        # Always the pixel dataset first: it leaves out (and lists) pairs with unreadable images.
        ds = PreferencePairDataset(pairs, self.resolution, self.check_images)
        if not self.latents:
            return ds
        from imgpref.align.latent_pairs import LatentPairDataset

        return LatentPairDataset(ds.pairs, self._cached_latents())

    def summary(self) -> dict[str, int]:
        self.setup()
        return self.train_set.lists.summary() if self.lists else self.train_set.pairs.summary()

    def _collate(self):
        from imgpref.align.lists import collate_lists

        return collate_lists if self.lists else collate_pairs

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=self.shuffle, generator=gen,
                          num_workers=self.num_workers, collate_fn=self._collate(), drop_last=False)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=self._collate())
