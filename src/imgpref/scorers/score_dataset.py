"""Dataset scoring: sharded inputs (`imgpref.data.sources`) streamed through the shared stages
(`imgpref.scorers.stages`) into Parquet parts (`imgpref.scorers.parts_output`), on the local or the Ray engine.

Memory is bounded by the batch and the shard (one table batch or tar sample group is read at a time, each batch
is written as a part when it is done). A single-file `out` is assembled from the parts at the end (the parts
folder `<out>.parts/` plays the journal's role while the run goes); a parts folder is the output itself.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch

from imgpref.data.images import DEFAULT_MAX_PIXELS
from imgpref.data.sources import open_sources
from imgpref.scorers import output as outmod
from imgpref.scorers import parts_output as parts
from imgpref.scorers.base import Scorer
from imgpref.scorers.stages import EmbedAndScore, RunSpec, build_spec, decode_batch, plan_shard, to_embeddings, \
    to_rows

ENGINES = ("local", "ray")


def parts_folder_for(out: Path, as_parts: bool) -> Path:
    """The folder the parts go to: `out` itself, or `<out>.parts/` beside a single-file output."""
    return out if as_parts else out.with_name(out.name + ".parts")


def _prompts_key(prompts) -> str:
    if prompts is None:
        return ""
    if isinstance(prompts, dict):
        return hashlib.sha256(repr(sorted(prompts.items())).encode()).hexdigest()[:16]
    from imgpref.scorers.identity import file_identity

    return f"{Path(prompts).resolve()}|{file_identity(prompts)}"


def score_dataset(
    inputs: str | Path | Iterable[str | Path],
    scorers: Scorer | str | Path | Iterable[Scorer | str | Path],
    *,
    out: str | Path,
    out_format: str | None = None,
    prompt: str | None = None,
    prompts: str | Path | dict | None = None,
    image_column: str | None = None,
    prompt_column: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str | torch.dtype | None = None,
    fast: bool = False,
    resume: bool = False,
    save_embeddings: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    read_back: bool = True,
    decode: str = "cpu",
) -> pd.DataFrame:
    """Score every sample of `inputs` (files, folders, globs, path lists, Parquet/CSV tables, WebDataset tars).

    out: a .csv/.jsonl/.parquet file, or a folder of Parquet parts (`out_format="parts"` or a trailing slash).
    resume: continue a killed run: finished shards are skipped, other shards score only samples without a
    valid row (same key, identity, scorer fingerprint and prompt); without it an existing parts folder is an
    error. save_embeddings: write each backbone's image embeddings (parts output only). engine: "local" or
    "ray" (`imgpref.scorers.engine_ray`; ray_address "auto" joins a cluster, None starts a local Ray).
    decode: "cpu" (PIL, the default) or "gpu": JPEGs decoded in batches by nvJPEG and preprocessed on the CUDA
    device, other files on the CPU path (`imgpref.scorers.gpu_decode`; CUDA only; on Ray the model actors
    decode, and the read tasks pass the encoded bytes on).

    Returns the score table (for a parts folder: its rows read back, or with read_back=False, which keeps memory
    flat at dataset scale, an empty table); `attrs["stats"]` counts the run.
    """
    from imgpref.data.prompts import PromptResolver
    from imgpref.scorers.score_paths import _as_scorers, _groups, resolve_device, resolve_precision

    t0 = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    from imgpref.scorers.gpu_decode import check_decode_mode, check_gpu_decode

    check_decode_mode(decode)
    as_parts = parts.is_parts_output(out, out_format)
    out_path = Path(out).expanduser()
    if not as_parts:
        outmod.check_output_path(out_path)
    if save_embeddings and not as_parts:
        raise ValueError("--save-embeddings writes Parquet parts: pass --out DIR/ (or --format parts)")
    folder = parts_folder_for(out_path, as_parts)
    if not resume and folder.is_dir() and any(folder.glob("part-*.parquet")):
        raise ValueError(f"{folder} already holds scored parts: pass --resume to continue that run, or delete "
                         f"{folder} to start over")
    scorer_list = _as_scorers(scorers)
    dev = resolve_device(device)
    if decode == "gpu":
        check_gpu_decode(dev)  # before any shard is opened or model moved
    explicit = fast or not (precision is None or (isinstance(precision, str) and precision == "auto"))
    dtype = resolve_precision(precision, dev) if explicit else None
    bs = int(batch_size or (64 if dev.type == "cuda" else 32))
    if bs < 1:
        raise ValueError(f"--batch-size must be >= 1; got {batch_size}")
    resolver = PromptResolver(prompt=prompt, prompts=prompts)
    shards = open_sources(inputs, prompt=prompt, resolver=resolver, image_column=image_column,
                          prompt_column=prompt_column)
    for s in scorer_list:
        s.to(dev).eval()
    groups = _groups(scorer_list, dtype, dev, fast)
    spec = build_spec(scorer_list, groups, prompt=prompt, max_pixels=max_pixels, save_embeddings=save_embeddings)
    run_key = spec.run_key(_prompts_key(prompts))
    if resume and not as_parts and out_path.exists():
        # a finished run left only the file (its parts are gone): its rows become parts again, to be reused
        from imgpref.scorers.score_paths import _previous_rows

        parts.import_rows(folder, rows_by_shard(_previous_rows(out_path, True), shards), out_path)
    writer = parts.PartsWriter(folder, spec.emb_columns if save_embeddings else None)
    parts.drop_orphan_embeddings(folder)
    stats = {"shards": len(shards), "shards_skipped": 0, "rows_new": 0, "failed_images": 0, "decoded": 0}
    dtypes = [g.dtype for g in groups]
    if engine == "ray":
        from imgpref.scorers.engine_ray import run_ray

        run_ray(shards, scorer_list, spec, dtypes, writer, run_key=run_key, resume=resume, batch_size=bs,
                address=ray_address, device=dev, actors=ray_actors, stats=stats, progress=progress, decode=decode)
    else:
        run_local(shards, scorer_list, spec, dtypes, writer, run_key=run_key, resume=resume, batch_size=bs,
                  device=dev, stats=stats, progress=progress, decode=decode)
    table = parts.read_parts(folder) if read_back or not as_parts else parts.parts_frame([])
    if not as_parts:
        outmod.write_scores(table, out_path)
        shutil.rmtree(folder, ignore_errors=True)
        table = outmod.read_scores(out_path)
    stats["seconds"] = time.perf_counter() - t0
    if read_back or not as_parts:
        stats["images"] = int(table["path"].nunique()) if len(table) else 0
        stats["rows_resumed"] = max(0, len(table) - stats["rows_new"])
    table.attrs["stats"] = stats
    table.attrs["higher_is_better"] = {s.name: bool(s.higher_is_better) for s in scorer_list}
    return table


def rows_by_shard(rows: Iterable[dict], shards) -> dict[str, list[dict]]:
    """Earlier output rows grouped by the shard of this run that holds their sample (by the resume key:
    `<abs shard>::<key>`, or a file of a files shard or of a table's path column). Rows of samples that no
    shard holds any more are left out, as `score_paths` leaves out rows of files no longer given."""
    from imgpref.data.sources import SEP, FilesShard, TableShard

    by_file: dict[str, str] = {}
    for sh in shards:
        if isinstance(sh, FilesShard):
            by_file.update((os.path.abspath(f), sh.name) for f in sh.files)
    by_prefix = {os.path.abspath(getattr(sh, "path", sh.name)): sh.name for sh in shards
                 if not isinstance(sh, FilesShard)}
    out: dict[str, list[dict]] = {}
    pending: dict[str, list[dict]] = {}
    for r in rows:
        a = outmod.row_key(outmod._text(r.get("abs_path")), r["path"])
        name = by_file.get(a) or by_prefix.get(a.partition(SEP)[0]) or by_prefix.get(a.rpartition(SEP)[0])
        if name is None:
            pending.setdefault(a, []).append(r)
            continue
        out.setdefault(name, []).append({**r, "key": r["path"], "shard": name})
    for sh in shards:  # files named by a table's path column: only those tables say which shard they are in
        if not pending or not isinstance(sh, TableShard):
            continue
        for s in sh.samples():
            for r in pending.pop(s.abs_key, ()):
                out.setdefault(sh.name, []).append({**r, "key": r["path"], "shard": sh.name})
    return out


def count_batch(stats: dict, rows: list[dict], batch: dict) -> None:
    """Update run counters from one written batch."""
    stats["rows_new"] += len(rows)
    from imgpref.scorers.stages import _text

    n_bad = sum(1 for e in batch["error"] if _text(e) is not None)
    stats["failed_images"] += n_bad
    stats["decoded"] += len(batch["key"]) - n_bad


def run_local(shards, scorers, spec: RunSpec, dtypes, writer: parts.PartsWriter, *, run_key: str, resume: bool,
              batch_size: int, device: torch.device, stats: dict, progress: bool = True, decode: str = "cpu",
              check_device: bool = True) -> None:
    """The local engine: shard by shard, batch by batch, every stage in this process. decode "gpu": the
    tensor decode stage on `device` (`check_device=False` lets tests run it on the CPU)."""
    from imgpref.scorers.gpu_decode import make_decoder

    decoder = make_decoder(decode, spec, scorers, device, check=check_device)
    model = EmbedAndScore(scorers, spec, device, dtypes)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="img", desc="scoring", file=sys.stderr, dynamic_ncols=True)
    try:
        for shard in shards:
            if resume and parts.shard_done(writer.folder, shard.name, shard.identity, run_key):
                stats["shards_skipped"] += 1
                continue
            done = parts.ShardRows(writer.folder, shard.name, spec.save_embeddings) if resume else None
            for batch in plan_shard(shard, spec, done, batch_size):
                scored = model(decode_batch(batch, decoder))
                rows = to_rows(scored, spec)
                writer.write(rows, to_embeddings(scored, spec))
                count_batch(stats, rows, scored)
                if bar is not None:
                    bar.update(len(batch["key"]))
            writer.mark_done(shard.name, shard.identity, run_key)
        counts = getattr(decoder, "counts", None)
        if counts is not None:  # --decode gpu: how many images each path decoded
            stats["decoded_gpu"], stats["decoded_cpu_fallback"] = counts["gpu"], counts["cpu"]
    finally:
        if bar is not None:
            bar.close()
