"""Shared pieces of the format readers: the conversion report and vote aggregation per unordered pair."""
from __future__ import annotations

import re
from collections import Counter
from itertools import combinations
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from imgpref.data.manifest import COLUMNS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


@dataclass
class ConvertReport:
    """What a conversion did: rows written, and rows skipped counted by reason."""

    fmt: str
    src: str
    out: str
    rows_written: int = 0
    skipped: Counter = field(default_factory=Counter)
    records_read: int = 0
    images_written: int = 0
    merged: int = 0  # input records folded into an existing pair (same images, prompt and annotator)

    @property
    def rows_skipped(self) -> int:
        """Total number of skipped input records."""
        return int(sum(self.skipped.values()))

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form (for JSON / printing)."""
        return {
            "format": self.fmt, "src": self.src, "out": self.out, "records_read": self.records_read,
            "rows_written": self.rows_written, "rows_skipped": self.rows_skipped,
            "skipped": dict(self.skipped), "merged": self.merged, "images_written": self.images_written,
        }

    def __str__(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (f"{self.fmt}: {self.records_read} record(s) read, {self.rows_written} pair row(s) written to "
                f"{self.out}, {self.rows_skipped} skipped ({reasons}), {self.merged} merged into existing pairs")


class PairAggregator:
    """Sums votes per unordered (image pair, prompt, annotator); orientation is the first one seen."""

    def __init__(self) -> None:
        self._rows: dict[tuple, dict[str, Any]] = {}
        self.merged = 0

    def add(self, image_0: Any, image_1: Any, v0: int, v1: int, vt: int, *, prompt: str = "", group: str = "",
            annotator: str = "", split: str = "", key0: Any = None, key1: Any = None, **extra: Any) -> None:
        """Add votes for (image_0, image_1); key0/key1 identify the images when the values are unhashable."""
        k0 = image_0 if key0 is None else key0
        k1 = image_1 if key1 is None else key1
        key = (frozenset((k0, k1)), prompt, annotator)
        row = self._rows.get(key)
        if row is None:
            self._rows[key] = {"image_0": image_0, "image_1": image_1, "votes_0": v0, "votes_1": v1,
                               "votes_tie": vt, "prompt": prompt, "group": group, "annotator": annotator,
                               "split": split, "_k0": k0, **extra}
            return
        self.merged += 1
        if row["_k0"] == k0:
            row["votes_0"] += v0
            row["votes_1"] += v1
        else:
            row["votes_0"] += v1
            row["votes_1"] += v0
        row["votes_tie"] += vt

    def frame(self) -> pd.DataFrame:
        """The canonical rows (plus any extra columns given to add)."""
        records = [{k: v for k, v in r.items() if k != "_k0"} for r in self._rows.values()]
        if not records:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in COLUMNS})
        return pd.DataFrame.from_records(records)


def split_from_name(name: str) -> str:
    """train / val / test when the file name says so ('validation' and 'valid' -> 'val'), else ''."""
    stem = Path(name).name.lower()
    tokens = re.split(r"[^a-z]+", stem)
    for token in tokens:
        if token == "train":
            return "train"
        if token in ("val", "valid", "validation", "dev"):
            return "val"
        if token == "test":
            return "test"
    return ""


def resolve_image(root: Path, rel: str, *fallback_dirs: str) -> Path | None:
    """The image file `rel` under `root` (or under one of `fallback_dirs` of root), or None."""
    rel = str(rel).strip()
    if not rel:
        return None
    candidates = [Path(rel)] if Path(rel).is_absolute() else [root / rel] + [root / d / rel for d in fallback_dirs]
    for cand in candidates:
        if cand.is_file():
            return cand.resolve()
    return None


def rank_pairs(ranks: list[Any]) -> tuple[list[tuple[int, int, tuple[int, int, int]]], str | None]:
    """Every pair (i < j) of a ranking (lower rank = better): (i, j, votes), equal ranks a tie 0/0/1.

    Returns ([], reason) when a rank is not a number.
    """
    try:
        values = [float(r) for r in ranks]
    except (TypeError, ValueError):
        return [], "entry: non-numeric rank"
    pairs = []
    for i, j in combinations(range(len(values)), 2):
        if values[i] < values[j]:
            pairs.append((i, j, (1, 0, 0)))
        elif values[i] > values[j]:
            pairs.append((i, j, (0, 1, 0)))
        else:
            pairs.append((i, j, (0, 0, 1)))
    return pairs, None


def add_ranked_pairs(agg: PairAggregator, report: ConvertReport, resolved: list[Path | None],
                     pairs: list[tuple[int, int, tuple[int, int, int]]], **fields: Any) -> None:
    """Add the pairs (i, j, votes) of one ranking entry whose images were found; count the others as skipped."""
    for i, j, votes in pairs:
        reason = pair_skip_reason(resolved[i], resolved[j])
        if reason:
            report.skipped[reason] += 1
            continue
        agg.add(str(resolved[i]), str(resolved[j]), *votes, **fields)


def pair_skip_reason(image_0: Path | None, image_1: Path | None) -> str | None:
    """Why a pair of resolved images cannot be a row (missing image, the same image twice), or None."""
    if image_0 is None or image_1 is None:
        return "pair: missing image"
    if image_0 == image_1:
        return "pair: same image on both sides"
    return None


def find_by_stem(folder: Path, stem: str, cache: dict[Path, dict[str, Path]]) -> Path | None:
    """The image file named `stem` + any image suffix in `folder` (listed once per folder), or None.

    When several suffixes share a stem, the first in IMAGE_SUFFIXES wins, whatever order the folder lists them in.
    """
    if folder not in cache:
        listing: dict[str, Path] = {}
        if folder.is_dir():
            files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
            for f in sorted(files, key=lambda f: IMAGE_SUFFIXES.index(f.suffix.lower()), reverse=True):
                listing[f.stem] = f.resolve()
        cache[folder] = listing
    return cache[folder].get(stem)


def read_table(path: Path) -> pd.DataFrame:
    """A .csv / .tsv / .parquet / .jsonl table with every value as text ("" for missing)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json"):
        df = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    elif suffix in (".csv", ".tsv", ".txt"):
        df = pd.read_csv(path, sep=None if suffix == ".txt" else ("\t" if suffix == ".tsv" else ","),
                         dtype=str, keep_default_na=False, engine="python" if suffix == ".txt" else "c")
    else:
        raise ValueError(f"{path}: unsupported table type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    return df.astype(object).where(df.notna(), "").astype(str)
