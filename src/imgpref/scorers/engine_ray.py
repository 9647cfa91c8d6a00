"""The Ray engine of dataset scoring (`imgpref score --engine ray`; needs the `imgpref[ray]` extra).

It runs the same stages as the local engine (`imgpref.scorers.stages`), only placed by Ray Data:
- read + plan: one Ray task per shard (`read_shard_rows`, a `flat_map` over the shard list), which streams the
  shard's samples through `sources` and drops those with a valid row in the output (resume);
- decode + preprocess: CPU `map_batches` tasks (`decode_batch`);
- backbone + heads: `map_batches(RayScorer, compute=ActorPoolStrategy(size=n))`, one actor per GPU
  (`num_gpus=1`), or CPU actors when there is no GPU;
- write: the driver receives the scored batches (scores and, with --save-embeddings, embeddings: small next to
  the images) and writes them as Parquet parts with the one parts writer, so both engines write the same
  files and resume the same way.

`address="auto"` joins a running cluster (`ray start --head` on one node, `ray start --address=HEAD:6379` on the
others); None starts a local Ray with `local_init_kwargs()` (2 CPUs by default, a small object store, token
auth off: what a sandbox or CI runner needs).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import torch

from imgpref.data.sources import Shard
from imgpref.scorers import parts_output as parts
from imgpref.scorers.stages import SAMPLE_COLUMNS, Decoder, EmbedAndScore, RunSpec, decode_batch, plan_shard, \
    to_embeddings, to_rows

OBJECT_STORE_BYTES = 256 * 1024 * 1024
# decode tasks ask for a different CPU amount than the CPU actors, so Ray Data keeps them as separate tasks
# instead of fusing decoding into the model actors (which would serialise decoding behind the forward pass)
DECODE_CPUS = 0.5
READ_CPUS = 0.25  # reading a shard is I/O: it must not hold back a decode task or the model actor


def sandbox_env() -> None:
    """Environment a local Ray needs in a sandbox: no token auth, no usage stats, no dashboard metrics."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def local_init_kwargs(num_cpus: int | None = None) -> dict[str, Any]:
    """`ray.init` arguments for a local Ray: `num_cpus` (default min(2, CPUs)), a 256 MiB object store."""
    cpus = num_cpus or min(2, os.cpu_count() or 1)
    return {"num_cpus": cpus, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False,
            "log_to_driver": False, "configure_logging": False}


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Join `address` ("auto" or host:port), or start a local Ray; reuse a Ray already initialised here."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--engine ray needs Ray Data: pip install 'imgpref[ray]'") from exc
    if ray.is_initialized():
        return ray
    sandbox_env()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(**local_init_kwargs(num_cpus))
    return ray


def read_shard_rows(item: dict, shards: Sequence[Shard], spec: RunSpec, folder: str, resume: bool,
                    batch_size: int) -> list[dict]:
    """The read + plan stage for one shard: its samples that still need a row, as Ray rows."""
    shard = shards[int(item["shard"])]
    done = parts.ShardRows(folder, shard.name, spec.save_embeddings) if resume else None
    rows = []
    for batch in plan_shard(shard, spec, done, batch_size):
        # "" / b"" for missing values: Ray would turn an all-None column into float NaN
        rows.extend({c: _filled(c, batch[c][r]) for c in SAMPLE_COLUMNS} for r in range(len(batch["key"])))
    return rows


def _filled(column: str, v):
    if v is not None:
        return v
    return b"" if column == "data" else ""


class RayScorer:
    """The actor that holds the models: `EmbedAndScore` on this actor's GPU (or CPU)."""

    def __init__(self, scorers_ref: Any, spec: RunSpec, dtypes: Sequence[torch.dtype], device_type: str):
        import ray

        scorers = ray.get(scorers_ref) if isinstance(scorers_ref, ray.ObjectRef) else scorers_ref
        if device_type == "cpu":
            torch.set_num_threads(1)  # one core per actor; Ray schedules the rest
        self.stage = EmbedAndScore(scorers, spec, "cuda" if device_type == "cuda" else "cpu", dtypes)

    def __call__(self, batch: dict) -> dict:
        return self.stage(batch)


def _ray_shards(shards: Sequence[Shard], folder, run_key: str, resume: bool, stats: dict) -> list[int]:
    todo = []
    for i, sh in enumerate(shards):
        if resume and parts.shard_done(folder, sh.name, sh.identity, run_key):
            stats["shards_skipped"] += 1
        else:
            todo.append(i)
    return todo


def run_ray(shards: Sequence[Shard], scorers, spec: RunSpec, dtypes, writer: parts.PartsWriter, *, run_key: str,
            resume: bool, batch_size: int, address: str | None, device: torch.device, actors: int | None,
            stats: dict, progress: bool = True) -> None:
    """Score `shards` on Ray Data and write the parts; shard markers are written when the whole run is done."""
    from imgpref.scorers.score_dataset import count_batch

    ray = init_ray(address)
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    todo = _ray_shards(shards, writer.folder, run_key, resume, stats)
    if not todo:
        return
    gpu = device.type == "cuda"
    n_actors = actors or (max(1, int(ray.cluster_resources().get("GPU", 1))) if gpu else 1)
    decoder = Decoder(spec, [scorers[spec.group_of.index(g)].backbone.preprocess
                             for g in range(len(spec.namespaces))])
    scorers_ref = ray.put(list(scorers))
    ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.flat_map(read_shard_rows, fn_kwargs={"shards": list(shards), "spec": spec,
                                                  "folder": str(writer.folder), "resume": resume,
                                                  "batch_size": batch_size}, num_cpus=READ_CPUS)
    ds = ds.map_batches(decode_batch, fn_kwargs={"decoder": decoder}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=DECODE_CPUS)
    ds = ds.map_batches(RayScorer, fn_constructor_args=(scorers_ref, spec, list(dtypes), device.type),
                        compute=ActorPoolStrategy(size=n_actors), num_gpus=1 if gpu else 0,
                        num_cpus=0 if gpu else 1, batch_size=batch_size, batch_format="numpy")
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        batch = {k: list(v) if getattr(v, "ndim", 1) == 1 else v for k, v in batch.items()}
        rows = to_rows(batch, spec)
        writer.write(rows, to_embeddings(batch, spec))
        count_batch(stats, rows, batch)
    for i in todo:
        writer.mark_done(shards[i].name, shards[i].identity, run_key)
    if progress:
        print(f"ray engine: {len(todo)} shard(s) scored", file=sys.stderr)
