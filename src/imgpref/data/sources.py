"""Image sources for scoring datasets: every input becomes a sequence of shards, each a stream of samples.

Inputs (`open_sources(inputs)`; several may be mixed):
- image files, folders (recursive, `imgpref.data.discovery`) and globs (`data/*/*.jpg`): one shard "files";
- a text file of paths (`.txt`/`.lst`, one path a line, relative to the file's folder; `#` comments);
- a Parquet or CSV table (`.parquet`, `.csv`, `.tsv`) with a path column (`path`/`file`/`image`/`filepath`),
  a column of encoded image bytes, or a Hugging Face datasets image column (a struct `{"bytes", "path"}`); a
  prompt column (`prompt`, `caption`, `text`) when present; one shard per table, read batch by batch;
- WebDataset tar shards (`.tar`), including img2dataset's output (`NNNNN.tar` holding `key.jpg`, `key.txt`,
  `key.json` plus a `NNNNN.parquet` beside it with every row's download status): members are grouped by the
  path up to the first dot of the file name, as WebDataset does, and a sample's files are adjacent. The
  prompt is the `.txt` member, else the `.json` member's `caption`/`prompt`/`text`. A folder holding `.tar`
  files is read as a WebDataset dataset (its `NNNNN.parquet` metadata tables are not image tables).

Every sample has a stable `key` (the file's path, or `<shard>::<key inside it>`), an `abs_key` (the same with
the shard or file made absolute: the resume key), an `identity` (a file's size + mtime; for a member of a tar
or a path-less table row, the shard file's identity; for a table's embedded bytes, a content hash) and either
a `path` to decode or the encoded `data`. Shards stream: nothing holds more than one table batch or one tar
sample group in memory. Decoding goes through the one loader, `imgpref.data.images.load_image`.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from imgpref.data.discovery import discover_images, is_image_file
from imgpref.data.images import DEFAULT_MAX_PIXELS, load_image

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
LIST_SUFFIXES = (".txt", ".lst")
PATH_COLUMNS = ("path", "file", "image", "filepath", "file_name", "image_path")
BYTES_COLUMNS = ("image", "jpg", "png", "bytes", "image_bytes", "img")
PROMPT_COLUMNS = ("prompt", "caption", "text")
SEP = "::"
_GLOB_CHARS = set("*?[")


@dataclass
class Sample:
    """One image to score. `data` (encoded bytes) or `path` says what to decode; `error` is set for a sample
    that is known bad before decoding (e.g. a table row with neither path nor bytes)."""

    key: str
    abs_key: str
    identity: str | None
    shard: str
    prompt: str | None = None
    path: str | None = None
    data: bytes | None = None
    error: str | None = None


def bytes_identity(data: bytes) -> str:
    """Content identity of embedded image bytes: `b2:<blake2b-128 hex>`."""
    return "b2:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_identity(path: str) -> str | None:
    from imgpref.scorers.identity import file_identity  # the one file identity (size + mtime)

    return file_identity(path)


class Shard:
    """A unit of work and of shard-level resume: a name (stable across runs), an identity and its samples."""

    kind = "shard"

    def __init__(self, name: str, identity: str | None):
        self.name = name
        self.identity = identity

    def samples(self) -> Iterator[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FilesShard(Shard):
    """Image files on disk; prompts from a resolver (explicit prompt > prompts file > sidecar .txt)."""

    kind = "files"

    def __init__(self, name: str, files: Sequence[str], resolver: Callable[[str], str | None] | None = None):
        # the identity of a files shard is that of its list: any added/changed file is caught per row
        h = hashlib.blake2b(digest_size=8)
        for f in files:
            h.update(os.path.abspath(f).encode("utf-8", "surrogateescape") + b"\0")
            h.update(str(_file_identity(f)).encode() + b"\0")
        super().__init__(name, "files:" + h.hexdigest())
        self.files = list(files)
        self.resolver = resolver

    def samples(self) -> Iterator[Sample]:
        for f in self.files:
            prompt = self.resolver(f) if self.resolver is not None else None
            yield Sample(key=f, abs_key=os.path.abspath(f), identity=_file_identity(f), shard=self.name,
                         prompt=prompt or None, path=f)


def _text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    s = str(v).strip()
    return s or None


class TableShard(Shard):
    """A Parquet/CSV table: a path column, an image-bytes column or an HF image struct column; read in batches."""

    kind = "table"

    def __init__(self, path: str, *, image_column: str | None = None, prompt_column: str | None = None,
                 resolver: Callable[[str], str | None] | None = None, batch_rows: int = 256):
        super().__init__(path, _file_identity(path))
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.resolver = resolver
        self.batch_rows = batch_rows
        cols = self._columns()
        if image_column is not None and image_column not in cols:
            raise ValueError(f"{path}: no column {image_column!r} (--image-column); columns are {cols}")
        self.image_column = image_column or next(
            (c for c in PATH_COLUMNS + BYTES_COLUMNS if c in cols), None)
        if self.image_column is None:
            raise ValueError(f"{path}: no image column; name one of {list(PATH_COLUMNS + BYTES_COLUMNS)} or "
                             f"pass --image-column (columns are {cols})")
        if prompt_column is not None and prompt_column not in cols:
            raise ValueError(f"{path}: no column {prompt_column!r} (--prompt-column); columns are {cols}")
        self.prompt_column = prompt_column or next((c for c in PROMPT_COLUMNS if c in cols), None)
        self.key_column = "key" if "key" in cols and "key" != self.image_column else None

    def _columns(self) -> list[str]:
        if self.path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(self.path).schema_arrow.names)
        import pandas as pd

        return list(pd.read_csv(self.path, nrows=0, sep="\t" if self.path.lower().endswith(".tsv") else ",").columns)

    def _batches(self) -> Iterator[list[dict]]:
        cols = [c for c in (self.image_column, self.prompt_column, self.key_column) if c]
        if self.path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            for rb in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_rows, columns=cols):
                yield rb.to_pylist()
        else:
            import pandas as pd

            sep = "\t" if self.path.lower().endswith(".tsv") else ","
            for chunk in pd.read_csv(self.path, usecols=cols, chunksize=self.batch_rows, sep=sep, dtype=str,
                                     keep_default_na=False):
                yield chunk.to_dict("records")

    def _resolve(self, p: str) -> str:
        p = os.path.expanduser(p)
        return p if os.path.isabs(p) else os.path.join(self.base, p)

    def samples(self) -> Iterator[Sample]:
        row = -1
        for rows in self._batches():
            for rec in rows:
                row += 1
                v = rec.get(self.image_column)
                prompt = _text(rec.get(self.prompt_column)) if self.prompt_column else None
                rkey = _text(rec.get(self.key_column)) if self.key_column else None
                data, path = None, None
                if isinstance(v, dict):  # Hugging Face datasets Image(): {"bytes": ..., "path": ...}
                    data = v.get("bytes") or None
                    path = None if data else _text(v.get("path"))
                    name = _text(v.get("path"))
                elif isinstance(v, (bytes, bytearray, memoryview)):
                    data, name = bytes(v), None
                else:
                    path, name = _text(v), None
                if path is not None:
                    full = self._resolve(path)
                    if prompt is None and self.resolver is not None:
                        prompt = self.resolver(full) or None
                    yield Sample(key=path, abs_key=os.path.abspath(full), identity=_file_identity(full),
                                 shard=self.name, prompt=prompt, path=full)
                    continue
                inner = rkey or name or f"row{row}"
                sample = Sample(key=f"{self.path}{SEP}{inner}",
                                abs_key=f"{os.path.abspath(self.path)}{SEP}{inner}", identity=None,
                                shard=self.name, prompt=prompt)
                if data:
                    sample.data, sample.identity = data, bytes_identity(data)
                else:
                    sample.identity = f"{self.identity}{SEP}row{row}"
                    sample.error = f"row {row}: column {self.image_column!r} holds neither a path nor image bytes"
                yield sample


def _group_key(member: str) -> tuple[str, str]:
    """WebDataset grouping: (sample key, extension) of a member name: split at the first dot of the file name."""
    folder, _, fname = member.rpartition("/")
    stem, dot, ext = fname.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _json_prompt(raw: bytes) -> str | None:
    try:
        doc = json.loads(raw.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    return next((_text(doc[c]) for c in PROMPT_COLUMNS if _text(doc.get(c))), None)


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif")


class TarShard(Shard):
    """A WebDataset tar shard, streamed member by member (a sample's members are adjacent)."""

    kind = "tar"

    def __init__(self, path: str, resolver_prompt: str | None = None):
        super().__init__(path, _file_identity(path))
        self.path = path
        self.prompt = resolver_prompt

    def _sample(self, key: str, members: dict[str, bytes]) -> Sample:
        s = Sample(key=f"{self.path}{SEP}{key}", abs_key=f"{os.path.abspath(self.path)}{SEP}{key}",
                   identity=self.identity, shard=self.name)
        if self.prompt:
            s.prompt = self.prompt
        elif "txt" in members:
            s.prompt = _text(members["txt"].decode("utf-8", "replace"))
        elif "json" in members:
            s.prompt = _json_prompt(members["json"])
        img = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if img is None:
            img_ext = next((e for e in members if e.rsplit(".", 1)[-1] in IMAGE_EXTS), None)
            img = members.get(img_ext) if img_ext else None
        if img is None:
            s.error = f"no image member in the tar sample (members: {sorted(members)})"
        else:
            s.data = img
        return s

    def samples(self) -> Iterator[Sample]:
        try:
            tf = tarfile.open(self.path, mode="r|*")  # streaming: members are read in order, once
        except (tarfile.TarError, OSError) as exc:
            raise ValueError(f"{self.path}: not a readable tar shard ({exc})") from exc
        with tf:
            key, members = None, {}
            for m in tf:
                if not m.isfile():
                    continue
                k, ext = _group_key(m.name)
                if k.startswith(".") or k.rsplit("/", 1)[-1].startswith("."):
                    continue  # hidden files (e.g. macOS ._ resource forks)
                if key is not None and k != key:
                    if members:
                        yield self._sample(key, members)
                    members = {}
                key = k
                fh = tf.extractfile(m)
                members[ext] = fh.read() if fh is not None else b""
            if key is not None and members:
                yield self._sample(key, members)


def _read_list(path: Path) -> list[str]:
    base = path.resolve().parent
    out = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = Path(s).expanduser()
        out.append(str(p if p.is_absolute() else base / p))
    return out


def _expand(raw: str) -> list[str]:
    if os.path.exists(raw) or not (_GLOB_CHARS & set(raw)):
        return [raw]
    hits = sorted(glob.glob(os.path.expanduser(raw), recursive=True))
    if not hits:
        raise FileNotFoundError(f"{raw}: the pattern matches no file")
    return hits


def is_dataset_input(p: str | Path) -> bool:
    """True for inputs only the dataset engine reads: tables, tar shards, path lists, folders of tar shards."""
    s = str(p)
    low = s.lower()
    if low.endswith(TABLE_SUFFIXES + (".tar",) + LIST_SUFFIXES) and os.path.isfile(s):
        return True
    return os.path.isdir(s) and any(n.lower().endswith(".tar") for n in os.listdir(s))


def open_sources(inputs: str | Path | Iterable[str | Path], *, prompt: str | None = None,
                 resolver: Callable[[str], str | None] | None = None, image_column: str | None = None,
                 prompt_column: str | None = None, batch_rows: int = 256) -> list[Shard]:
    """Shards for `inputs` (see the module docstring), in the order given. Opening reads no image.

    prompt: one prompt for every tar sample (wins over its members; callers apply it to every sample with
    `with_prompt`). resolver: prompt for an image file (`imgpref.data.prompts.PromptResolver`), used for files
    and table path rows without a prompt column.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    shards: list[Shard] = []
    loose: list[str] = []
    for raw in inputs:
        for s in _expand(str(raw)):
            if not os.path.exists(s):
                raise FileNotFoundError(f"{s}: no such file or folder (pass image files, folders, globs, a "
                                        f".txt list of paths, Parquet/CSV tables or .tar shards)")
            low = s.lower()
            if os.path.isdir(s) and any(n.lower().endswith(".tar") for n in os.listdir(s)):
                shards.extend(TarShard(os.path.join(s, n), prompt)
                              for n in sorted(os.listdir(s)) if n.lower().endswith(".tar"))
            elif os.path.isdir(s) or is_image_file(s):
                loose.extend(str(p) for p in discover_images(s))
            elif low.endswith(".tar"):
                shards.append(TarShard(s, prompt))
            elif low.endswith(TABLE_SUFFIXES):
                shards.append(TableShard(s, image_column=image_column, prompt_column=prompt_column,
                                         resolver=resolver, batch_rows=batch_rows))
            elif low.endswith(LIST_SUFFIXES):
                listed = _read_list(Path(s))
                missing = [p for p in listed if not os.path.exists(p)]
                if missing:
                    raise FileNotFoundError(f"{s}: listed path {missing[0]} does not exist "
                                            f"({len(missing)} missing in all)")
                shards.append(FilesShard(s, listed, resolver))
            else:
                loose.append(s)  # a file named explicitly: scored (or reported) whatever its extension
    if loose:
        seen: set[str] = set()
        files = [f for f in loose if not (os.path.normpath(f) in seen or seen.add(os.path.normpath(f)))]
        shards.insert(0, FilesShard("files", files, resolver))
    return shards


def with_prompt(sample: Sample, prompt: str | None) -> Sample:
    """`sample` with the explicit run prompt applied (it wins over every other source)."""
    if prompt:
        sample.prompt = prompt
    return sample


def decode(sample: Sample, *, draft_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """The sample's image through the one loader (`load_image`): same bomb check, EXIF and alpha handling."""
    return load_image(sample.data if sample.data is not None else sample.path, draft_size=draft_size,
                      max_pixels=max_pixels)


__all__ = ["Sample", "Shard", "FilesShard", "TableShard", "TarShard", "open_sources", "is_dataset_input",
           "bytes_identity", "decode", "with_prompt", "SEP"]


def write_tar_shard(path: str | Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> Path:
    """Write a WebDataset tar shard: for each (key, {extension: bytes}), members `key.ext` side by side (the
    layout img2dataset writes). For tests, benchmarks and small exports; written to a temp name, then renamed."""
    from imgpref.atomic import atomic_write

    path = Path(path)
    with atomic_write(path) as tmp, tarfile.open(tmp, "w") as tf:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = 0
                tf.addfile(info, io.BytesIO(data))
    return path
