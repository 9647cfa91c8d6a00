"""Score tables on disk: atomic writers and readers for .csv / .jsonl / .parquet, and the resume journal.

A score table has one row per (image, scorer): `path, scorer, score, prompt, error`. `score` is NaN and
`error` holds the reason when the image could not be scored; `prompt` and `error` are missing (None/NaN) when
absent. Final files are written to a temporary name in the same folder and renamed into place, so a reader
(or a killed run) never sees a half-written file.

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
from imgpref.atomic import atomic_write

COLUMNS = ("path", "scorer", "score", "prompt", "error")
FORMATS = (".csv", ".jsonl", ".parquet")
KEY = ("path", "scorer", "prompt")


def check_output_path(out: str | Path) -> Path:
    """Validate the output extension; returns the Path."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: unsupported extension {out.suffix!r}; use one of {', '.join(FORMATS)}")
    return out


def journal_path(out: str | Path) -> Path:
    """`<out>.partial.jsonl`, the per-batch journal of a run writing `out`."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="float64" if c == "score" else "object") for c in COLUMNS})


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in canonical order and types: strings for path/scorer, float score, None for missing text."""
    if df.empty:
        return empty_table()
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; expected {list(COLUMNS)}")
    out = pd.DataFrame(index=range(len(df)))
    out["path"] = [str(v) for v in df["path"]]
    out["scorer"] = [str(v) for v in df["scorer"]]
    out["score"] = pd.to_numeric(df["score"], errors="coerce").astype("float64").to_numpy()

    def text(v):  # missing and empty are the same thing in every format (CSV cannot tell them apart)
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v == "":
            return None
        return str(v)

    out["prompt"] = pd.Series([text(v) for v in df["prompt"]], dtype="object")
    out["error"] = pd.Series([text(v) for v in df["error"]], dtype="object")
    return out


def _json_rows(df: pd.DataFrame) -> Iterable[str]:
    for path, scorer, score, prompt, error in df[list(COLUMNS)].itertuples(index=False, name=None):
        s = None if score is None or (isinstance(score, float) and math.isnan(score)) else float(score)
        yield json.dumps({"path": path, "scorer": scorer, "score": s, "prompt": prompt, "error": error},
                         ensure_ascii=False)


def write_scores(df: pd.DataFrame, out: str | Path) -> Path:
    """Write the table atomically in the format given by `out`'s extension."""
    out = check_output_path(out)
    df = normalize(df)
    suffix = out.suffix.lower()
    with atomic_write(out, fsync=True) as tmp:
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for line in _json_rows(df):
                    fh.write(line + "\n")
        else:
            df.to_parquet(tmp, index=False)
    return out


def read_scores(path: str | Path) -> pd.DataFrame:
    """Read a score table written by `write_scores` (any of the three formats) in canonical types."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        # keep_default_na=False: a prompt "NA" or "null" stays text; only empty cells are missing
        df = pd.read_csv(path, keep_default_na=False, na_values={"score": [""]}, dtype={"path": str, "scorer": str,
                                                                                         "prompt": str, "error": str})
        for c in ("prompt", "error"):
            df[c] = [None if v == "" else v for v in df[c]]
    elif suffix == ".jsonl":
        rows = read_journal(path)
        df = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else empty_table()
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
            for line in _json_rows(normalize(pd.DataFrame(list(keep), columns=list(COLUMNS)))) if keep else ():
                fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        df = pd.DataFrame(list(rows), columns=list(COLUMNS))
        self._fh.write("".join(line + "\n" for line in _json_rows(normalize(df))))
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


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (path, scorer, prompt): the last one wins (a later run supersedes an earlier one)."""
    if df.empty:
        return df
    key = df[list(KEY)].astype(object).where(df[list(KEY)].notna(), "\x00none")
    return df.loc[~key.duplicated(keep="last")].reset_index(drop=True)
