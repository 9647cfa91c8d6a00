"""The scoring engine behind `imgpref score`: files -> one row per (image, scorer).

How a run goes:
1. discover image files (`imgpref.data.discovery`), resolve each image's prompt (`imgpref.data.prompts`);
2. with `resume`, keep the rows of the journal / the final output whose key still matches: the same absolute
   path, file size + mtime, scorer fingerprint (`imgpref.scorers.identity`) and prompt, without an error;
3. group scorers by backbone key: each group runs its backbone once per batch, every head reuses the embedding;
4. with `cache`, hash every remaining file in the main process and take embeddings from the cache; only files
   with a miss for at least one backbone are decoded;
5. a DataLoader decodes each remaining file ONCE in worker processes (at full size; with `fast`, reduced-size
   JPEG decoding at >= 2x the largest input resolution needed, see `imgpref.data.images`), applies each needed
   backbone's `preprocess`, and returns per-item errors instead of raising (a failed file never stops the
   loader);
6. rows are appended batch by batch to `<out>.partial.jsonl` (fsynced), and at the end the final table is
   written atomically and the journal removed.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from imgpref.data.discovery import discover_images
from imgpref.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from imgpref.data.prompts import PromptResolver
from imgpref.scorers.base import Backbone, Head, Scorer
from imgpref.scorers.cache import EmbeddingCache, file_hash
from imgpref.scorers.identity import embedding_namespace, file_identity, scorer_fingerprint
from imgpref.scorers import output as outmod

NO_PROMPT = "no prompt for this image (pass --prompt TEXT, --prompts FILE, or write a sidecar .txt beside it)"
_PRECISIONS = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
               "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


class ScoringFailed(RuntimeError):
    """Raised by `score_paths(strict=True)` after writing the output when any row has an error."""

    def __init__(self, table: pd.DataFrame, n_failed: int):
        super().__init__(f"{n_failed} image(s) could not be scored (see the 'error' column)")
        self.table = table
        self.n_failed = n_failed


# -- device / precision ----------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """None / "auto": CUDA if available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return dev


def resolve_precision(precision: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """An explicit precision name; None / "auto" here is the `fast` choice: bf16 on CUDA when supported, else
    fp16 on CUDA; fp32 on CPU. (Without `fast`, `score_paths` runs "auto" in each preset's reference precision.)"""
    if isinstance(precision, torch.dtype):
        return precision
    if precision is None or precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if precision not in _PRECISIONS:
        raise ValueError(f"--precision {precision!r}: use one of auto, fp32, fp16, bf16")
    return _PRECISIONS[precision]


def default_workers(device: str | torch.device | None = "cuda") -> int:
    """DataLoader decode processes: min(4, CPUs) when the model runs on a GPU; min(4, CPUs // 2) (at least 1)
    when it runs on the CPU, whose other cores the forward pass needs (measured on 2 cores: 1 worker beats 2,
    and both beat decoding in the main process; decoding with draft mode costs ~7 ms of CPU per 1024px JPEG)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device is not None and torch.device(device).type == "cpu":
        return max(1, min(4, cpus // 2))
    return min(4, cpus)


# -- decoding in workers -----------------------------------------------------------------------------------------
def decode_size(backbone: Backbone) -> int | None:
    """Smallest side a decoded image needs for `backbone`: 2x its fixed input resolution, or None (full size).

    A backbone may declare `decode_size` itself; otherwise its `preprocess` is probed with two small images of
    different shapes: a fixed output shape means a fixed input resolution r, and decoding at >= 2r keeps quality
    (the model's own resize still downsamples by >= 2x).
    """
    declared = getattr(backbone, "decode_size", "unset")
    if declared != "unset":
        return None if declared is None else int(declared)
    try:
        a = backbone.preprocess(Image.new("RGB", (64, 48), (120, 90, 60)))
        b = backbone.preprocess(Image.new("RGB", (40, 72), (120, 90, 60)))
    except Exception:  # noqa: BLE001  (a backbone that cannot take tiny images: decode at full size)
        return None
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape or a.ndim != 3:
        return None
    return 2 * int(max(a.shape[-2:]))


class _FileDataset(torch.utils.data.Dataset):
    """Item i -> (i, {backbone key: input tensor}, None) or (i, None, reason). Never raises."""

    def __init__(self, paths: Sequence[str], keys: Sequence[tuple[str, ...]],
                 preprocess: dict[str, Callable[[Image.Image], torch.Tensor]], drafts: dict[str, int | None],
                 max_pixels: int | None):
        self.paths, self.keys, self.preprocess, self.drafts, self.max_pixels = paths, keys, preprocess, drafts, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        keys = self.keys[i]
        sizes = [self.drafts[k] for k in keys]
        draft = None if any(s is None for s in sizes) else max(sizes)
        try:
            image = load_image(self.paths[i], draft_size=draft, max_pixels=self.max_pixels)
        except ImageLoadError as exc:
            return i, None, exc.reason
        except Exception as exc:  # noqa: BLE001
            return i, None, f"{type(exc).__name__}: {exc}"
        try:
            return i, {k: self.preprocess[k](image) for k in keys}, None
        except Exception as exc:  # noqa: BLE001
            return i, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


def collate_items(batch: list) -> dict[str, Any]:
    """Separate failures; stack each backbone's inputs: {"failed": [(i, reason)], "inputs": {key: (idx, x)}}."""
    failed = [(i, err) for i, _, err in batch if err is not None]
    per_key: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
    for i, tensors, err in batch:
        if err is not None:
            continue
        for k, t in tensors.items():
            idx, ts = per_key.setdefault(k, ([], []))
            idx.append(i)
            ts.append(t)
    inputs = {}
    for k, (idx, ts) in per_key.items():
        same = all(t.shape == ts[0].shape for t in ts)
        inputs[k] = (idx, torch.stack(ts) if same else ts)
    return {"failed": failed, "inputs": inputs}


# -- the engine --------------------------------------------------------------------------------------------------
@dataclass
class _Group:
    key: str
    backbone: Backbone
    members: list[int]  # scorer indices
    cache_ns: str
    draft: int | None
    dtype: torch.dtype = torch.float32  # see imgpref.scorers.fidelity
    txt: dict[str, torch.Tensor] = field(default_factory=dict)


def _groups(scorers: Sequence[Scorer], dtype: torch.dtype | None, device: torch.device | None = None,
            fast: bool = False) -> list[_Group]:
    """dtype None: each group in its scorers' reference precision (`fidelity.reference_dtype`)."""
    from imgpref.scorers.fidelity import reference_dtype

    try:  # the shared helper when present keeps one notion of "same backbone" across the package
        from imgpref.scorers.multi import backbone_groups  # type: ignore

        by_key = {k: list(v) for k, v in backbone_groups(list(scorers)).items()}
        index = {id(s): i for i, s in enumerate(scorers)}
        grouped = {k: [index[id(s)] for s in v] for k, v in by_key.items()}
    except ImportError:
        grouped = {}
        for i, s in enumerate(scorers):
            grouped.setdefault(s.backbone.key, []).append(i)
    out = []
    for key, members in grouped.items():
        bb = scorers[members[0]].backbone
        gdt = dtype or reference_dtype([scorers[i] for i in members], device or torch.device("cpu"))
        draft = decode_size(bb) if fast else None
        # the namespace names the weights (digest), preprocessing, decode size and precision of the embeddings
        out.append(_Group(key=key, backbone=bb, members=members,
                          cache_ns=embedding_namespace(bb, dtype=gdt, draft=draft), draft=draft, dtype=gdt))
    return out


def _as_scorers(scorers: Scorer | str | Path | Iterable[Scorer | str | Path]) -> list[Scorer]:
    if isinstance(scorers, (Scorer, str, Path)):
        scorers = [scorers]
    scorers = list(scorers)
    if not scorers:
        raise ValueError("no scorer given: pass at least one Scorer, preset name or scorer folder")
    specs = [s for s in scorers if not isinstance(s, Scorer)]
    if specs:
        from imgpref.scorers.registry import load_scorers

        loaded = iter(load_scorers(specs))
        scorers = [s if isinstance(s, Scorer) else next(loaded) for s in scorers]
    names = [s.name for s in scorers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"scorer names must be unique in one run; {dup} appear(s) more than once")
    return scorers


def _previous_rows(out: Path, resume: bool) -> list[dict]:
    journal = outmod.journal_path(out)
    if not resume:
        if journal.exists():
            raise ValueError(
                f"{journal} exists: an earlier run writing {out} did not finish. Pass --resume to continue it, "
                f"or delete {journal} to start over"
            )
        return []
    rows: list[dict] = []
    if out.exists():
        try:
            rows.extend(outmod.read_scores(out).to_dict("records"))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"--resume: cannot read the existing output {out} ({exc}); move it away") from exc
    if journal.exists():
        rows.extend(outmod.read_journal(journal))
    return rows


def has_extras(scorer: Scorer) -> bool:
    """Whether `scorer`'s head declares extra outputs (overrides `Head.extras` / `Head.score_and_extras`)."""
    cls = type(scorer.head)
    return cls.extras is not Head.extras or cls.score_and_extras is not Head.score_and_extras


def head_outputs(scorer: Scorer, img_emb: torch.Tensor,
                 txt_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(scores [B], {table column: [B]}) of `scorer`'s head on embeddings: the score plus the head's extras,
    named by `output.extra_column`. Heads without extras run `score_embeddings` alone (one pass)."""
    if not has_extras(scorer):
        return scorer.score_embeddings(img_emb, txt_emb), {}
    if scorer.needs_prompt and txt_emb is None:
        raise ValueError(f"scorer {scorer.name!r} needs prompts: pass --prompt/--prompts or prompts=[...]")
    score, extra = scorer.head.score_and_extras(img_emb, txt_emb if scorer.head.needs_text else None)
    return score, {outmod.extra_column(k): v for k, v in extra.items()}


def _text(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    return str(v)


def score_paths(
    paths: str | Path | Iterable[str | Path],
    scorers: Scorer | str | Path | Iterable[Scorer | str | Path],
    *,
    prompt: str | None = None,
    prompts: str | Path | dict | None = None,
    out: str | Path | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    fast: bool = False,
    resume: bool = False,
    cache: str | Path | EmbeddingCache | None = None,
    strict: bool = False,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pd.DataFrame:
    """Score every image under `paths` with every scorer; one row per (image, scorer).

    paths: image files and/or folders (searched recursively). scorers: Scorer objects, preset names or scorer
    folders (loaded with `load_scorers`, sharing backbones). prompt / prompts: one prompt for all images, or a
    CSV/JSONL file (or a dict path -> prompt); otherwise sidecar `.txt` files (see `imgpref.data.prompts`).
    out: .csv/.jsonl/.parquet written atomically (with a `<out>.partial.jsonl` journal while running).
    batch_size: default 32 on CPU, 64 on CUDA. num_workers: DataLoader worker processes, default
    min(4, CPUs) with CUDA and min(4, CPUs // 2) (>= 1) on CPU (see `default_workers`); 0 decodes in the main
    process. device: default CUDA if available. precision: default (None / "auto") fp32 on CPU; on CUDA each
    preset's reference precision (`imgpref.scorers.fidelity`), bf16 (or fp16) with `fast`. fast: reduced-size
    JPEG decoding and bf16 on CUDA: faster, scores deviate slightly from the references (README). resume: reuse the rows of the journal or `out` whose image (absolute path, size, mtime), scorer
    fingerprint and prompt are unchanged and that succeeded; every other one is (re)scored and replaces the old.
    cache: folder of image embeddings by file hash and backbone key. strict: raise `ScoringFailed` (after
    writing `out`) when any row has an error. Scorers are moved to `device`.

    Returns columns path, scorer, score, prompt, error, abs_path, file_id, fingerprint (the whole table written
    to `out`, including resumed rows; one row per (absolute path, scorer)). `df.attrs["stats"]` counts what this call did (rows computed, cache hits, images decoded, ...).
    """
    t0 = time.perf_counter()
    scorer_list = _as_scorers(scorers)
    dev = resolve_device(device)
    explicit = fast or not (precision is None or (isinstance(precision, str) and precision == "auto"))
    dtype = resolve_precision(precision, dev) if explicit else None  # None: per-preset reference precision
    if batch_size is None:
        batch_size = 64 if dev.type == "cuda" else 32
    if int(batch_size) < 1:
        raise ValueError(f"--batch-size must be >= 1; got {batch_size}")
    workers = default_workers(dev) if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"--workers must be >= 0; got {num_workers}")
    out_path = outmod.check_output_path(out) if out is not None else None
    if resume and out_path is None:
        raise ValueError("resume needs an output file (--out) to resume from")
    resolver = PromptResolver(prompt=prompt, prompts=prompts)
    store = cache if isinstance(cache, EmbeddingCache) or cache is None else EmbeddingCache(cache)

    files = [str(p) for p in discover_images(paths)]
    previous = _previous_rows(out_path, resume) if out_path is not None else []
    # an empty prompt is no prompt (CSV cannot tell them apart); resolved before anything is written, so a
    # bad --prompts file fails without leaving a journal behind
    image_prompts = [resolver(f) or None for f in files]

    for s in scorer_list:
        s.to(dev).eval()
    groups = _groups(scorer_list, dtype, dev, fast)
    group_of = {i: g for g in groups for i in g.members}
    needs_text = [bool(s.head.needs_text or s.needs_prompt) for s in scorer_list]
    # resume keys: (absolute path, scorer); a row is reused only for the same file (size + mtime), the same
    # scorer fingerprint (weights, head, preprocessing, precision) and the same prompt, and only if it succeeded
    abs_paths = [os.path.abspath(f) for f in files]
    file_ids = [file_identity(f) for f in files]
    fingerprints = [scorer_fingerprint(s, group_of[j].cache_ns) for j, s in enumerate(scorer_list)]
    earlier = {(outmod.row_key(_text(r.get("abs_path")), str(r["path"])), str(r["scorer"])): r for r in previous}

    def reusable(i: int, j: int) -> bool:
        r = earlier.get((abs_paths[i], scorer_list[j].name))
        return (r is not None and _text(r.get("error")) is None and file_ids[i] is not None
                and _text(r.get("file_id")) == file_ids[i] and _text(r.get("fingerprint")) == fingerprints[j]
                and _text(r.get("prompt")) == image_prompts[i])

    def row(i: int, j: int, score: float, error: str | None, extras: dict[str, float] | None = None) -> dict:
        return {"path": files[i], "scorer": scorer_list[j].name, "score": score, "prompt": image_prompts[i],
                "error": error, "abs_path": abs_paths[i], "file_id": file_ids[i], "fingerprint": fingerprints[j],
                **(extras or {})}

    new_rows: list[dict] = []
    stats = {"images": len(files), "rows_resumed": 0, "rows_new": 0, "cache_hits": 0, "decoded": 0,
             "embedded": 0, "failed_images": 0}

    # what is left to do: per image, per backbone group, the scorer indices still missing
    todo: list[dict[str, list[int]]] = []
    immediate: list[dict] = []
    for i, pr in enumerate(image_prompts):
        need: dict[str, list[int]] = {}
        for j, s in enumerate(scorer_list):
            if reusable(i, j):
                stats["rows_resumed"] += 1
                continue
            if needs_text[j] and pr is None:
                immediate.append(row(i, j, math.nan, NO_PROMPT))
                continue
            need.setdefault(group_of[j].key, []).append(j)
        todo.append(need)
    journal = outmod.Journal(outmod.journal_path(out_path), keep=previous) if out_path is not None else None

    def emit(rows: list[dict]) -> None:
        new_rows.extend(rows)
        stats["rows_new"] += len(rows)
        if journal is not None:
            journal.append(rows)

    emit(immediate)

    pending = [i for i, need in enumerate(todo) if need]
    bar = None
    if progress and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), unit="img", desc="scoring", file=sys.stderr, dynamic_ncols=True)

    def autocast(g: _Group):
        return torch.autocast(dev.type, dtype=g.dtype) if g.dtype != torch.float32 else nullcontext()
    by_key = {g.key: g for g in groups}

    def param_dtype(module: torch.nn.Module) -> torch.dtype:
        return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)

    @torch.inference_mode()
    def text_embeddings(g: _Group, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in g.txt})
        for k in range(0, len(missing), 256):
            chunk = missing[k : k + 256]
            with autocast(g):
                emb = g.backbone.embed_texts(chunk).float()
            for t, e in zip(chunk, emb):
                g.txt[t] = e
        return torch.stack([g.txt[t] for t in texts])

    @torch.inference_mode()
    def score_group(g: _Group, idx: list[int], emb: torch.Tensor) -> None:
        """Heads of group g on image embeddings emb [n, D] of images idx (in files order)."""
        rows = []
        scores: dict[int, list[tuple[int, float, dict[str, float]]]] = {}
        for j in g.members:
            sel = [r for r, i in enumerate(idx) if j in todo[i].get(g.key, ())]
            if not sel:
                continue
            e = emb[sel] if len(sel) != len(idx) else emb
            # prompt_texts: the text the scorer's reference embeds (CLIPScore prefixes "A photo depicts ")
            txt = text_embeddings(g, scorer_list[j].prompt_texts([image_prompts[idx[r]] for r in sel])) \
                if needs_text[j] else None
            # extras are computed from the (possibly cached) embedding like the score: the cache holds no scores
            vals, extra = head_outputs(scorer_list[j], e, txt)
            vals = vals.float().cpu().tolist()
            extra = {c: t.float().cpu().tolist() for c, t in extra.items()}
            for k, (r, v) in enumerate(zip(sel, vals)):
                scores.setdefault(r, []).append((j, v, {c: float(x[k]) for c, x in extra.items()}))
        for r, triples in sorted(scores.items()):
            i = idx[r]
            for j, v, ex in triples:
                rows.append(row(i, j, float(v), None, ex))
        emit(rows)

    @torch.inference_mode()
    def embed(g: _Group, x) -> torch.Tensor:
        bb = g.backbone
        pdt = param_dtype(bb)
        with autocast(g):
            if torch.is_tensor(x):
                x = x.to(dev, non_blocking=True)
                emb = bb.embed_images(x.to(pdt) if x.is_floating_point() else x)
            else:  # inputs of different shapes: one at a time
                emb = torch.cat([bb.embed_images(t.unsqueeze(0).to(dev).to(pdt)) for t in x])
        stats["embedded"] += emb.shape[0]
        return emb.float()

    try:
        # 1) embeddings from the cache (hash in the main process; hits are never decoded)
        load_keys: dict[int, tuple[str, ...]] = {}
        hashes: dict[int, str] = {}
        hit_emb: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for i in pending:
            keys = tuple(todo[i])
            if store is not None:
                try:
                    hashes[i] = file_hash(files[i])
                except OSError:
                    hashes[i] = ""
                miss = []
                for k in keys:
                    e = store.get(by_key[k].cache_ns, hashes[i]) if hashes[i] else None
                    if e is None:
                        miss.append(k)
                    else:
                        stats["cache_hits"] += 1
                        idx_l, embs = hit_emb.setdefault(k, ([], []))
                        idx_l.append(i)
                        embs.append(e)
                keys = tuple(miss)
            if keys:
                load_keys[i] = keys
        for k, (idx_l, embs) in hit_emb.items():
            for s in range(0, len(idx_l), int(batch_size)):
                chunk = idx_l[s : s + int(batch_size)]
                score_group(by_key[k], chunk, torch.from_numpy(np.stack(embs[s : s + len(chunk)])).to(dev))
        cached_only = [i for i in pending if i not in load_keys]
        if bar is not None and cached_only:
            bar.update(len(cached_only))

        # 2) everything else through the DataLoader
        order = [i for i in pending if i in load_keys]
        if order:
            needed = sorted({k for i in order for k in load_keys[i]})
            ds = _FileDataset(
                [files[i] for i in order], [load_keys[i] for i in order],
                {k: by_key[k].backbone.preprocess for k in needed}, {k: by_key[k].draft for k in needed},
                max_pixels,
            )
            use_workers = min(workers, len(order))
            kwargs: dict[str, Any] = {}
            if use_workers > 0:
                # fork shares the (possibly large) backbones with workers instead of pickling them
                import multiprocessing as mp

                if "fork" in mp.get_all_start_methods() and sys.platform.startswith("linux"):
                    kwargs["multiprocessing_context"] = "fork"
                kwargs["prefetch_factor"] = 2
            loader = torch.utils.data.DataLoader(
                ds, batch_size=int(batch_size), shuffle=False, num_workers=use_workers,
                collate_fn=collate_items, pin_memory=dev.type == "cuda", **kwargs,
            )
            for batch in loader:
                fail_rows = []
                for local_i, reason in batch["failed"]:
                    i = order[local_i]
                    stats["failed_images"] += 1
                    for k in load_keys[i]:
                        for j in todo[i][k]:
                            fail_rows.append(row(i, j, math.nan, reason))
                emit(fail_rows)
                n_ok = len({li for _, (idx, _) in batch["inputs"].items() for li in idx})
                stats["decoded"] += n_ok
                for k, (local_idx, x) in batch["inputs"].items():
                    g = by_key[k]
                    idx = [order[li] for li in local_idx]
                    emb = embed(g, x)
                    if store is not None:
                        arr = emb.cpu().numpy()
                        for r, i in enumerate(idx):
                            if hashes.get(i):
                                store.put(g.cache_ns, hashes[i], arr[r])
                    score_group(g, idx, emb)
                n = n_ok + len(batch["failed"])
                if bar is not None:
                    bar.update(n)
    except BaseException:
        # a journal with nothing in it would only block the next run (which refuses to start without --resume)
        if journal is not None and not new_rows and not previous:
            journal.remove()
        raise
    finally:
        if bar is not None:
            bar.close()
        if journal is not None:
            journal.close()

    # final table: earlier rows + this run's rows, one per key, in discovery x scorer order
    table = outmod.normalize(outmod.rows_frame(previous + new_rows))
    table = outmod.dedupe(table)
    if not table.empty:
        prank = {p: r for r, p in enumerate(abs_paths)}
        srank = {s.name: r for r, s in enumerate(scorer_list)}
        table["_p"] = [prank.get(outmod.row_key(a, p), len(prank)) for a, p in zip(table["abs_path"], table["path"])]
        table["_s"] = [srank.get(s, len(srank)) for s in table["scorer"]]
        table = table.sort_values(["_p", "_s"], kind="stable").drop(columns=["_p", "_s"]).reset_index(drop=True)
    if out_path is not None:
        outmod.write_scores(table, out_path)
        journal.remove()
    stats["seconds"] = time.perf_counter() - t0
    table.attrs["stats"] = stats
    table.attrs["higher_is_better"] = {s.name: bool(s.higher_is_better) for s in scorer_list}
    if strict:
        n_failed = int(table["error"].notna().sum())
        if n_failed:
            raise ScoringFailed(table, n_failed)
    return table


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per scorer: rows, scored, failed, mean, median, min, max of the scores."""
    rows = []
    for name, sub in table.groupby("scorer", sort=False):
        ok = sub["score"][sub["error"].isna()].dropna()
        rows.append({"scorer": name, "images": len(sub), "scored": len(ok), "failed": len(sub) - len(ok),
                     "mean": ok.mean() if len(ok) else math.nan, "median": ok.median() if len(ok) else math.nan,
                     "min": ok.min() if len(ok) else math.nan, "max": ok.max() if len(ok) else math.nan})
    return pd.DataFrame(rows, columns=["scorer", "images", "scored", "failed", "mean", "median", "min", "max"])


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """One row per failed image: path and reason (the first reason if several scorers failed)."""
    bad = table[table["error"].notna()]
    return bad.drop_duplicates("path")[["path", "error"]].reset_index(drop=True)
