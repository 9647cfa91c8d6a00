"""Shared pieces of the format readers: the conversion report and vote aggregation per unordered pair."""
from __future__ import annotations

import re
from collections import Counter
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
