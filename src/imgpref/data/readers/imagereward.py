"""ImageReward test rankings: THUDM/ImageReward `data/test.json` (data_cards/imagereward.md).

SRC is the JSON file (or the folder holding test.json). Each entry {id, prompt, generations[], ranking[]}:
`generations` are image paths three folders deep (`part-005658/images/0040/<uuid>.webp`), relative to the image
folder: tried under the JSON's folder, its `test_images/` and `images/` (THUDM's test script reads them from
`data/test_images`), then under the `images` folder given to `read`. `ranking` is 1 = best; equal numbers are a
human tie.

Every pair i < j of an entry gives one row, image_0 = the earlier generation: the lower ranking wins 1/0/0,
equal rankings are written as a tie 0/0/1 (the ImageReward protocol skips them; they stay in the manifest so
other protocols can count them). group = the ranking entry (`<file stem>:<entry index>`), never the prompt text;
the entry's id is kept as the extra column `entry_id`. split from the file name (test.json -> test).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from imgpref.data.readers._common import (ConvertReport, PairAggregator, add_ranked_pairs, rank_pairs, resolve_image,
                                           split_from_name)

IMAGE_DIRS = ("test_images", "images")


def _json_file(src: Path) -> Path:
    if src.is_file():
        return src
    if not src.is_dir():
        raise FileNotFoundError(f"ImageReward source not found: {src}; pass data/test.json of THUDM/ImageReward")
    for name in ("test.json", "validation.json", "val.json"):
        if (src / name).is_file():
            return src / name
    candidates = sorted(src.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(f"no test.json in {src}; pass the ImageReward JSON file itself "
                            f"(see data_cards/imagereward.md)")


def read(src: str | Path, out: str | Path | None = None, *,
         images: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows (absolute image paths) from an ImageReward ranking file, and the conversion report."""
    path = _json_file(Path(src))
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images}: not a folder; pass the folder the generations are under")
    with open(path, encoding="utf-8") as fh:
        entries = json.load(fh)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of rankings {{id, prompt, generations, ranking}}")
    root = path.parent
    split = split_from_name(path.name)
    report = ConvertReport("imagereward", str(src), str(out or ""))
    agg = PairAggregator()
    for index, entry in enumerate(entries):
        report.records_read += 1
        if not isinstance(entry, dict) or "generations" not in entry or "ranking" not in entry:
            report.skipped["entry: no generations / ranking"] += 1
            continue
        gens, ranking = list(entry["generations"] or []), list(entry["ranking"] or [])
        if len(gens) < 2:
            report.skipped["entry: fewer than 2 images"] += 1
            continue
        if len(gens) != len(ranking):
            report.skipped["entry: generations and ranking lengths differ"] += 1
            continue
        pairs, reason = rank_pairs(ranking)
        if reason:
            report.skipped[reason] += 1
            continue
        resolved = [_resolve(root, str(g), images) for g in gens]
        prompt = str(entry.get("prompt") or "")
        add_ranked_pairs(agg, report, resolved, pairs, prompt=prompt, group=f"{path.stem}:{index}", split=split,
                         entry_id=str(entry.get("id", "")))
    report.merged = agg.merged
    return agg.frame(), report


def _resolve(root: Path, rel: str, images: str | Path | None) -> Path | None:
    found = resolve_image(root, rel, *IMAGE_DIRS)
    if found is None and images is not None:
        found = resolve_image(Path(images), rel)
    return found
