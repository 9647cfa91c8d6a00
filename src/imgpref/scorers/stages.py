"""The stages of dataset scoring, shared by the local and the Ray engine (each engine only decides where they run).

plan (`plan_shard`: what is missing, from the output's rows and resume keys) -> decode + preprocess
(`decode_batch`, a CPU stage through the one image loader) -> embed per backbone + heads (`EmbedAndScore`, the
stage that holds the models: an actor in Ray) -> rows (`to_rows`, `to_embeddings`) -> write (`PartsWriter`).

A batch is a dict of equal-length columns (lists or numpy arrays), the format Ray Data's `map_batches` passes
with `batch_format="numpy"`: `key, abs_key, identity, shard, prompt, path, data, error, todo` (the indices of
the scorers still missing for that sample, comma-separated), then `x<g>` (inputs of backbone group g),
`s<j>` (score of scorer j), `s<j>:<column>` (extra output of scorer j's head, e.g. HPSv3's sigma; the columns
are fixed by `RunSpec.extras` so every batch has the same ones) and `e<g>` (embedding of group g).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from imgpref.data.images import DEFAULT_MAX_PIXELS, ImageLoadError
from imgpref.data.sources import Sample, Shard, decode
from imgpref.scorers.base import Scorer
from imgpref.scorers.score_paths import NO_PROMPT, has_extras, head_outputs

TEXT_CACHE_SIZE = 4096  # text embeddings kept per backbone group (prompts repeat within a shard, rarely across)
SAMPLE_COLUMNS = ("key", "abs_key", "identity", "shard", "prompt", "path", "data", "error", "todo")


@dataclass
class RunSpec:
    """What a run computes, without the models (picklable, small): per scorer its name, fingerprint, group and
    whether it needs a prompt; per backbone group its decode size, embedding namespace and embedding column."""

    names: list[str]
    fingerprints: list[str]
    needs_text: list[bool]
    group_of: list[int]
    drafts: list[int | None]
    namespaces: list[str]
    input_shapes: list[tuple[int, ...]]
    emb_dims: list[int]
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    prompt: str | None = None
    save_embeddings: bool = False
    extras: list[list[str]] | None = None  # per scorer: the table columns of its head's extra outputs

    def extra_columns(self, j: int) -> list[str]:
        """The extra-output columns of scorer j (none for specs built without `extras`)."""
        return list(self.extras[j]) if self.extras else []

    @property
    def emb_columns(self) -> dict[str, str]:
        """{embedding column: embedding namespace}, one per backbone group."""
        return {f"emb_{g}": ns for g, ns in enumerate(self.namespaces)}

    def run_key(self, extra: str = "") -> str:
        """Identity of the run's settings for shard markers: fingerprints, explicit prompt, prompts source."""
        doc = json.dumps([sorted(zip(self.names, self.fingerprints)), self.prompt, extra, self.save_embeddings])
        return hashlib.sha256(doc.encode()).hexdigest()[:16]


def build_spec(scorers: Sequence[Scorer], groups: Sequence[Any], *, prompt: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, save_embeddings: bool = False) -> RunSpec:
    """The spec of `scorers` grouped as `groups` (`score_paths._groups`): the same fingerprints as `score_paths`."""
    from imgpref.scorers.identity import scorer_fingerprint

    from PIL import Image

    gi = {j: k for k, g in enumerate(groups) for j in g.members}
    shapes, dims, extras = [], [], [[] for _ in scorers]
    with torch.inference_mode():  # probe: the fixed input shape and embedding width of each backbone
        for k, g in enumerate(groups):
            x = g.backbone.preprocess(Image.new("RGB", (64, 48), (120, 90, 60)))
            dev = next((p.device for p in g.backbone.parameters()), torch.device("cpu"))
            pdt = next((p.dtype for p in g.backbone.parameters() if p.is_floating_point()), torch.float32)
            shapes.append(tuple(x.shape))
            emb = g.backbone.embed_images(x[None].to(dev, pdt)).float()
            dims.append(int(emb.shape[-1]))
            for j in (j for j in g.members if has_extras(scorers[j])):  # the names of the heads' extra outputs
                s = scorers[j]
                txt = s.embed_texts(["a photo"]).float() if s.head.needs_text or s.needs_prompt else None
                extras[j] = list(head_outputs(s, emb, txt)[1])
    return RunSpec(names=[s.name for s in scorers],
                   fingerprints=[scorer_fingerprint(s, groups[gi[j]].cache_ns) for j, s in enumerate(scorers)],
                   needs_text=[bool(s.head.needs_text or s.needs_prompt) for s in scorers],
                   group_of=[gi[j] for j in range(len(scorers))], drafts=[g.draft for g in groups],
                   namespaces=[g.cache_ns for g in groups], input_shapes=shapes, emb_dims=dims, max_pixels=max_pixels, prompt=prompt,
                   save_embeddings=save_embeddings, extras=extras)


# -- plan ----------------------------------------------------------------------------------------------------------
def _empty_batch() -> dict[str, list]:
    return {c: [] for c in SAMPLE_COLUMNS}


def plan_shard(shard: Shard, spec: RunSpec, done: Any | None, batch_size: int) -> Iterator[dict[str, list]]:
    """Batches of the shard's samples that still miss a row for at least one scorer (streamed).

    done: a `parts_output.ShardRows` (or None: nothing done). A sample's explicit run prompt wins.
    """
    batch = _empty_batch()
    for s in shard.samples():
        if spec.prompt:
            s.prompt = spec.prompt
        todo = [j for j, name in enumerate(spec.names)
                if done is None or not done.reusable(s.abs_key, name, s.identity, spec.fingerprints[j], s.prompt)]
        if not todo:
            continue
        _append(batch, s, todo)
        if len(batch["key"]) >= batch_size:
            yield batch
            batch = _empty_batch()
    if batch["key"]:
        yield batch
    if done is not None:
        # rows about to be scored again are invalid anyway: dropping them now can lose nothing (a kill before
        # the new rows land leaves them missing, so the next run scores them), and no key is ever stored twice
        done.drop_superseded()


def _append(batch: dict[str, list], s: Sample, todo: list[int]) -> None:
    for c in SAMPLE_COLUMNS[:-1]:
        batch[c].append(getattr(s, c))
    batch["todo"].append(",".join(map(str, todo)))


def parse_todo(todo) -> list[int]:
    """Scorer indices of a `todo` cell ("0,2" -> [0, 2])."""
    return [int(x) for x in str(todo).split(",") if x != ""]


def todo_of(batch: dict, r: int) -> list[int]:
    return parse_todo(batch["todo"][r])


def _text(v) -> str | None:
    """A text cell: None, NaN (how Ray's numpy batches hold a missing value) and "" are all missing."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    v = str(v)
    return v or None


# -- decode + preprocess ---------------------------------------------------------------------------------------------
class Decoder:
    """Decode (the one loader) + each needed group's preprocess; failures become the sample's error."""

    def __init__(self, spec: RunSpec, preprocess: Sequence[Callable]):
        self.spec = spec
        self.preprocess = list(preprocess)
        self._plans: dict[str, tuple[list[int], int | None]] = {}

    def plan(self, todo: str) -> tuple[list[int], int | None]:
        """(backbone groups, JPEG draft size) of a row's `todo` cell; a handful of distinct cells per run."""
        p = self._plans.get(todo)
        if p is None:
            groups = sorted({self.spec.group_of[j] for j in parse_todo(todo)})
            sizes = [self.spec.drafts[g] for g in groups]
            p = self._plans[todo] = (groups, None if any(z is None for z in sizes) else max(sizes, default=None))
        return p

    def decode_row(self, batch: dict, r: int, draft: int | None):
        """The row's image through `sources.decode` (the one loader, on its bytes or path); raises
        ImageLoadError with the reason."""
        data = batch["data"][r]
        data = data if isinstance(data, (bytes, bytearray, memoryview)) else None
        s = Sample(key=batch["key"][r], abs_key="", identity=None, shard="", path=_text(batch["path"][r]),
                   data=data)
        if s.path is None and not data:
            raise ImageLoadError(s.key, "empty file (0 bytes)")
        return decode(s, draft_size=draft, max_pixels=self.spec.max_pixels)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["key"])
        errors = [_text(e) for e in batch["error"]]
        xs = [np.zeros((n,) + tuple(shape), np.float32) for shape in self.spec.input_shapes]
        for r in range(n):
            if errors[r] is not None:
                continue
            groups, draft = self.plan(batch["todo"][r])
            try:
                im = self.decode_row(batch, r, draft)
            except ImageLoadError as exc:
                errors[r] = exc.reason
                continue
            except Exception as exc:  # noqa: BLE001  (a per-sample error, never a crash)
                errors[r] = f"{type(exc).__name__}: {exc}"
                continue
            try:
                for g in groups:
                    v = self.preprocess[g](im)
                    if tuple(v.shape) != xs[g].shape[1:]:
                        raise _ShapeError(f"backbone group {g}: preprocess gave shape {tuple(v.shape)}, expected "
                                          f"{xs[g].shape[1:]}; the dataset engine needs a fixed input size")
                    xs[g][r] = v.numpy()  # straight into the batch array: no per-image array kept
            except _ShapeError:
                raise
            except Exception as exc:  # noqa: BLE001
                errors[r] = f"preprocessing failed: {type(exc).__name__}: {exc}"
        out = {c: batch[c] for c in SAMPLE_COLUMNS if c != "data"}  # the bytes are not needed downstream
        out["error"] = errors
        for g, x in enumerate(xs):
            out[f"x{g}"] = x
        return out


class _ShapeError(ValueError):
    """A backbone whose preprocess output varies in shape: a setup error, not a per-image one."""


def decode_batch(batch: dict, decoder: Decoder) -> dict:
    """The decode + preprocess stage as a plain function (Ray runs it as CPU tasks)."""
    return decoder(dict(batch))


# -- embed + heads ---------------------------------------------------------------------------------------------------
class EmbedAndScore:
    """Backbone once per group and batch, then every head on the embeddings (a Ray actor, or in-process)."""

    def __init__(self, scorers: Sequence[Scorer], spec: RunSpec, device: str | torch.device = "cpu",
                 dtypes: Sequence[torch.dtype] | None = None, text_cache_size: int = TEXT_CACHE_SIZE):
        self.spec = spec
        self.text_cache_size = int(text_cache_size)
        self.scorers = list(scorers)
        self.device = torch.device(device)
        for s in self.scorers:
            s.to(self.device).eval()
        ng = len(spec.namespaces)
        self.dtypes = list(dtypes) if dtypes is not None else [torch.float32] * ng
        self.backbones = [next(self.scorers[j].backbone for j in range(len(spec.names)) if spec.group_of[j] == g)
                          for g in range(ng)]
        # captions are often unique per sample (LAION): a bounded LRU keeps memory flat over a dataset
        self.txt: list[OrderedDict[str, torch.Tensor]] = [OrderedDict() for _ in range(ng)]

    def _autocast(self, g: int):
        dt = self.dtypes[g]
        return torch.autocast(self.device.type, dtype=dt) if dt != torch.float32 else nullcontext()

    def _texts(self, g: int, texts: list[str]) -> torch.Tensor:
        cache = self.txt[g]
        missing = sorted({t for t in texts if t not in cache})
        fresh: dict[str, torch.Tensor] = {}
        for k in range(0, len(missing), 256):
            chunk = missing[k:k + 256]
            with self._autocast(g):
                emb = self.backbones[g].embed_texts(chunk).float()
            fresh.update(zip(chunk, (e.clone() for e in emb)))  # a row of its own: no chunk kept alive
        out = torch.stack([fresh[t] if t in fresh else cache[t] for t in texts])
        for t in texts:  # most recently used last; the oldest go once the cache is full
            if t in cache:
                cache.move_to_end(t)
        cache.update(fresh)
        while len(cache) > self.text_cache_size:
            cache.popitem(last=False)
        return out

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        spec = self.spec
        n = len(batch["key"])
        errors = [_text(e) for e in batch["error"]]
        prompts = [_text(p) for p in batch["prompt"]]
        todos = [todo_of(batch, r) for r in range(n)]
        out = {c: batch[c] for c in batch if not str(c).startswith("x")}
        scores = np.full((len(spec.names), n), np.nan, dtype=np.float64)
        extras = {(j, c): np.full(n, np.nan, dtype=np.float64) for j in range(len(spec.names))
                  for c in spec.extra_columns(j)}
        for g, bb in enumerate(self.backbones):
            rows = [r for r in range(n) if errors[r] is None and any(spec.group_of[j] == g for j in todos[r])]
            emb_np = None
            if rows:
                xg = batch[f"x{g}"]  # a numpy array (CPU decode) or a tensor already on the device (GPU decode)
                x = xg[torch.as_tensor(rows, device=xg.device)] if isinstance(xg, torch.Tensor) \
                    else torch.as_tensor(np.asarray(xg)[rows])
                x = x.to(self.device)
                pdt = next((p.dtype for p in bb.parameters() if p.is_floating_point()), torch.float32)
                with self._autocast(g):
                    emb = bb.embed_images(x.to(pdt)).float()
                emb_np = emb.cpu().numpy()
                for j in (j for j in range(len(spec.names)) if spec.group_of[j] == g):
                    sel = [k for k, r in enumerate(rows) if j in todos[r] and (prompts[r] or not spec.needs_text[j])]
                    if not sel:
                        continue
                    e = emb[sel]
                    sc = self.scorers[j]
                    txt = self._texts(g, sc.prompt_texts([prompts[rows[k]] for k in sel])) if spec.needs_text[j] \
                        else None
                    vals, extra = head_outputs(sc, e, txt)
                    where = [rows[k] for k in sel]
                    scores[j, where] = vals.float().cpu().numpy()
                    for c, v in extra.items():
                        if (j, c) in extras:  # only the probed columns (a stable set of batch columns)
                            extras[(j, c)][where] = v.float().cpu().numpy()
            if spec.save_embeddings:  # NaN rows: not embedded here (failed, or not needed for this group)
                col = np.full((n, spec.emb_dims[g]), np.nan, dtype=np.float32)
                if rows:
                    col[rows] = emb_np
                out[f"e{g}"] = col
        for j in range(len(spec.names)):
            out[f"s{j}"] = scores[j]
        for (j, c), v in extras.items():
            out[f"s{j}:{c}"] = v
        out["error"] = errors
        return out


# -- rows ----------------------------------------------------------------------------------------------------------


def to_rows(batch: dict, spec: RunSpec) -> list[dict]:
    """Long rows (one per sample and missing scorer) of a scored batch, as `imgpref.scorers.output` writes them."""
    rows = []
    for r in range(len(batch["key"])):
        err = _text(batch["error"][r])
        prompt = _text(batch["prompt"][r])
        for j in todo_of(batch, r):
            e = err if err is not None else (NO_PROMPT if spec.needs_text[j] and prompt is None else None)
            v = float(batch[f"s{j}"][r])
            extra = {c: math.nan if e is not None else float(batch[f"s{j}:{c}"][r]) for c in spec.extra_columns(j)}
            rows.append({**extra, "path": str(batch["key"][r]), "scorer": spec.names[j],
                         "score": math.nan if e is not None else v, "prompt": prompt, "error": e,
                         "abs_path": str(batch["abs_key"][r]), "file_id": _text(batch["identity"][r]),
                         "fingerprint": spec.fingerprints[j], "key": str(batch["key"][r]),
                         "shard": str(batch["shard"][r])})
    return rows


def to_embeddings(batch: dict, spec: RunSpec) -> list[dict]:
    """One row per embedded sample: key, abs_path, file_id, shard and `emb_<g>` per backbone group."""
    if not spec.save_embeddings:
        return []
    out = []
    for r in range(len(batch["key"])):
        embs = {}
        for g in range(len(spec.namespaces)):
            v = np.asarray(batch[f"e{g}"][r], dtype=np.float32)
            embs[f"emb_{g}"] = None if np.isnan(v).all() else v
        if all(v is None for v in embs.values()):
            continue
        out.append({"key": str(batch["key"][r]), "abs_path": str(batch["abs_key"][r]),
                    "file_id": _text(batch["identity"][r]), "shard": str(batch["shard"][r]), **embs})
    return out
