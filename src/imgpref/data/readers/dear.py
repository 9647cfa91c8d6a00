"""DEAR / REPID rendering preferences: a folder of renderings per scene plus a votes CSV (data_cards/dear.md).

Accepted layout (SRC is the folder, or the votes CSV itself):

    SRC/votes.csv                       (or the only *.csv in SRC)
    SRC/<scene>/<rendering>.jpg         (or SRC/images/<scene>/<rendering>.<jpg|jpeg|png|tif|webp>)

votes CSV, one of two forms:
    per vote:    scene, left, right, choice            choice in left / right / equal (tie accepted too)
    aggregated:  scene, left, right, n_left, n_right, n_equal
Optional columns: split (train/val/test, per scene). Votes are summed per unordered pair of one scene;
image_0 is the `left` rendering of the first row that names the pair. group = scene.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from imgpref.data.readers._common import IMAGE_SUFFIXES, ConvertReport, PairAggregator

_CHOICES = {"left": (1, 0, 0), "right": (0, 1, 0), "equal": (0, 0, 1), "tie": (0, 0, 1)}
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": ""}


def _votes_file(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"DEAR source not found: {src}; pass the folder holding votes.csv and the images")
    if (src / "votes.csv").is_file():
        return src / "votes.csv"
    csvs = sorted(src.glob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    if not csvs:
        raise FileNotFoundError(f"no votes CSV in {src}; expected {src / 'votes.csv'} (see data_cards/dear.md)")
    raise ValueError(f"several CSV files in {src} ({', '.join(c.name for c in csvs)}); name the votes file votes.csv "
                     f"or pass it as SRC")


def _find_rendering(root: Path, scene: str, rendering: str, cache: dict) -> Path | None:
    key = (scene, rendering)
    if key not in cache:
        found = None
        for base in (root / scene, root / "images" / scene):
            if Path(rendering).suffix.lower() in IMAGE_SUFFIXES and (base / rendering).is_file():
                found = base / rendering
                break
            for suffix in IMAGE_SUFFIXES:
                cand = base / f"{rendering}{suffix}"
                if cand.is_file():
                    found = cand
                    break
            if found:
                break
        cache[key] = found.resolve() if found else None
    return cache[key]


def _count(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    if number < 0 or number != int(number):
        return None
    return int(number)


def read(src: str | Path, out: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows (absolute image paths) from a DEAR-layout folder, and the conversion report."""
    votes_path = _votes_file(Path(src))
    root = votes_path.parent
    table = pd.read_csv(votes_path, dtype=str, keep_default_na=False)
    table.columns = [c.strip().lower() for c in table.columns]
    aggregated = {"n_left", "n_right", "n_equal"} <= set(table.columns)
    needed = ["scene", "left", "right"] + ([] if aggregated else ["choice"])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"{votes_path}: missing column(s) {missing}; expected scene,left,right,choice (one row per vote) or "
            f"scene,left,right,n_left,n_right,n_equal (aggregated); see data_cards/dear.md")
    report = ConvertReport("dear", str(src), str(out or ""))
    report.records_read = len(table)
    skipped: Counter = report.skipped
    agg = PairAggregator()
    cache: dict = {}
    keys = ["scene", "left", "right"] + (["n_left", "n_right", "n_equal"] if aggregated else ["choice"])
    if "split" in table.columns:
        keys.append("split")
    for col in keys:
        table[col] = table[col].astype(str).str.strip()
    if not aggregated:
        table["choice"] = table["choice"].str.lower()
    # Identical rows (millions of single votes) are counted once per distinct row; sort=False keeps the order of
    # first appearance, so the orientation rule "image_0 = left as first seen" is unchanged.
    distinct = table.groupby(keys, sort=False).size().reset_index(name="_n")
    for record in distinct.to_dict("records"):
        n = int(record["_n"])
        scene, left, right = record["scene"], record["left"], record["right"]
        if not scene or not left or not right:
            skipped["empty scene or rendering name"] += n
            continue
        if left == right:
            skipped["same rendering on both sides"] += n
            continue
        if aggregated:
            counts = [_count(record[c]) for c in ("n_left", "n_right", "n_equal")]
            if any(c is None for c in counts):
                skipped["invalid vote counts"] += n
                continue
            if sum(counts) == 0:
                skipped["zero votes"] += n
                continue
            v0, v1, vt = (c * n for c in counts)
        else:
            if record["choice"] not in _CHOICES:
                skipped["unknown choice"] += n
                continue
            v0, v1, vt = (c * n for c in _CHOICES[record["choice"]])
        split = _SPLITS.get(record.get("split", "").lower())
        if split is None:
            skipped["unknown split"] += n
            continue
        img_l = _find_rendering(root, scene, left, cache)
        img_r = _find_rendering(root, scene, right, cache)
        if img_l is None or img_r is None:
            skipped["missing image"] += n
            continue
        agg.add(str(img_l), str(img_r), v0, v1, vt, group=scene, split=split)
    report.merged = agg.merged
    return agg.frame(), report
