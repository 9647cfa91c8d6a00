"""The canonical preference manifest (DESIGN.md): one row per compared pair, CSV / JSONL / Parquet.

API (other modules code against this):

    COLUMNS = ("image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group", "annotator", "split")

    read_manifest(path, *, split: str | None = None, validate: bool = True) -> pandas.DataFrame
        Reads and validates. Returns exactly COLUMNS (optional ones filled: prompt "", group = image pair key
        when absent, annotator "", split ""), one row per pair, image_0/image_1 as absolute path strings
        (resolved against the manifest's folder) or `bytes` for Parquet with embedded images. Votes are int64.
        Raises ManifestError (a ValueError) listing every bad row (file, row, column, reason) when invalid.
        `split` keeps only that split.

    write_manifest(df, path) -> None
        Writes atomically (tmp file + rename) in the format named by the suffix; image paths made relative to
        the manifest's folder when they lie under it.

    validate_manifest(path) -> list[RowProblem]     (RowProblem: file, row, column, reason)

    vote_fraction(df) -> numpy array q = (votes_0 + 0.5 * votes_tie) / n   (REFERENCE.md)

Rows are numbered from 1 (the first data row; the CSV header and blank JSONL lines are not counted).
Row 0 means the problem concerns the whole file (unreadable, missing column).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imgpref.atomic import atomic_write

COLUMNS = ("image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group", "annotator", "split")
REQUIRED_COLUMNS = ("image_0", "image_1", "votes_0", "votes_1", "votes_tie")
OPTIONAL_COLUMNS = ("prompt", "group", "annotator", "split")
IMAGE_COLUMNS = ("image_0", "image_1")
VOTE_COLUMNS = ("votes_0", "votes_1", "votes_tie")
SPLITS = ("train", "val", "test", "")
SUFFIXES = (".csv", ".jsonl", ".parquet")
_MAX_LISTED = 20
_MAX_VOTES = int(np.iinfo(np.int64).max)


@dataclass(frozen=True)
class RowProblem:
    """One problem in a manifest: `row` is the 1-based data row (0 = the whole file)."""

    file: str
    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        col = f", column {self.column!r}" if self.column else ""
        return f"{self.file}: {where}{col}: {self.reason}"


class ManifestError(ValueError):
    """A manifest failed validation; `.problems` holds every RowProblem."""

    def __init__(self, problems: list[RowProblem]):
        self.problems = list(problems)
        listed = "\n".join(f"  {p}" for p in self.problems[:_MAX_LISTED])
        more = len(self.problems) - _MAX_LISTED
        tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
        super().__init__(
            f"invalid manifest: {len(self.problems)} problem(s); run `imgpref data validate` for the full list\n"
            f"{listed}{tail}"
        )


# ---------------------------------------------------------------------------------------------- loading


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":  # a JSON-lines file named .json is common enough to accept on read
        return ".jsonl"
    return suffix


def _load_raw(path: Path) -> tuple[pd.DataFrame | None, list[RowProblem]]:
    """Load the table as objects (no type coercion), or report why it cannot be read."""
    file = str(path)
    if not path.exists():
        return None, [RowProblem(file, 0, "", "file not found")]
    if path.is_dir():
        return None, [RowProblem(file, 0, "", "is a folder, expected a .csv, .jsonl or .parquet file")]
    suffix = _suffix(path)
    try:
        if suffix == ".csv":
            # dtype=str + keep_default_na=False keeps empty cells as "" and every value verbatim for checking.
            return pd.read_csv(path, dtype=str, keep_default_na=False), []
        if suffix == ".jsonl":
            return _load_jsonl(path)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return pd.DataFrame({name: table.column(name).to_pylist() for name in table.column_names}), []
    except Exception as exc:  # noqa: BLE001 - any parser failure is an unreadable file, reported with its reason
        return None, [RowProblem(file, 0, "", f"unreadable file: {type(exc).__name__}: {exc}")]
    return None, [RowProblem(file, 0, "", f"unknown format {path.suffix!r}; use one of {', '.join(SUFFIXES)}")]


def _load_jsonl(path: Path) -> tuple[pd.DataFrame, list[RowProblem]]:
    records: list[dict[str, Any]] = []
    problems: list[RowProblem] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = len(records) + 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(RowProblem(str(path), row, "", f"invalid JSON: {exc.msg}"))
                obj = None
            if obj is not None and not isinstance(obj, dict):
                problems.append(RowProblem(str(path), row, "", "a JSON line must be an object"))
                obj = None
            # Keep a placeholder so later row numbers stay aligned with the file's lines.
            records.append(obj if obj is not None else {"__bad__": True})
    return pd.DataFrame.from_records(records), problems


# ---------------------------------------------------------------------------------------------- checks


def _parse_votes(value: Any) -> tuple[int | None, str | None]:
    """Return (count, None) or (None, reason)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "missing vote count"
    if isinstance(value, (bool, np.bool_)):
        return None, f"non-integer votes {value!r}"
    number: int | float
    if isinstance(value, (int, np.integer)):
        number = int(value)  # exact: a float would round counts near the int64 limit
    elif isinstance(value, (float, np.floating)):
        number = float(value)
    else:
        text = str(value).strip()
        if text == "":
            return None, "missing vote count"
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None, f"non-integer votes {value!r}"
    if isinstance(number, float) and (not math.isfinite(number) or number != int(number)):
        return None, f"non-integer votes {value!r}"
    if number < 0:
        return None, f"negative votes {int(number)}"
    if number > _MAX_VOTES:
        return None, f"vote count {value!r} is beyond the int64 range (at most {_MAX_VOTES})"
    return int(number), None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _image_key(value: Any, base: Path) -> str:
    """Identity of an image: its resolved path, or a content hash for embedded bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha1:" + hashlib.sha1(bytes(value)).hexdigest()
    return os.path.normpath(str(base / str(value)))


def _check_frame(df: pd.DataFrame, file: str, base: Path) -> list[RowProblem]:
    problems: list[RowProblem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for col in missing:
        problems.append(RowProblem(file, 0, col, "missing column"))
    if missing:
        return problems
    bad_rows = set(df.index[df["__bad__"].fillna(False).astype(bool)]) if "__bad__" in df.columns else set()
    seen: dict[tuple, int] = {}
    exists_cache: dict[str, bool] = {}
    for pos, record in enumerate(df.to_dict("records")):
        row = pos + 1
        if pos in bad_rows:
            continue
        keys: list[str | None] = []
        for col in IMAGE_COLUMNS:
            value = record[col]
            if isinstance(value, (bytes, bytearray, memoryview)):
                if len(value) == 0:
                    problems.append(RowProblem(file, row, col, "empty image bytes"))
                    keys.append(None)
                else:
                    keys.append(_image_key(value, base))
                continue
            name = _text(value).strip()
            if not name:
                problems.append(RowProblem(file, row, col, "empty image path"))
                keys.append(None)
                continue
            key = _image_key(name, base)
            if key not in exists_cache:
                exists_cache[key] = os.path.isfile(key)
            if not exists_cache[key]:
                problems.append(RowProblem(file, row, col, f"missing image file {name!r}"))
            keys.append(key)
        if keys[0] is not None and keys[0] == keys[1]:
            problems.append(RowProblem(file, row, "image_1", "the same image on both sides"))
        counts = []
        for col in VOTE_COLUMNS:
            count, reason = _parse_votes(record[col])
            if reason:
                problems.append(RowProblem(file, row, col, reason))
            counts.append(count)
        if all(c is not None for c in counts) and sum(counts) == 0:
            problems.append(RowProblem(file, row, "votes_0", "zero total votes (votes_0 + votes_1 + votes_tie = 0)"))
        elif all(c is not None for c in counts) and sum(counts) > _MAX_VOTES:
            # each count fits, their sum (the pair's n, summed as int64 downstream) would wrap around
            problems.append(RowProblem(file, row, "votes_0",
                                       f"total votes {sum(counts)} are beyond the int64 range (at most {_MAX_VOTES})"))
        split = _text(record.get("split")).strip()
        if split not in SPLITS:
            problems.append(
                RowProblem(file, row, "split", f"unknown split {split!r}; allowed: train, val, test or empty"))
        if keys[0] is not None and keys[1] is not None:
            dup_key = (frozenset(keys), _text(record.get("prompt")), _text(record.get("annotator")))
            if dup_key in seen:
                problems.append(RowProblem(
                    file, row, "image_0",
                    f"duplicate pair: same images, prompt and annotator as row {seen[dup_key]}; merge their votes",
                ))
            else:
                seen[dup_key] = row
    return problems


def validate_manifest(path: str | os.PathLike) -> list[RowProblem]:
    """Every problem in the manifest at `path` (empty list when valid)."""
    path = Path(path)
    df, problems = _load_raw(path)
    if df is None:
        return problems
    return problems + _check_frame(df, str(path), path.parent)


# ---------------------------------------------------------------------------------------------- read / write


def _pair_key(a: Any, b: Any) -> str:
    def short(x: Any) -> str:
        if isinstance(x, (bytes, bytearray, memoryview)):
            return hashlib.sha1(bytes(x)).hexdigest()[:16]
        return str(x)

    return "|".join(sorted((short(a), short(b))))


def read_manifest(
    path: str | os.PathLike, *, split: str | None = None, validate: bool = True, keep_extra: bool = False
) -> pd.DataFrame:
    """Read and validate a manifest; returns exactly COLUMNS with absolute image paths (or bytes), int64 votes.

    keep_extra: also keep the file's other columns as they are, after COLUMNS (e.g. the list manifest's gain_0 /
    gain_1, data_cards/align_lists.md)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of train, val, test")
    df, problems = _load_raw(path)
    if df is not None and validate:
        problems = problems + _check_frame(df, str(path), path.parent)
    if problems:
        raise ManifestError(problems)
    if df is None:  # unreachable: _load_raw reports a problem whenever it returns no frame
        raise ManifestError([RowProblem(str(path), 0, "", "unreadable file")])
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError([RowProblem(str(path), 0, c, "missing column") for c in missing])
    base = path.parent.resolve()
    out = pd.DataFrame(index=range(len(df)))
    for col in IMAGE_COLUMNS:
        out[col] = pd.Series(
            [bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else os.path.normpath(str(base / str(v)))
             for v in df[col]],
            dtype=object,
        )
    for col in VOTE_COLUMNS:
        out[col] = np.array([_parse_votes(v)[0] or 0 for v in df[col]], dtype=np.int64)
    for col in OPTIONAL_COLUMNS:
        values = [_text(v).strip() if col == "split" else _text(v) for v in df[col]] if col in df.columns \
            else [""] * len(df)
        out[col] = pd.Series(values, dtype=object)
    # A pair with no group forms its own group, so group-level resampling never merges unrelated pairs.
    empty = out["group"] == ""
    if empty.any():
        pairs = zip(out.loc[empty, "image_0"], out.loc[empty, "image_1"])
        out.loc[empty, "group"] = [_pair_key(a, b) for a, b in pairs]
    out = out[list(COLUMNS)]
    if keep_extra:
        for col in (c for c in df.columns if c not in COLUMNS):
            out[col] = df[col].to_numpy()
    if split is not None:
        out = out[out["split"] == split].reset_index(drop=True)
    return out


def _relative(value: Any, base: str, real_base: str) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)) or value is None:
        return value
    text = str(value)
    if not os.path.isabs(text):
        return text
    for root, candidate in ((base, os.path.normpath(text)), (real_base, None)):
        if candidate is None:  # only pay for symlink resolution when the plain comparison fails
            candidate = os.path.realpath(text)
        if candidate.startswith(root.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(candidate, root)).as_posix()
    return text


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` atomically as CSV / JSONL / Parquet (by suffix), image paths relative to the manifest folder."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"unknown manifest format {path.suffix!r} for {path}; use one of {', '.join(SUFFIXES)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cannot write manifest {path}: missing column(s) {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    base, real_base = os.path.abspath(path.parent), os.path.realpath(path.parent)
    out = df.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in out.columns:
            out[col] = ""
        out[col] = [_text(v) for v in out[col]]
    for col in IMAGE_COLUMNS:
        out[col] = pd.Series([_relative(v, base, real_base) for v in out[col]], index=out.index, dtype=object)
    has_bytes = any(isinstance(v, (bytes, bytearray, memoryview)) for col in IMAGE_COLUMNS for v in out[col])
    if has_bytes and suffix != ".parquet":
        raise ValueError(f"image bytes can only be stored in a .parquet manifest, not {path.name}")
    for col in VOTE_COLUMNS:
        out[col] = pd.to_numeric(out[col]).astype(np.int64)
    extra = [c for c in out.columns if c not in COLUMNS]
    out = out[list(COLUMNS) + extra].reset_index(drop=True)
    with atomic_write(path) as tmp:
        if suffix == ".csv":
            out.to_csv(tmp, index=False)
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in out.to_dict("records"):
                    fh.write(json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False) + "\n")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            arrays = {}
            for col in out.columns:
                values = out[col].tolist()
                if col in IMAGE_COLUMNS and has_bytes:
                    arrays[col] = pa.array([bytes(v) if v is not None else None for v in values], type=pa.binary())
                elif col in VOTE_COLUMNS:
                    arrays[col] = pa.array(values, type=pa.int64())
                else:
                    arrays[col] = pa.array([_jsonable(v) for v in values])
            pq.write_table(pa.table(arrays), tmp)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def vote_fraction(df: pd.DataFrame) -> np.ndarray:
    """q = (votes_0 + 0.5 * votes_tie) / n per row: the share of votes for image_0, ties split evenly."""
    v0 = df["votes_0"].to_numpy(dtype=np.float64)
    v1 = df["votes_1"].to_numpy(dtype=np.float64)
    vt = df["votes_tie"].to_numpy(dtype=np.float64)
    n = v0 + v1 + vt
    if np.any(n <= 0):
        raise ValueError("vote_fraction: a row has zero total votes; validate the manifest first")
    return (v0 + 0.5 * vt) / n
