"""The Ray engine of dataset scoring (`imgpref score --engine ray`; needs the `imgpref[ray]` extra).

It runs the same stages as the local engine (`imgpref.scorers.stages`), only placed by Ray Data:
- read + plan + decode + preprocess: one Ray CPU task per shard (`read_and_decode`, a generator `map_batches`
  over the shard list), which streams the shard's samples through `sources`, drops those with a valid row in
  the output (resume) and yields decoded batches: only preprocessed tensors enter the object store, never the
  encoded bytes, and a shard is never held whole. (Separate read and decode operators cost a block of encoded
  bytes per shard in the object store and, on a small machine, extra worker processes that each pay the
  Python/torch import; benchmarks/RESULTS.md, score_scale);
- backbone + heads: `map_batches(RayScorer, compute=ActorPoolStrategy(size=n))`, one actor per GPU
  (`num_gpus=1`), or CPU actors when there is no GPU; with `--decode gpu` the read tasks skip decoding and each
  actor decodes its batches' JPEGs on its GPU (`imgpref.scorers.gpu_decode`) before the forward pass;
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
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from imgpref.data.sources import Shard
from imgpref.scorers import parts_output as parts
from imgpref.scorers.stages import Decoder, EmbedAndScore, RunSpec, decode_batch, plan_shard, \
    to_embeddings, to_rows

OBJECT_STORE_BYTES = 256 * 1024 * 1024
# decode tasks ask for a different CPU amount than the CPU actors, so Ray Data keeps them as separate tasks
# instead of fusing decoding into the model actors (which would serialise decoding behind the forward pass);
# on 2 CPUs with one CPU actor, two decode tasks share the other CPU (one reads while the other decodes)
DECODE_CPUS = 0.5


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
        # Ray runs its workers at niceness 15 (to keep its own daemons responsive on a busy node); a local Ray
        # started for one scoring job would then lose the CPU to every other process, while the local engine
        # runs at normal priority (measured: 2-3x slower on a loaded 2-core machine, benchmarks/RESULTS.md)
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(**local_init_kwargs(num_cpus))
    return ray


def read_and_decode(items: dict, shards: Sequence[Shard], spec: RunSpec, folder: str, resume: bool,
                    batch_size: int, decoder: Decoder | None) -> Iterator[dict]:
    """Read + plan + decode + preprocess of the shards in `items` (one Ray task per shard), batch by batch.

    One task runs the three CPU stages back to back, so the encoded bytes never go through the object store
    (only the preprocessed tensors do) and a shard streams through the task one batch at a time.
    """
    for i in items["shard"]:
        shard = shards[int(i)]
        done = parts.ShardRows(folder, shard.name, spec.save_embeddings) if resume else None
        for batch in plan_shard(shard, spec, done, batch_size):
            # decoder None (--decode gpu): the encoded bytes go on to the model actor, which decodes on its GPU
            out = decode_batch(batch, decoder) if decoder is not None else dict(batch)
            yield {c: (np.asarray(v) if c.startswith("x") else _column(v)) for c, v in out.items()}


def _column(values) -> np.ndarray:
    # "" for missing values: Ray would turn an all-None column into float NaN
    return np.array(["" if v is None else v for v in values], dtype=object)


class RayScorer:
    """The actor that holds the models: `EmbedAndScore` on this actor's GPU (or CPU)."""

    def __init__(self, scorers_ref: Any, spec: RunSpec, dtypes: Sequence[torch.dtype], device_type: str,
                 decode: str = "cpu"):
        import ray

        scorers = ray.get(scorers_ref) if isinstance(scorers_ref, ray.ObjectRef) else scorers_ref
        if device_type == "cpu":
            torch.set_num_threads(1)  # one core per actor; Ray schedules the rest
        self.stage = EmbedAndScore(scorers, spec, "cuda" if device_type == "cuda" else "cpu", dtypes)
        self.decoder = None
        if decode == "gpu":  # the driver checked CUDA already (`gpu_decode.check_gpu_decode`)
            from imgpref.scorers.gpu_decode import make_decoder

            self.decoder = make_decoder("gpu", spec, scorers, self.stage.device, check=False)

    def __call__(self, batch: dict) -> dict:
        return self.stage(self.decoder(batch) if self.decoder is not None else batch)


def _ray_shards(shards: Sequence[Shard], folder, run_key: str, resume: bool, stats: dict) -> list[int]:
    todo = []
    for i, sh in enumerate(shards):
        if resume and parts.shard_done(folder, sh.name, sh.identity, run_key):
            stats["shards_skipped"] += 1
        else:
            todo.append(i)
    return todo


def build_dataset(shards: Sequence[Shard], todo: Sequence[int], scorers, spec: RunSpec, dtypes, folder: str, *,
                  resume: bool, batch_size: int, device: torch.device, actors: int | None = None,
                  decode: str = "cpu"):
    """The Ray Data pipeline of the stages over the shards `todo` (lazy: nothing runs until it is iterated).
    decode "gpu": the read tasks pass the encoded bytes on and each model actor decodes them on its device."""
    import ray
    from ray.data import ActorPoolStrategy

    gpu = device.type == "cuda"
    n_actors = actors or (max(1, int(ray.cluster_resources().get("GPU", 1))) if gpu else 1)
    if decode == "gpu":
        decoder = None  # the model actors decode
    else:
        from imgpref.scorers.gpu_decode import make_decoder

        decoder = make_decoder("cpu", spec, scorers, device)
    scorers_ref = ray.put(list(scorers))
    ds = ray.data.from_items([{"shard": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.map_batches(read_and_decode, batch_size=1, batch_format="numpy", num_cpus=DECODE_CPUS,
                        fn_kwargs={"shards": list(shards), "spec": spec, "folder": folder, "resume": resume,
                                   "batch_size": batch_size, "decoder": decoder})
    return ds.map_batches(RayScorer, fn_constructor_args=(scorers_ref, spec, list(dtypes), device.type, decode),
                          compute=ActorPoolStrategy(size=n_actors), num_gpus=1 if gpu else 0,
                          num_cpus=0 if gpu else 1, batch_size=batch_size, batch_format="numpy")


def run_ray(shards: Sequence[Shard], scorers, spec: RunSpec, dtypes, writer: parts.PartsWriter, *, run_key: str,
            resume: bool, batch_size: int, address: str | None, device: torch.device, actors: int | None,
            stats: dict, progress: bool = True, decode: str = "cpu") -> None:
    """Score `shards` on Ray Data and write the parts; shard markers are written when the whole run is done."""
    from imgpref.scorers.score_dataset import count_batch

    init_ray(address)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    todo = _ray_shards(shards, writer.folder, run_key, resume, stats)
    if not todo:
        return
    ds = build_dataset(shards, todo, scorers, spec, dtypes, str(writer.folder), resume=resume,
                       batch_size=batch_size, device=device, actors=actors, decode=decode)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        batch = {k: list(v) if getattr(v, "ndim", 1) == 1 else v for k, v in batch.items()}
        rows = to_rows(batch, spec)
        writer.write(rows, to_embeddings(batch, spec))
        count_batch(stats, rows, batch)
    for i in todo:
        writer.mark_done(shards[i].name, shards[i].identity, run_key)
    if progress:
        print(f"ray engine: {len(todo)} shard(s) scored", file=sys.stderr)
