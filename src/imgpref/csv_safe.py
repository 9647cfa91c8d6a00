"""CSV cells that a spreadsheet cannot run: every CSV the package writes goes through `write_csv`.

A text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by spreadsheet
programs (CSV/formula injection: a file named `=HYPERLINK(...).png` would become a live link). `write_csv`
prefixes such cells with an apostrophe, which spreadsheets show as plain text. To keep the escape lossless for
readers of our own files, a text cell that already starts with an apostrophe gets one more; `restore_cells`
undoes exactly that (`imgpref.scorers.output.read_scores` applies it). Numeric columns are never touched, so a
negative score stays a number.

Text that is not valid UTF-8 (a file name read from disk with Python's surrogate escapes) is written as its
original bytes (`errors="surrogateescape"`) and read back the same way, so nothing is lost.
"""
from __future__ import annotations

import os
from typing import Any

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def neutralize_cell(value: Any) -> Any:
    """`value` with a leading apostrophe when it is text that a spreadsheet would run (or starts with one)."""
    if isinstance(value, str) and value and (value[0] in FORMULA_START or value[0] == _QUOTE):
        return _QUOTE + value
    return value


def restore_cell(value: Any) -> Any:
    """Inverse of `neutralize_cell` for a cell read back from a file written by `write_csv`."""
    if isinstance(value, str) and value.startswith(_QUOTE):
        return value[1:]
    return value


def _text_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]


def neutralize_cells(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells are neutralised (numeric and boolean columns unchanged)."""
    out = df.copy()
    for c in _text_columns(out):
        out[c] = pd.Series([neutralize_cell(v) for v in out[c]], index=out.index, dtype=object)
    return out


def restore_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Undo `neutralize_cells` on a table read from a CSV written by `write_csv`."""
    out = df.copy()
    for c in _text_columns(out):
        out[c] = pd.Series([restore_cell(v) for v in out[c]], index=out.index, dtype=object)
    return out


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` as CSV (no index, UTF-8 with surrogate escapes kept as bytes) with neutralised text cells."""
    neutralize_cells(df).to_csv(path, index=False, encoding="utf-8", errors="surrogateescape")


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """Read a CSV written by `write_csv` (bytes that are not UTF-8 come back as surrogate escapes)."""
    return restore_cells(pd.read_csv(path, encoding="utf-8", encoding_errors="surrogateescape", **kwargs))
