"""Synthetic sharded datasets in img2dataset's layout, for tests and benchmarks of dataset scoring.

`write_sample_dataset(folder, ...)` writes `NNNNN.tar` WebDataset shards (`key.jpg`, `key.txt`, `key.json`), the
`NNNNN.parquet` status table beside each (as img2dataset does), and optionally a Parquet table of embedded JPEG
bytes with a prompt column. Bad samples (not an image, a truncated JPEG, an empty member, a decompression-bomb
header) can be mixed in; their expected error substrings are returned.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from imgpref.data.sources import write_tar_shard

BAD_KINDS = {"text": "not an image", "truncated": "truncated", "empty": "empty file", "bomb": "decompression bomb"}


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 32), quality: int = 90) -> bytes:
    """A textured RGB JPEG (blocky noise over a ramp), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    arr = np.kron(base, np.ones((4, 4, 1)))[:h, :w]
    arr = np.clip(0.6 * arr + 0.4 * np.linspace(0, 1, w)[None, :, None], 0, 1)
    buf = io.BytesIO()
    Image.fromarray((arr * 255).astype(np.uint8), "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A small valid PNG whose header claims width x height pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def bad_bytes(kind: str) -> bytes:
    """Encoded bytes of one bad kind (see `BAD_KINDS`)."""
    if kind == "text":
        return b"this is not an image\n"
    if kind == "truncated":
        good = jpeg_bytes(999, (64, 48))
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    if kind == "bomb":
        return bomb_png()
    raise ValueError(f"unknown bad kind {kind!r}; use one of {sorted(BAD_KINDS)}")


def write_sample_dataset(folder: str | Path, *, shards: int = 2, per_shard: int = 8, table_rows: int = 0,
                         bad: dict[int, str] | None = None, size: tuple[int, int] = (40, 32),
                         seed: int = 0) -> dict:
    """Write the dataset; returns {"tars": [...], "table": path or None, "expect": {sample key: error substring
    or None}, "prompts": {sample key: prompt}}. `bad` maps a global sample index (tars first, then table rows)
    to a bad kind."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad = bad or {}
    expect: dict[str, str | None] = {}
    prompts: dict[str, str] = {}
    tars = []
    idx = 0
    for s in range(shards):
        tar = folder / f"{s:05d}.tar"
        samples, status = [], []
        for k in range(per_shard):
            key = f"{s:05d}{k:04d}"
            kind = bad.get(idx)
            img = bad_bytes(kind) if kind else jpeg_bytes(seed * 100_000 + idx, size)
            prompt = f"a picture number {idx}"
            members = {"jpg": img, "json": json.dumps({"key": key, "caption": prompt}).encode()}
            if idx % 2 == 0:  # half the samples carry the prompt in .txt, the others only in .json
                members = {"jpg": img, "txt": prompt.encode(), **{"json": members["json"]}}
            samples.append((key, members))
            status.append({"key": key, "status": "success", "caption": prompt})
            expect[f"{tar}::{key}"] = BAD_KINDS[kind] if kind else None
            prompts[f"{tar}::{key}"] = prompt
            idx += 1
        status.append({"key": f"{s:05d}{per_shard:04d}", "status": "failed_to_download", "caption": "lost"})
        write_tar_shard(tar, samples)
        pd.DataFrame(status).to_parquet(folder / f"{s:05d}.parquet", index=False)
        tars.append(tar)
    table = None
    if table_rows:
        rows = []
        for r in range(table_rows):
            kind = bad.get(idx)
            rows.append({"key": f"t{r:05d}", "image": bad_bytes(kind) if kind else jpeg_bytes(seed * 100_000 + idx, size),
                         "prompt": f"a picture number {idx}"})
            table_key = f"{folder / 'table' / 'images.parquet'}::t{r:05d}"
            expect[table_key] = BAD_KINDS[kind] if kind else None
            prompts[table_key] = f"a picture number {idx}"
            idx += 1
        (folder / "table").mkdir(exist_ok=True)
        table = folder / "table" / "images.parquet"
        pd.DataFrame(rows).to_parquet(table, index=False)
    return {"tars": tars, "table": table, "expect": expect, "prompts": prompts}
