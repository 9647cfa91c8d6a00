"""A folder of Parquet part files, written as work completes; resume at shard and row granularity.

Layout of `DIR/`:
- `part-<time ns>-<shard slug>.parquet`: score rows of one batch of one shard (`path, scorer, score, prompt,
  error, abs_path, file_id, fingerprint` as in `imgpref.scorers.output`, plus `key` and `shard`). Each part is
  written atomically (temp + rename), so a killed run leaves only whole parts; names sort in time order;
- `embeddings/<same name>`: with `--save-embeddings`, one row per embedded sample (`key, abs_path, file_id,
  shard`) and one list<float32> column per backbone, named in `embeddings/backbones.json` ({column: embedding
  namespace}). It is written before its score part; an embeddings part without its score part (a kill in
  between) is deleted on resume, so embeddings are never duplicated either;
- `_shards/<shard slug>.json`: written when a shard is finished: its identity, the run's fingerprints and how
  many of its samples failed. A restarted run skips a shard whose marker matches and that had no failed sample
  without opening it; any other shard is read and only its samples without a valid row (same absolute key,
  identity, fingerprint and prompt, no error) are scored, so failed rows are tried again as `score_paths` does;
- `_imported.json`: with a single-file output, `--resume` after a finished run first turns that file's rows
  back into parts (`import_rows`), so they are reused instead of scored again.

A row that is scored again (its file changed, or it failed before) supersedes the old one: the old parts of
that shard are rewritten without it, so every (sample, scorer) has exactly one row on disk; `read_parts` also
keeps only the last row per key in case a kill came between the two writes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from imgpref.atomic import atomic_write
from imgpref.scorers import output as outmod
from imgpref.scorers.score_paths import NO_PROMPT

EXTRA_COLUMNS = ("key", "shard")
PART_COLUMNS = outmod.ALL_COLUMNS + EXTRA_COLUMNS
EMB_DIR = "embeddings"
MARKERS = "_shards"
IMPORTED = "_imported.json"


def shard_slug(shard: str) -> str:
    """A file-name-safe, unique slug of a shard name."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(str(shard))).strip("_")[:40] or "shard"
    return f"{base}_{hashlib.blake2b(str(shard).encode('utf-8', 'surrogateescape'), digest_size=6).hexdigest()}"


def is_parts_output(out: str | Path, fmt: str | None = None) -> bool:
    """`--format parts`, or an --out with a trailing slash (an existing folder without one stays an error)."""
    if fmt is not None and fmt not in ("parts", "file"):
        raise ValueError(f"--format {fmt!r}: use parts (a folder of Parquet part files) or file")
    if fmt == "parts":
        return True
    if fmt == "file":
        return False
    s = str(out)
    return s.endswith(("/", os.sep))


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # what `DataFrame.to_parquet(index=False)` writes (the same schema and pandas metadata), without its overhead
    table = pa.Table.from_pandas(outmod.parquet_safe(df), preserve_index=False)
    with atomic_write(path, fsync=True) as tmp:
        pq.write_table(table, tmp)


class PartsWriter:
    """Writes score (and embedding) parts to a folder, and the shard markers."""

    def __init__(self, folder: str | Path, emb_columns: dict[str, str] | None = None):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--out {self.folder} is a file; with --format parts pass a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.emb_columns = emb_columns or {}
        if self.emb_columns:
            (self.folder / EMB_DIR).mkdir(exist_ok=True)
            meta = self.folder / EMB_DIR / "backbones.json"
            with atomic_write(meta) as tmp:
                Path(tmp).write_text(json.dumps(self.emb_columns, indent=1, sort_keys=True) + "\n")
        self._last = 0
        self.failed: dict[str, int] = {}  # per shard: samples whose row this run wrote with an image error

    def _name(self, shard: str) -> str:
        ns = max(time.time_ns(), self._last + 1)  # strictly increasing within a run
        self._last = ns
        return f"part-{ns:020d}-{shard_slug(shard)}.parquet"

    def write(self, rows: Sequence[dict], embeddings: Sequence[dict] = ()) -> None:
        """Write `rows` (and their embeddings) as one part per shard present."""
        by_shard: dict[str, list[dict]] = {}
        for r in rows:
            by_shard.setdefault(r["shard"], []).append(r)
        emb_by_shard: dict[str, list[dict]] = {}
        for e in embeddings:
            emb_by_shard.setdefault(e["shard"], []).append(e)
        for shard, rs in by_shard.items():
            self.failed[shard] = self.failed.get(shard, 0) + len(
                {r["abs_path"] for r in rs if outmod._text(r.get("error")) not in (None, NO_PROMPT)})
            name = self._name(shard)
            if emb_by_shard.get(shard):
                _write_parquet(embeddings_frame(emb_by_shard[shard], self.emb_columns), self.folder / EMB_DIR / name)
            _write_parquet(parts_frame(rs), self.folder / name)

    def mark_done(self, shard: str, identity: str | None, run_key: str) -> None:
        """Record that `shard` (with this identity) is finished for this run's scorers and prompts, and how many
        of its samples failed (every row of a resumed shard that failed before is written again in this run)."""
        d = self.folder / MARKERS
        d.mkdir(exist_ok=True)
        doc = {"shard": shard, "identity": identity, "run": run_key, "failed": self.failed.get(shard, 0)}
        with atomic_write(d / f"{shard_slug(shard)}.json") as tmp:
            Path(tmp).write_text(json.dumps(doc) + "\n")


def parts_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Row dicts as a parts table: `outmod.normalize`'s columns, values and types, then `key` and `shard`.

    Built in one DataFrame call from per-column lists: pandas' column-by-column insertion cost more per batch
    than the Parquet write itself (benchmarks/RESULTS.md, score_scale).
    """
    if not rows:
        df = outmod.empty_table()
        for c in EXTRA_COLUMNS:
            df[c] = pd.Series([], dtype=object)
        return df
    text = outmod._text
    cols: dict[str, object] = {c: [text(r.get(c)) or "" for r in rows] for c in ("path", "scorer")}
    cols["score"] = _floats([r.get("score") for r in rows])
    for c in outmod._TEXT:
        cols[c] = [text(r.get(c)) for r in rows]
    for c in outmod.extra_columns(rows):
        cols[c] = _floats([r.get(c) for r in rows])
    for c in EXTRA_COLUMNS:
        cols[c] = [r.get(c) for r in rows]
    return pd.DataFrame({c: v if isinstance(v, np.ndarray) else pd.Series(v, dtype=object)
                         for c, v in cols.items()})


def _floats(values: list) -> np.ndarray:
    """float64 column: plain floats (the rows the engines build) directly, anything else as `normalize` parses
    it (None, "" and unparsable text -> NaN)."""
    if all(type(v) is float for v in values):
        return np.array(values, dtype=np.float64)
    return outmod._floats(values)


def embeddings_frame(rows: Sequence[dict], columns: dict[str, str]) -> pd.DataFrame:
    import pyarrow as pa

    cols = ["key", "abs_path", "file_id", "shard"]
    data = {c: pa.array([r[c] for r in rows], pa.string()) for c in cols}
    for c in columns:
        data[c] = pa.array([None if r.get(c) is None else np.asarray(r[c], np.float32) for r in rows],
                           pa.list_(pa.float32()))
    return pa.table(data).to_pandas(types_mapper=None)


def shard_done(folder: str | Path, shard: str, identity: str | None, run_key: str) -> bool:
    """True when `shard`'s marker says it was finished with this identity and run key, and no sample failed
    (a shard with failed rows is read again on resume so that they are retried)."""
    p = Path(folder) / MARKERS / f"{shard_slug(shard)}.json"
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (identity is not None and doc.get("identity") == identity and doc.get("run") == run_key
            and doc.get("failed") == 0)


def import_rows(folder: str | Path, rows_by_shard: dict[str, list[dict]], source: str | Path) -> int:
    """Write the rows of an earlier single-file output back as parts (one per shard), once per parts folder.

    A shard that already has parts (an import cut short by a kill) is left as it is, so no row is ever stored
    twice; its missing rows are simply scored again. Returns the number of rows imported.
    """
    folder = Path(folder)
    if (folder / IMPORTED).exists():
        return 0
    writer = PartsWriter(folder)
    n = 0
    for shard, rows in rows_by_shard.items():
        if rows and not shard_parts(folder, shard):
            writer.write(rows)
            n += len(rows)
    with atomic_write(folder / IMPORTED) as tmp:
        Path(tmp).write_text(json.dumps({"source": str(source), "rows": n}) + "\n")
    return n


def shard_parts(folder: str | Path, shard: str) -> list[Path]:
    """Score part files of `shard`, oldest first."""
    return sorted(Path(folder).glob(f"part-*-{shard_slug(shard)}.parquet"))


def drop_orphan_embeddings(folder: str | Path) -> int:
    """Delete embedding parts whose score part is missing (a kill between the two writes)."""
    d = Path(folder) / EMB_DIR
    n = 0
    for p in d.glob("part-*.parquet") if d.is_dir() else ():
        if not (Path(folder) / p.name).exists():
            p.unlink()
            n += 1
    return n


class ShardRows:
    """The rows already on disk for one shard: lookup for resume, and removal of superseded rows."""

    def __init__(self, folder: str | Path, shard: str, need_embeddings: bool = False):
        self.folder = Path(folder)
        self.parts = shard_parts(folder, shard)
        # with --save-embeddings a row counts as done only when its sample's embeddings are stored too
        self.need_embeddings = need_embeddings
        self.embedded: set[str] = set()
        for p in self.parts if need_embeddings else ():
            e = self.folder / EMB_DIR / p.name
            if e.exists():
                self.embedded.update(outmod._text(a) for a in pd.read_parquet(e, columns=["abs_path"])["abs_path"])
        self.rows: dict[tuple[str, str], dict] = {}
        self.where: dict[tuple[str, str], Path] = {}
        for p in self.parts:
            df = pd.read_parquet(p, columns=["abs_path", "scorer", "file_id", "fingerprint", "prompt", "error"])
            for r in df.to_dict("records"):
                k = (outmod._text(r["abs_path"]), str(r["scorer"]))
                self.rows[k] = r
                self.where[k] = p
        self.superseded: set[tuple[str, str]] = set()

    def reusable(self, abs_key: str, scorer: str, identity: str | None, fingerprint: str,
                 prompt: str | None) -> bool:
        """Whether the stored row for (abs_key, scorer) is valid; an invalid one is marked superseded."""
        r = self.rows.get((abs_key, scorer))
        if r is None:
            return False
        T = outmod._text
        ok = (identity is not None and T(r["error"]) is None and T(r["file_id"]) == identity
              and T(r["fingerprint"]) == fingerprint and T(r["prompt"]) == (prompt or None)
              and (not self.need_embeddings or abs_key in self.embedded))
        if not ok:
            self.superseded.add((abs_key, scorer))
        return ok

    def drop_superseded(self) -> None:
        """Rewrite the old parts (and their embeddings) without the rows that this run scored again."""
        files = {self.where[k] for k in self.superseded}
        samples = {a for a, _ in self.superseded}
        for p in files:
            e = self.folder / EMB_DIR / p.name
            if e.exists():  # a sample scored again gets a new embedding row: drop the old one
                emb = pd.read_parquet(e)
                keep_e = [outmod._text(a) not in samples for a in emb["abs_path"]]
                if not all(keep_e):
                    _write_parquet(emb.loc[keep_e].reset_index(drop=True), e)
            df = pd.read_parquet(p)
            keys = zip((outmod._text(a) for a in df["abs_path"]), df["scorer"].astype(str))
            keep = [k not in self.superseded for k in keys]
            if all(keep):
                continue
            if any(keep):
                _write_parquet(df.loc[keep].reset_index(drop=True), p)
            else:
                p.unlink()
        self.superseded.clear()


def read_parts(folder: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """All score rows of a parts folder (one per sample and scorer: the latest wins)."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        return parts_frame([])
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    for c in df.columns:  # non-UTF-8 names were stored as bytes (see output.parquet_safe)
        if df[c].dtype == object and any(isinstance(v, (bytes, bytearray)) for v in df[c]):
            df[c] = [outmod._text(v) for v in df[c]]
    df = outmod.dedupe(df)
    return df[list(columns)] if columns is not None else df


def read_embeddings(folder: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """(embedding rows of a parts folder, {column: embedding namespace})."""
    d = Path(folder) / EMB_DIR
    meta = json.loads((d / "backbones.json").read_text())
    parts = sorted(d.glob("part-*.parquet"))
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
    return df, meta
