"""Embeddings of every distinct image (and prompt) computed once with a frozen backbone, for head-only training.

`EmbeddingTable.build(backbone, images)` decodes each distinct image once (DataLoader workers, the robust
loader of `imgpref.data.images`, full-size decoding as `imgpref score`), runs the frozen backbone in batches without
gradients and keeps the float32 embeddings in memory; with `cache_dir` they are also stored on disk in the
package's embedding cache (`imgpref.scorers.cache`: one entry per file content hash and backbone), so a second
run, or `imgpref score --cache` of the same backbone, skips the backbone entirely. After that a head-only epoch
is an index gather plus the head's step: `CachedPairs` serves batches in the same format as
`imgpref.data.datamodule.PreferenceDataModule` (`emb`, `i0`, `i1`, `votes`, ...), and `attach_features` plugs a
table into such a data module (`set_features`).

Disk namespace: `imgpref.scorers.identity.embedding_namespace` (the backbone key plus a sha256 digest of its
weights, its preprocessing, decode size and precision), so two randomly initialised models of one architecture
(same key) never read each other's entries, and `imgpref score --cache` shares the same namespace.
"""
from __future__ import annotations

import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from imgpref.data.pairs import image_key
from imgpref.scorers.base import Backbone
from imgpref.scorers.cache import EmbeddingCache, file_hash

log = logging.getLogger(__name__)


def weights_fingerprint(module: torch.nn.Module, stride: int = 997) -> str:
    """Digest of a module's weights: `imgpref.scorers.identity.module_digest` (sha256 of every tensor's bytes;
    `stride` is ignored and kept for callers)."""
    from imgpref.scorers.identity import module_digest

    return module_digest(module)  # one digest for every cache (full sha256, remembered until the weights change)


def _content_hash(value: Any) -> str:
    """blake2b-128 of the file's bytes (or of the embedded bytes): the key `imgpref.scorers.cache` uses."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return hashlib.blake2b(bytes(value), digest_size=16).hexdigest()
    return file_hash(value)


class _Decode(Dataset):
    """Item i -> (i, model input, None) or (i, None, reason); never raises (a bad file never stops a run)."""

    def __init__(self, images: Sequence[Any], rows: Sequence[int], preprocess, draft: int | None,
                 ready: dict[int, Tensor] | None = None):
        self.images, self.rows, self.preprocess, self.draft = images, list(rows), preprocess, draft
        self.ready = ready or {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        i = self.rows[j]
        if i in self.ready:  # already decoded and preprocessed by the caller
            return i, self.ready[i], None
        value = self.images[i]
        try:
            if isinstance(value, (bytes, bytearray, memoryview)):
                from imgpref.data.datamodule import open_image

                image = open_image(value)
            else:
                from imgpref.data.images import load_image

                image = load_image(value, draft_size=self.draft)
        except Exception as exc:  # noqa: BLE001  (ImageLoadError carries a one-line reason)
            return i, None, getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        try:
            return i, self.preprocess(image), None
        except Exception as exc:  # noqa: BLE001
            return i, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


def _collate(batch: list) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    ok = [(i, x) for i, x, err in batch if err is None]
    failed = [(i, err) for i, _, err in batch if err is not None]
    return [i for i, _ in ok], (torch.stack([x for _, x in ok]) if ok else None), failed


@dataclass
class EmbeddingTable:
    """Embeddings [N, D] (float32, CPU) of N distinct items, and where each item is.

    keys: the identity of each row (`imgpref.data.pairs.image_key` of an image: its path string, or a content
    hash of embedded bytes; the prompt itself for text tables). `ok[i]` is False for an image that could not be
    decoded (its row is NaN and `errors` holds the reason). `stats`: counts and seconds of the build.
    """

    keys: list[str]
    emb: Tensor
    ok: Tensor
    errors: dict[str, str] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._row = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def index_of(self, item: Any) -> int:
        """Row of an image path / bytes (or a prompt, for text tables); KeyError naming it if absent."""
        key = item if isinstance(item, str) and item in self._row else image_key(item)
        try:
            return self._row[key]
        except KeyError:
            raise KeyError(f"{str(key)[:200]!r} is not in this embedding table (build it with that image)") from None

    def indices(self, items: Sequence[Any]) -> Tensor:
        """Rows [len(items)] (int64) of many items."""
        return torch.tensor([self.index_of(x) for x in items], dtype=torch.long)

    def gather(self, items: Sequence[Any]) -> Tensor:
        """Embeddings [len(items), D] of `items`."""
        return self.emb[self.indices(items)]

    # ---------------------------------------------------------------------------------------------- builders
    @classmethod
    @torch.no_grad()  # not inference_mode: its tensors cannot enter a later autograd graph (head training)
    def build(
        cls,
        backbone: Backbone,
        images: Sequence[Any],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        cache_dir: str | Path | EmbeddingCache | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
        preprocessed: Tensor | None = None,
    ) -> "EmbeddingTable":
        """Embed every distinct image of `images` (paths or encoded bytes; duplicates embedded once).

        preprocessed: model inputs [len(images), ...] aligned with `images` (e.g. a data module's preloaded
        store); used instead of decoding the files again.

        backbone: frozen (evaluated in eval mode, no gradients), on `device` (default: where it is).
        num_workers: DataLoader decode processes (0: in this process). cache_dir: an embedding-cache folder
        (`imgpref.scorers.cache`) read before and written after computing. Undecodable images are reported
        in `errors` (and logged), never raised.
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}")
        t0 = time.perf_counter()
        keys: list[str] = []
        values: list[Any] = []
        seen: set[str] = set()
        ready: dict[int, Tensor] = {}
        if preprocessed is not None and len(preprocessed) != len(images):
            raise ValueError(f"preprocessed has {len(preprocessed)} inputs for {len(images)} images; align them")
        for j, v in enumerate(images):
            k = image_key(v)
            if k not in seen:
                seen.add(k)
                if preprocessed is not None:
                    ready[len(keys)] = preprocessed[j]
                keys.append(k)
                values.append(v)
        dev = torch.device(device) if device is not None else backbone.device
        was_training = backbone.training
        backbone = backbone.to(dev).eval()
        pdtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
        dim = int(backbone.embed_dim) or 0
        rows: dict[int, np.ndarray] = {}
        errors: dict[str, str] = {}
        store = cache_dir if isinstance(cache_dir, EmbeddingCache) or cache_dir is None else EmbeddingCache(cache_dir)
        ns = None
        hashes: dict[int, str] = {}
        if store is not None:
            from imgpref.scorers.identity import embedding_namespace

            # the namespace `imgpref score --cache` uses too: weights digest, preprocessing, decode size, dtype.
            # Full-size decoding, as `imgpref score` does by default: a head trained on these embeddings sees
            # exactly what it will be scored on (reduced-size JPEG decoding is `imgpref score --fast` only).
            ns = embedding_namespace(backbone, dtype=pdtype, draft=None)
            for i, v in enumerate(values):
                try:
                    hashes[i] = _content_hash(v)
                except OSError as exc:
                    errors[keys[i]] = f"cannot read file: {exc.strerror or exc}"
                    continue
                e = store.get(ns, hashes[i])
                if e is not None:
                    rows[i] = e
        hits = len(rows)
        todo = [i for i in range(len(values)) if i not in rows and keys[i] not in errors]
        loader = DataLoader(_Decode(values, todo, backbone.preprocess, None, ready),
                            batch_size=int(batch_size), shuffle=False,
                            num_workers=0 if ready else int(num_workers),  # in memory: no decoding to spread
                            collate_fn=_collate)
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="img", desc="embedding", file=sys.stderr, dynamic_ncols=True)
        t_embed = time.perf_counter()
        for idx, x, failed in loader:
            for i, reason in failed:
                errors[keys[i]] = reason
            if x is not None:
                e = backbone.embed_images(x.to(dev, pdtype)).float().cpu().numpy()
                for i, row in zip(idx, e):
                    rows[i] = row
                    if store is not None and i in hashes:
                        store.put(ns, hashes[i], row)
            if bar is not None:
                bar.update(len(idx) + len(failed))
        if bar is not None:
            bar.close()
        if was_training:
            backbone.train()
        if rows:
            dim = int(next(iter(rows.values())).shape[-1])
        emb = torch.full((len(values), dim), math.nan, dtype=torch.float32)
        for i, row in rows.items():
            emb[i] = torch.from_numpy(np.asarray(row, dtype=np.float32))
        ok = torch.zeros(len(values), dtype=torch.bool)
        ok[list(rows)] = True
        for k, reason in errors.items():
            log.warning("cannot embed %s: %s", k[:200], reason)
        now = time.perf_counter()
        stats = {"items": len(values), "cache_hits": hits, "computed": len(rows) - hits, "failed": len(errors),
                 "seconds": now - t0, "embed_seconds": now - t_embed}
        return cls(keys, emb, ok, errors, stats)

    @classmethod
    @torch.no_grad()  # not inference_mode: its tensors cannot enter a later autograd graph (head training)
    def build_texts(cls, backbone: Backbone, prompts: Sequence[str], *, batch_size: int = 256,
                    device: str | torch.device | None = None,
                    prompt_texts: Callable[[Sequence[str]], list[str]] | None = None) -> "EmbeddingTable":
        """Embed every distinct prompt once (rows keyed by the prompt text).

        prompt_texts: what is embedded for the prompts (a scorer's `prompt_texts`, e.g. CLIPScore's caption
        prefix), so cached training sees the same text as `Scorer.embed_texts`; rows stay keyed by the prompt."""
        if not backbone.has_text:
            raise ValueError(f"backbone {backbone.key!r} has no text encoder; it cannot embed prompts")
        t0 = time.perf_counter()
        keys = list(dict.fromkeys(str(p) for p in prompts))
        dev = torch.device(device) if device is not None else backbone.device
        was_training = backbone.training
        backbone = backbone.to(dev).eval()
        texts = list(prompt_texts(keys)) if prompt_texts is not None else keys
        parts = [backbone.embed_texts(texts[s:s + batch_size]).float().cpu() for s in range(0, len(texts), batch_size)]
        if was_training:
            backbone.train()
        emb = torch.cat(parts) if parts else torch.empty(0, int(backbone.embed_dim), dtype=torch.float32)
        return cls(keys, emb.clone(), torch.ones(len(keys), dtype=torch.bool), {},
                   {"items": len(keys), "seconds": time.perf_counter() - t0})


class CachedPairs(Dataset):
    """Pairs over an `EmbeddingTable`, served as whole batches in the data module's batch format.

    `dataset[list_of_pair_indices]` (or `__getitems__`) returns {"emb" [N, D], "i0", "i1" [P], "votes" [P, 3],
    "prompts" (N), and "txt" [N, D] when text embeddings are given} with each distinct image of the batch
    once, exactly what `RewardModelModule.training_step` takes. Use `loader()` for shuffled epochs.
    Pairs with an image that could not be embedded are dropped at construction (`dropped` counts them).
    """

    def __init__(self, table: EmbeddingTable, image_0: Sequence[Any], image_1: Sequence[Any], votes: Any,
                 prompts: Sequence[str] | None = None, texts: EmbeddingTable | None = None):
        i0, i1 = table.indices(image_0), table.indices(image_1)
        votes = torch.as_tensor(np.asarray(votes), dtype=torch.long).reshape(-1, 3)
        if not (len(i0) == len(i1) == votes.shape[0]):
            raise ValueError(f"image_0 ({len(i0)}), image_1 ({len(i1)}) and votes ({votes.shape[0]}) differ in length")
        if prompts is not None and len(prompts) != len(i0):
            raise ValueError(f"got {len(prompts)} prompts for {len(i0)} pairs; pass one per pair")
        keep = table.ok[i0] & table.ok[i1]
        self.dropped = int((~keep).sum())
        self.table, self.texts = table, texts
        self.i0, self.i1, self.votes = i0[keep], i1[keep], votes[keep]
        kept = keep.nonzero().flatten().tolist()
        self.prompts = [str(prompts[k]) for k in kept] if prompts is not None else None
        # prompts as codes, so a batch's distinct (image, prompt) items are one torch.unique
        names = list(dict.fromkeys(self.prompts)) if self.prompts is not None else [""]
        code = {p: c for c, p in enumerate(names)}
        self.prompt_names = names
        self.pcode = torch.tensor([code[p] for p in self.prompts] if self.prompts is not None else [0] * len(kept),
                                  dtype=torch.long)
        if texts is not None and self.prompts is None:
            raise ValueError("text embeddings were given but no prompts: pass prompts (one per pair)")

    @classmethod
    def from_manifest(cls, table: EmbeddingTable, df, texts: EmbeddingTable | None = None) -> "CachedPairs":
        """Pairs of a manifest frame (as returned by `read_manifest`, e.g. one split)."""
        prompts = [str(p) for p in df["prompt"]] if "prompt" in df.columns else None
        return cls(table, list(df["image_0"]), list(df["image_1"]),
                   df[["votes_0", "votes_1", "votes_tie"]].to_numpy(np.int64), prompts, texts)

    def __len__(self) -> int:
        return int(self.i0.shape[0])

    def __getitem__(self, k: int | Sequence[int] | Tensor) -> dict[str, Any]:
        if isinstance(k, int):
            k = [k]
        return self.__getitems__(k)

    def __getitems__(self, pair_idx: Sequence[int] | Tensor) -> dict[str, Any]:
        sel = torch.as_tensor(pair_idx, dtype=torch.long)
        a, b = self.i0[sel], self.i1[sel]
        n = int(sel.shape[0])
        pc = self.pcode[sel]
        # an item is an (image, prompt): the same image under two prompts is two items
        m = len(self.prompt_names)
        uniq_key, inv = torch.unique(torch.cat([a, b]) * m + torch.cat([pc, pc]), return_inverse=True)
        uniq = uniq_key // m
        prompts = [self.prompt_names[c] for c in (uniq_key % m).tolist()]
        batch: dict[str, Any] = {"emb": self.table.emb[uniq], "prompts": prompts, "i0": inv[:n], "i1": inv[n:],
                                 "votes": self.votes[sel]}
        if self.texts is not None:
            batch["txt"] = self.texts.gather(prompts)
        return batch

    def loader(self, batch_size: int = 256, *, shuffle: bool = True, seed: int = 0) -> DataLoader:
        """Batches of `batch_size` pairs (a reshuffle per epoch from `seed`); no workers: it is all in memory."""
        from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

        base = RandomSampler(self, generator=torch.Generator().manual_seed(int(seed))) if shuffle \
            else SequentialSampler(self)
        return DataLoader(self, batch_sampler=BatchSampler(base, int(batch_size), drop_last=False),
                          collate_fn=lambda b: b, num_workers=0)


def attach_features(dm, backbone: Backbone, *, batch_size: int = 64, num_workers: int = 0,
                    cache_dir: str | Path | None = None, device: str | torch.device | None = None,
                    progress: bool = False, texts: bool | None = None,
                    prompt_texts: Callable[[Sequence[str]], list[str]] | None = None) -> EmbeddingTable:
    """Head mode for a `PreferenceDataModule`: embed its items once and serve embeddings instead of pixels.

    Calls `dm.setup()` if needed, builds the table over `dm.items` (from `dm.store` when the data module
    preloaded its images, else decoding them), then `dm.set_features(...)`. texts: also embed `dm.prompts`
    (pass `scorer.head.needs_text`); None = when the backbone has a text encoder and any prompt is non-empty.
    Items that fail to decode are added to `dm.errors` and their pairs are removed from `dm.tables`.
    Returns the image table.
    """
    dm.setup("fit")
    table = EmbeddingTable.build(backbone, dm.items, batch_size=batch_size, num_workers=num_workers,
                                 cache_dir=cache_dir, device=device, progress=progress,
                                 preprocessed=getattr(dm, "store", None))  # preloaded: never decode twice
    for e in getattr(dm, "errors", []):  # failed while preloading: their stored inputs are placeholders
        if e.get("image") in table._row:
            r = table._row[e["image"]]
            table.ok[r] = False
            table.emb[r] = math.nan
            table.errors.setdefault(e["image"], str(e.get("error", "could not be decoded")))
    rows = table.indices(dm.items)
    bad_items = (~table.ok[rows]).nonzero().flatten().numpy()
    if len(bad_items):
        known = {e.get("image") for e in getattr(dm, "errors", [])}
        for k in bad_items:
            key = image_key(dm.items[int(k)])
            if key not in known:
                dm.errors.append({"image": key, "error": table.errors.get(key, "could not be embedded")})
        for split, t in list(dm.tables.items()):
            keep = ~(np.isin(t.i0, bad_items) | np.isin(t.i1, bad_items))
            if not keep.all():
                log.warning("%s: dropping %d pair(s) whose image could not be embedded", split, int((~keep).sum()))
                dm.tables[split] = t.subset(keep) if hasattr(t, "subset") else \
                    type(t)(t.i0[keep], t.i1[keep], t.votes[keep], t.group[keep])
    txt = None
    if texts is None:
        texts = backbone.has_text and any(p for p in dm.prompts)
    if texts:
        txt = EmbeddingTable.build_texts(backbone, dm.prompts, device=device,
                                         prompt_texts=prompt_texts).gather(dm.prompts)
    dm.set_features(table.emb[rows].nan_to_num(0.0), txt)
    return table
