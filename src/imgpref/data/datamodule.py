"""LightningDataModule for preference training: manifest rows -> batches of items (image, prompt) and pairs.

A batch is a dict:

    pixels  [N, 3, H, W]  model input of the N distinct items of the batch (or `emb` [N, D] when features are set)
    txt     [N, D]        text embeddings (only with features of a prompt-conditioned scorer)
    prompts list[str]     the prompt of each item ("" for prompt-free data)
    i0, i1  [P]           item index (into the batch) of image_0 / image_1 of each pair
    votes   [P, 3]        votes_0, votes_1, votes_tie (soft targets come from these: q = (v0 + v_tie / 2) / n)
    prompt_weight [P]     1 / (number of pairs of the pair's prompt in the whole split): PickScore's balancing
    annotators list[str]  the manifest's `annotator` of each pair ("" when unknown), for pluralistic heads
    order, mask [G, K]    (batching="groups" only) items of each group ranked best first by a Bradley-Terry fit
                          of the group's votes, for Plackett-Luce; padded slots masked and last

Each item is embedded once per batch however many pairs it is in. With batching="groups" a batch holds whole
groups (all renderings of a scene: 6 items, 15 pairs), which is ~2.5x fewer backbone passes per pair.

Images are decoded and preprocessed once and kept in memory as tensors when they fit in `preload_max_mb`
(`preload="auto"`), otherwise DataLoader workers decode them per batch. Files and embedded bytes are decoded
by the one loader, `imgpref.data.images.load_image` (same decompression-bomb check, EXIF and alpha handling). An
image that cannot be read is reported (path and reason) and its pairs are dropped; the rest of the run goes on.
Without preload, `setup` only checks headers; a file that fails later (e.g. truncated) drops its pairs from each
batch with a warning, and a batch left with no pair is skipped by the training module.

Order is reproducible: the batch plan of epoch e is a function of (seed, e) only, so a resumed run draws the
same batches as an uninterrupted one. Under DDP each rank takes every world_size-th batch of the same plan.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from imgpref.data.manifest import read_manifest

log = logging.getLogger(__name__)

BATCHINGS = ("pairs", "groups")


def open_image(value: Any) -> Image.Image:
    """A manifest image cell (path or encoded bytes) -> RGB PIL image; ValueError with the reason if unusable.

    Files and embedded bytes go through the one loader, `imgpref.data.images.load_image` (decompression-bomb
    check, EXIF orientation, alpha over white)."""
    from imgpref.data.images import load_image

    return load_image(value)


@dataclass
class PairTable:
    """The pairs of one split as arrays over a shared item list."""

    i0: np.ndarray      # int64 [P] item index of image_0
    i1: np.ndarray      # int64 [P]
    votes: np.ndarray   # int64 [P, 3]
    group: np.ndarray   # int64 [P] group code
    prompt: np.ndarray | None = None      # int64 [P] prompt code (pairs of one prompt share it)
    annotator: np.ndarray | None = None   # object [P] annotator name ("" = unknown)

    def __len__(self) -> int:
        return len(self.i0)

    def subset(self, keep: np.ndarray) -> "PairTable":
        """The rows where boolean `keep` is True (every per-pair column)."""
        opt = lambda a: None if a is None else a[keep]  # noqa: E731
        return PairTable(self.i0[keep], self.i1[keep], self.votes[keep], self.group[keep], opt(self.prompt),
                         opt(self.annotator))

    def prompt_weights(self) -> np.ndarray:
        """float64 [P]: 1 / (pairs of this table with the pair's prompt); counts span the whole table (split)."""
        if self.prompt is None or len(self.prompt) == 0:
            return np.ones(len(self.i0))
        counts = np.bincount(self.prompt)
        return 1.0 / counts[self.prompt]


def bt_order(n_items: int, a: np.ndarray, b: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """Items 0..n-1 ranked best first by a (lightly regularised) Bradley-Terry fit of pairwise votes.

    Ties count half a win each way. Uses choix; items never compared keep score 0."""
    import choix

    wins = np.zeros((n_items, n_items))
    for x, y, (v0, v1, vt) in zip(a, b, votes):
        wins[x, y] += v0 + 0.5 * vt
        wins[y, x] += v1 + 0.5 * vt
    try:
        params = choix.ilsr_pairwise_dense(wins, alpha=0.01)
    except Exception:  # noqa: BLE001 - degenerate groups (no votes): fall back to win counts
        params = wins.sum(1) - wins.sum(0)
    return np.argsort(-params, kind="stable")


class EpochBatchSampler(Sampler[list[int]]):
    """Yields lists of pair indices; the plan of each epoch depends only on (seed, epoch)."""

    def __init__(self, n_pairs: int, batch_size: int, *, shuffle: bool, seed: int = 0,
                 groups: np.ndarray | None = None, rank: int = 0, world_size: int = 1, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.n_pairs, self.batch_size, self.shuffle, self.seed = n_pairs, int(batch_size), shuffle, int(seed)
        self.groups, self.rank, self.world_size, self.drop_last = groups, rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = int(epoch)

    def plan(self) -> list[list[int]]:
        """All batches of the current epoch (before sharding across ranks)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.groups is None:
            idx = rng.permutation(self.n_pairs) if self.shuffle else np.arange(self.n_pairs)
            batches = [idx[i:i + self.batch_size].tolist() for i in range(0, self.n_pairs, self.batch_size)]
        else:
            # batch_size counts pairs; whole groups are packed until the batch has at least batch_size pairs
            codes = np.unique(self.groups)
            codes = rng.permutation(codes) if self.shuffle else codes
            members = {int(c): np.flatnonzero(self.groups == c) for c in codes}
            batches, cur = [], []
            for c in codes:
                cur.extend(members[int(c)].tolist())
                if len(cur) >= self.batch_size:
                    batches.append(cur)
                    cur = []
            if cur:
                batches.append(cur)
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        if self.world_size > 1:
            # every rank gets the same number of batches (DDP needs it): wrap around the plan
            n = -(-len(batches) // self.world_size) * self.world_size
            batches = [batches[i % len(batches)] for i in range(n)][self.rank::self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.plan())

    def __len__(self) -> int:
        return len(self.plan())


class PairBatches(Dataset):
    """Fetches whole batches (`__getitems__`): distinct items once, pair indices into them."""

    def __init__(self, table: PairTable, items: Sequence[Any], prompts: Sequence[str],
                 load: Callable[[int], Tensor] | None, store: Tensor | None, txt: Tensor | None,
                 listwise: bool, feature_key: str = "pixels"):
        self.table, self.items, self.prompts = table, items, list(prompts)
        self.load, self.store, self.txt, self.listwise, self.feature_key = load, store, txt, listwise, feature_key
        self.weights = torch.from_numpy(table.prompt_weights().astype(np.float32))
        self.unreadable: set[int] = set()  # items that failed to decode here (per DataLoader worker process)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return self.__getitems__([k])

    def __getitems__(self, pair_idx: list[int]) -> dict[str, Any]:
        t = self.table
        sel = np.asarray(pair_idx, dtype=np.int64)
        loaded: dict[int, Tensor] = {}
        if self.store is None:
            sel, loaded = self._readable(sel)
        a, b = t.i0[sel], t.i1[sel]
        uniq, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
        n = len(sel)
        if self.store is not None:
            x = self.store[torch.from_numpy(uniq)]
        elif len(uniq):
            x = torch.stack([loaded[int(u)] for u in uniq])
        else:  # every pair of the batch had an unreadable image; the module skips an empty batch
            x = torch.zeros(0)
        batch: dict[str, Any] = {
            self.feature_key: x,
            "prompts": [self.prompts[int(u)] for u in uniq],
            "i0": torch.from_numpy(inv[:n].astype(np.int64)),
            "i1": torch.from_numpy(inv[n:].astype(np.int64)),
            "votes": torch.from_numpy(t.votes[sel].astype(np.int64)),
            "prompt_weight": self.weights[torch.from_numpy(sel)],
            "annotators": [str(a) for a in t.annotator[sel]] if t.annotator is not None else [""] * n,
        }
        if self.txt is not None:
            batch["txt"] = self.txt[torch.from_numpy(uniq)]
        if self.listwise and n:
            batch["order"], batch["mask"] = self._orders(sel, inv[:n], inv[n:])
        elif self.listwise:
            batch["order"], batch["mask"] = torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0, dtype=torch.bool)
        return batch

    def _readable(self, sel: np.ndarray) -> tuple[np.ndarray, dict[int, Tensor]]:
        """Decode the items of pairs `sel`; pairs with an image that fails (e.g. a truncated file that passed the
        header check of `setup`) are left out with a warning, as preloading drops them, instead of aborting."""
        t = self.table
        loaded: dict[int, Tensor] = {}
        for k in np.unique(np.concatenate([t.i0[sel], t.i1[sel]])).tolist():
            if k in self.unreadable:
                continue
            try:
                loaded[k] = self.load(k)
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the epoch
                self.unreadable.add(k)
                log.warning("unreadable image %s: %s; its pairs are left out", _label(self.items[k]),
                            getattr(exc, "reason", None) or exc)
        keep = np.array([int(i) in loaded and int(j) in loaded for i, j in zip(t.i0[sel], t.i1[sel])], dtype=bool)
        return sel[keep], loaded

    def _orders(self, sel: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[Tensor, Tensor]:
        g = self.table.group[sel]
        rows = []
        for code in np.unique(g):
            m = g == code
            local, loc_inv = np.unique(np.concatenate([a[m], b[m]]), return_inverse=True)
            k = int(m.sum())
            ranked = bt_order(len(local), loc_inv[:k], loc_inv[k:], self.table.votes[sel][m])
            rows.append(local[ranked])
        width = max(len(r) for r in rows)
        order = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, items in enumerate(rows):
            order[r, : len(items)] = torch.from_numpy(items.astype(np.int64))
            mask[r, : len(items)] = True
        return order, mask


def _first(batch: Any) -> Any:
    return batch  # __getitems__ already returns the collated batch


class PreferenceDataModule(L.LightningDataModule):
    """Manifest -> train/val batches (see the module docstring).

    manifest: path of a canonical manifest (or an already read frame); rows with split "train" train,
      rows with split "val" validate. preprocess: PIL -> model input tensor (the scorer's `preprocess`).
    batching: "pairs" (random pairs) or "groups" (whole groups; required for listwise=True).
    preload: "auto" (cache decoded tensors in memory when they fit in preload_max_mb), True or False.
    val_holdout: when the manifest has no val rows, this share of the train groups becomes val (0 = none).
    """

    def __init__(
        self,
        manifest: str | Path | pd.DataFrame,
        preprocess: Callable[[Image.Image], Tensor] | None = None,
        *,
        batch_size: int = 64,
        val_batch_size: int | None = None,
        batching: str = "pairs",
        listwise: bool = False,
        preload: bool | str = "auto",
        preload_max_mb: float = 2048.0,
        num_workers: int = 0,
        seed: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        val_holdout: float = 0.15,
    ):
        super().__init__()
        if batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {BATCHINGS}; got {batching!r}")
        if listwise and batching != "groups":
            raise ValueError("listwise (Plackett-Luce) training needs batching: groups")
        if preload not in (True, False, "auto"):
            raise ValueError(f"preload must be true, false or auto; got {preload!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.manifest = manifest
        self.preprocess = preprocess
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size or max(batch_size, 256))
        self.batching, self.listwise, self.preload = batching, bool(listwise), preload
        self.preload_max_mb, self.num_workers, self.seed = float(preload_max_mb), int(num_workers), int(seed)
        self.train_split, self.val_split = train_split, val_split
        if not 0.0 <= float(val_holdout) < 1.0:
            raise ValueError(f"val_holdout must be in [0, 1); got {val_holdout}")
        self.val_holdout = float(val_holdout)
        self.items: list[Any] = []
        self.prompts: list[str] = []
        self.store: Tensor | None = None
        self.features: Tensor | None = None
        self.text_features: Tensor | None = None
        self.errors: list[dict[str, str]] = []
        self.tables: dict[str, PairTable] = {}
        self._ready = False

    def annotator_names(self, split: str | None = None) -> list[str]:
        """Sorted distinct non-empty annotators of `split` (default: the train split), after `setup`."""
        t = self.tables.get(split or self.train_split)
        if t is None or t.annotator is None:
            return []
        return sorted({str(a) for a in t.annotator if a})

    # ------------------------------------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        df = self.manifest if isinstance(self.manifest, pd.DataFrame) else read_manifest(self.manifest)
        df = df[df["split"].isin([self.train_split, self.val_split])].reset_index(drop=True)
        if not (df["split"] == self.val_split).any() and self.val_holdout > 0:
            df = self._hold_out_val(df)
        if not (df["split"] == self.train_split).any():
            raise ValueError(f"the manifest has no rows with split {self.train_split!r}; "
                             "set the split column (train/val/test) or run `imgpref data synth/convert`")
        keys: dict[tuple[str, str], int] = {}
        idx = np.zeros((len(df), 2), dtype=np.int64)
        from imgpref.data.pairs import image_key

        for r, (x0, x1, prompt) in enumerate(zip(df["image_0"], df["image_1"], df["prompt"].astype(str))):
            for c, v in enumerate((x0, x1)):
                key = (image_key(v), prompt)
                if key not in keys:
                    keys[key] = len(self.items)
                    self.items.append(v)
                    self.prompts.append(prompt)
                idx[r, c] = keys[key]
        self._decide_preload()
        bad = self._bad_items()
        keep = ~(np.isin(idx[:, 0], bad) | np.isin(idx[:, 1], bad))
        if not keep.all():
            log.warning("dropping %d pair(s) with unreadable images", int((~keep).sum()))
        gcodes = pd.factorize(df["group"].astype(str))[0].astype(np.int64)
        pcodes = pd.factorize(df["prompt"].astype(str))[0].astype(np.int64)
        ann = (df["annotator"].fillna("").astype(str) if "annotator" in df.columns
               else pd.Series([""] * len(df))).to_numpy(object)
        votes = df[["votes_0", "votes_1", "votes_tie"]].to_numpy(np.int64)
        for split in (self.train_split, self.val_split):
            m = keep & (df["split"] == split).to_numpy()
            self.tables[split] = PairTable(idx[m, 0], idx[m, 1], votes[m], gcodes[m], pcodes[m], ann[m])
        if len(self.tables[self.train_split]) == 0:
            raise ValueError("no trainable pairs left: every training pair has an unreadable image")
        self._ready = True

    def _hold_out_val(self, df: pd.DataFrame) -> pd.DataFrame:
        """No val rows: move a seeded `val_holdout` share of the train groups (scenes / prompts) to val, so early
        stopping and calibration still have held-out data (never pairs of one group on both sides)."""
        groups = pd.unique(df.loc[df["split"] == self.train_split, "group"].astype(str))
        n_val = int(round(len(groups) * self.val_holdout))
        if len(groups) < 2 or n_val < 1:
            return df
        rng = np.random.default_rng(self.seed)
        chosen = set(rng.choice(groups, size=min(n_val, len(groups) - 1), replace=False).tolist())
        df = df.copy()
        df.loc[df["group"].astype(str).isin(chosen), "split"] = self.val_split
        log.warning("the manifest has no %r rows: holding out %d of %d train groups for validation",
                    self.val_split, len(chosen), len(groups))
        return df

    def _decide_preload(self) -> None:
        if self.preload is False or self.preprocess is None:
            return
        probe = None
        for k in range(len(self.items)):
            try:
                probe = self.preprocess(open_image(self.items[k]))
                break
            except Exception:  # noqa: BLE001 - reported in _bad_items
                continue
        if probe is None:
            return
        mb = probe.numel() * probe.element_size() * len(self.items) / 2**20
        if self.preload == "auto" and mb > self.preload_max_mb:
            log.info("images need %.0f MB > preload_max_mb %.0f: decoding in DataLoader workers", mb, self.preload_max_mb)
            return
        store = torch.empty((len(self.items), *probe.shape), dtype=probe.dtype)
        for k in range(len(self.items)):
            try:
                store[k] = self.preprocess(open_image(self.items[k]))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
                self.errors.append({"image": _label(self.items[k]), "error": str(exc)})
                store[k] = 0
        self.store = store

    def _bad_items(self) -> np.ndarray:
        if self.store is not None:
            bad_labels = {e["image"] for e in self.errors}
            return np.array([k for k, v in enumerate(self.items) if _label(v) in bad_labels], dtype=np.int64)
        # lazy decoding: check that each file opens (cheap header read) so bad pairs are dropped up front
        bad = []
        for k, v in enumerate(self.items):
            try:
                if isinstance(v, (bytes, bytearray, memoryview)):
                    Image.open(io.BytesIO(bytes(v))).verify()
                else:
                    with Image.open(v) as im:
                        im.verify()
            except Exception as exc:  # noqa: BLE001
                self.errors.append({"image": _label(v), "error": f"{type(exc).__name__}: {exc}"})
                bad.append(k)
        return np.array(bad, dtype=np.int64)

    # ------------------------------------------------------------------------------------------- features
    def set_features(self, image_features: Tensor, text_features: Tensor | None = None) -> None:
        """Serve precomputed embeddings ([n_items, D], in `self.items` order) instead of pixels (head mode)."""
        if image_features.shape[0] != len(self.items):
            raise ValueError(f"got features for {image_features.shape[0]} items; the data module has {len(self.items)}")
        self.features, self.text_features = image_features, text_features

    def item_loader(self, batch_size: int = 64) -> DataLoader:
        """Every item once, in order, as {"pixels", "prompts", "index"} batches (for embedding caches)."""
        return DataLoader(_Items(self), batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=_collate_items)

    def load_item(self, k: int) -> Tensor:
        """Model input of item k (from memory when preloaded)."""
        if self.store is not None:
            return self.store[k]
        if self.preprocess is None:
            raise ValueError("PreferenceDataModule needs `preprocess` (the scorer's) to decode images")
        return self.preprocess(open_image(self.items[k]))

    # ----------------------------------------------------------------------------------------- dataloaders
    def _dataset(self, split: str) -> PairBatches:
        if self.features is not None:
            return PairBatches(self.tables[split], self.items, self.prompts, None, self.features,
                               self.text_features, self.listwise, feature_key="emb")
        return PairBatches(self.tables[split], self.items, self.prompts, self.load_item, self.store, None,
                           self.listwise)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        table = self.tables[split]
        rank, world = 0, 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            rank, world = int(trainer.global_rank), int(trainer.world_size)
        sampler = EpochBatchSampler(len(table), batch_size, shuffle=shuffle, seed=self.seed,
                                    groups=table.group if self.batching == "groups" else None,
                                    rank=rank, world_size=world)
        in_memory = self.features is not None or self.store is not None
        workers = 0 if in_memory else self.num_workers
        return DataLoader(self._dataset(split), batch_sampler=sampler, collate_fn=_first, num_workers=workers,
                          persistent_workers=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_split, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if len(self.tables.get(self.val_split, ())) == 0:
            return []
        return self._loader(self.val_split, self.val_batch_size, shuffle=False)


class _Items(Dataset):
    def __init__(self, dm: PreferenceDataModule):
        self.dm = dm

    def __len__(self) -> int:
        return len(self.dm.items)

    def __getitem__(self, k: int) -> tuple[Tensor, str, int]:
        return self.dm.load_item(k), self.dm.prompts[k], k


def _collate_items(rows: list[tuple[Tensor, str, int]]) -> dict[str, Any]:
    return {"pixels": torch.stack([r[0] for r in rows]), "prompts": [r[1] for r in rows],
            "index": torch.tensor([r[2] for r in rows])}


def _label(v: Any) -> str:
    from imgpref.data.pairs import image_key

    return image_key(v)
