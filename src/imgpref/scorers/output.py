"""Score tables on disk: atomic writers and readers for .csv / .jsonl / .parquet, and the resume journal.

A score table has one row per (image, scorer): `path, scorer, score, prompt, error`, then the identity columns
`abs_path, file_id, fingerprint` that `--resume` keys rows on (see `imgpref.scorers.identity`): the absolute,
normalised path; the file's size and mtime; the scorer's fingerprint. Then one float column per extra output
of a scorer's head (`Head.extras`, e.g. HPSv3's `sigma`), NaN in the rows of scorers without it: the table is
long (one row per scorer), so the same extra name from two scorers shares a column without colliding, and an
extra named like a core column is written as `extra_<name>` (`extra_column`). `score` is NaN and `error` holds the
reason when the image could not be scored; `prompt` and `error` are missing (None/NaN) when absent. Final
files are written to a temporary name in the same folder and renamed into place, so a reader (or a killed
run) never sees a half-written file.

File names that are not valid UTF-8 are held as Python's surrogate escapes (as `os.listdir` returns them) and
written losslessly: JSON `\\udcXX` escapes in .jsonl, the original bytes in .csv, and in .parquet (which can
only hold UTF-8 text) a column holding such a name is stored as raw bytes (binary); `read_scores` decodes all
three back to the same string. CSV text cells are neutralised against formula injection (`imgpref.csv_safe`).

The journal `<out>.partial.jsonl` receives rows batch by batch (one JSON object per line, flushed and fsynced
per batch) while a run is going; `--resume` reads it back. A line cut short by a kill is ignored.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from imgpref import csv_safe
from imgpref.atomic import atomic_write

COLUMNS = ("path", "scorer", "score", "prompt", "error")
ID_COLUMNS = ("abs_path", "file_id", "fingerprint")
ALL_COLUMNS = COLUMNS + ID_COLUMNS
FORMATS = (".csv", ".jsonl", ".parquet")
KEY = ("abs_path", "scorer")
_TEXT = ("prompt", "error") + ID_COLUMNS
# columns of parts folders (`parts_output.EXTRA_COLUMNS`): text, never extras
_RESERVED = ALL_COLUMNS + ("key", "shard")


def extra_column(name: str) -> str:
    """The table column of a head's extra output `name` (`extra_<name>` if that is a core column's name)."""
    return f"extra_{name}" if name in _RESERVED or name.startswith("_") else name


def extra_columns(df_or_rows) -> list[str]:
    """The extra-output columns of a table (or the keys of row dicts), in order of appearance."""
    cols = df_or_rows.columns if isinstance(df_or_rows, pd.DataFrame) else \
        dict.fromkeys(k for r in df_or_rows for k in r)
    return [c for c in cols if isinstance(c, str) and c not in _RESERVED and not c.startswith("_")]


def check_output_path(out: str | Path, what: str = "--out") -> Path:
    """Validate the output extension and that it is not a folder; returns the Path."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"{what} {out}: unsupported extension {out.suffix!r}; use one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise ValueError(f"{what} {out} is a folder; pass a file name ending in {', '.join(FORMATS)}")
    return out


def journal_path(out: str | Path) -> Path:
    """`<out>.partial.jsonl`, the per-batch journal of a run writing `out`."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="float64" if c == "score" else "object") for c in ALL_COLUMNS})


def _text(v):  # missing and empty are the same thing in every format (CSV cannot tell them apart)
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v == "":
        return None
    if isinstance(v, (bytes, bytearray)):  # a Parquet column stored as bytes (non-UTF-8 names)
        return bytes(v).decode("utf-8", "surrogateescape")
    return str(v)


def _objects(values) -> pd.Series:
    # object dtype: pandas' default string dtype (Arrow) cannot hold surrogate-escaped file names
    return pd.Series(list(values), dtype="object")


def rows_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """A DataFrame of row dicts with every column kept as Python objects (safe for any file name)."""
    return pd.DataFrame(list(rows), columns=list(ALL_COLUMNS) + extra_columns(rows), dtype=object)


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in canonical order and types: strings for path/scorer, float score, None for missing text.

    The identity columns are optional on input (None when absent, e.g. a table from an older version); extra
    output columns (`extra_columns`) follow as float64 (an empty CSV cell is NaN).
    """
    if df.empty:
        return empty_table()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; expected {list(COLUMNS)}")
    out = pd.DataFrame(index=range(len(df)))
    out["path"] = _objects(_text(v) or "" for v in df["path"])
    out["scorer"] = _objects(_text(v) or "" for v in df["scorer"])
    out["score"] = _floats(df["score"])
    for c in _TEXT:
        out[c] = _objects(_text(v) for v in df[c]) if c in df.columns else _objects([None] * len(df))
    for c in extra_columns(df):
        out[c] = _floats(df[c])
    return out


def _floats(values):  # "" (an empty CSV cell) and None -> NaN
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype("float64").to_numpy()


def _needs_escape(s) -> bool:
    if not isinstance(s, str) or s.isascii():
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _json_line(row: dict) -> str:
    # a surrogate-escaped file name cannot be encoded as UTF-8: JSON \udcXX escapes keep it losslessly
    return json.dumps(row, ensure_ascii=any(_needs_escape(v) for v in row.values()))


def _json_value(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") and callable(v.item) else v  # numpy scalars -> Python


def json_lines(df: pd.DataFrame, columns: Sequence[str] | None = None) -> Iterable[str]:
    """One JSON object per row (NaN -> null; non-UTF-8 names as JSON escapes), for .jsonl files."""
    cols = list(columns or df.columns)
    for rec in df[cols].itertuples(index=False, name=None):
        yield _json_line({c: _json_value(v) for c, v in zip(cols, rec)})


def _json_rows(df: pd.DataFrame) -> Iterable[str]:
    return json_lines(df, list(ALL_COLUMNS) + extra_columns(df))


def parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text column that holds a non-UTF-8 name stored as raw bytes (Parquet text is UTF-8)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and any(_needs_escape(v) for v in out[c]):
            out[c] = _objects(v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in out[c])
    return out


def write_scores(df: pd.DataFrame, out: str | Path) -> Path:
    """Write the table atomically in the format given by `out`'s extension."""
    out = check_output_path(out)
    df = normalize(df)
    suffix = out.suffix.lower()
    with atomic_write(out, fsync=True) as tmp:
        if suffix == ".csv":
            csv_safe.write_csv(df, tmp)
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for line in _json_rows(df):
                    fh.write(line + "\n")
        else:
            parquet_safe(df).to_parquet(tmp, index=False)
    return out


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a score table written by `write_scores` (any of the three formats) in canonical types."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # keep_default_na=False: a prompt "NA" or "null" stays text; only empty cells are missing
        df = csv_safe.read_csv(path, keep_default_na=False, na_values={"score": [""]},
                               dtype={c: object for c in ("path", "scorer") + _TEXT})
    elif suffix == ".jsonl":
        rows = read_journal(path)
        df = rows_frame(rows) if rows else empty_table()
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: unsupported extension {suffix!r}; use one of {', '.join(FORMATS)}")
    return normalize(df)


def read_journal(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a malformed line (the last one, cut by a kill) is skipped."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "path" in row and "scorer" in row:
                rows.append(row)
    return rows


class Journal:
    """Append-only JSONL of finished rows; each `append` is flushed and fsynced before returning."""

    def __init__(self, path: str | Path, keep: Sequence[dict] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rewrite the surviving rows first so that a torn last line from a killed run cannot glue onto new rows.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in _json_rows(normalize(rows_frame(keep))) if keep else ():
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        self._fh.write("".join(line + "\n" for line in _json_rows(normalize(rows_frame(rows)))))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def row_key(row_abs_path, path) -> str:
    """The resume key's path part: the stored absolute path, or (older tables) the path made absolute."""
    return row_abs_path if row_abs_path else os.path.abspath(path)


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (absolute path, scorer): the last one wins (a later run supersedes an earlier one)."""
    if df.empty:
        return df
    abs_col = df["abs_path"] if "abs_path" in df.columns else [None] * len(df)
    keys = pd.Series([(row_key(a, p), s) for a, p, s in zip(abs_col, df["path"], df["scorer"])], dtype=object)
    return df.loc[~keys.duplicated(keep="last").to_numpy()].reset_index(drop=True)
