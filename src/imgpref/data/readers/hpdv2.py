"""HPD v2 (Human Preference Dataset v2) train/test JSON (data_cards/hpdv2.md).

SRC is the dataset folder holding train.json and/or test.json (or one of those files). Image paths in the JSON
are relative to that folder; when not found there, `<folder>/<split>/<path>` is tried (the release keeps images
in train/ and test/).

- train.json entries {prompt, file_path[], human_preference[]}: the image(s) marked 1 were chosen; each chosen
  image vs each other image of the entry gives one pair with a hard label.
- test.json entries {prompt, image_path[], rank[], raw_annotations[]}: rank 1 = best; every pair of images of
  the entry gives one row: the better rank wins 1/0/0, equal ranks are a tie 0/0/1.
Pairs are oriented by list order (image_0 = the earlier image), so the label is not tied to a position.
group = prompt, split = train/test from the file name.
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from imgpref.data.readers._common import ConvertReport, PairAggregator, resolve_image, split_from_name


def _json_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"HPDv2 source not found: {src}; pass the folder holding train.json / test.json")
    files = [src / n for n in ("train.json", "test.json") if (src / n).is_file()]
    if not files:
        files = sorted(src.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no train.json or test.json in {src} (see data_cards/hpdv2.md)")
    return files


def _load(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict):  # tolerate {"data": [...]} style wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return data


def read(src: str | Path, out: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows from HPD v2 JSON files and images under SRC."""
    src = Path(src)
    report = ConvertReport("hpdv2", str(src), str(out or ""))
    agg = PairAggregator()
    for path in _json_files(src):
        root = path.parent
        split = split_from_name(path.name)
        for entry in _load(path):
            report.records_read += 1
            if not isinstance(entry, dict):
                report.skipped["entry: not an object"] += 1
                continue
            prompt = str(entry.get("prompt") or "")
            if "human_preference" in entry:
                images, pairs, reason = _train_pairs(entry)
            elif "rank" in entry:
                images, pairs, reason = _rank_pairs(entry)
            else:
                images, pairs, reason = [], [], "entry: neither human_preference nor rank"
            if reason:
                report.skipped[reason] += 1
                continue
            resolved = [resolve_image(root, p, split or "", "images") for p in images]
            for i, j, votes in pairs:
                if resolved[i] is None or resolved[j] is None:
                    report.skipped["pair: missing image"] += 1
                    continue
                if resolved[i] == resolved[j]:
                    report.skipped["pair: same image on both sides"] += 1
                    continue
                agg.add(str(resolved[i]), str(resolved[j]), *votes, prompt=prompt, group=prompt, split=split)
    report.merged = agg.merged
    return agg.frame(), report


def _train_pairs(entry: dict[str, Any]) -> tuple[list[str], list[tuple[int, int, tuple]], str | None]:
    images = entry.get("file_path") or entry.get("image_path") or []
    prefs = entry.get("human_preference") or []
    if len(images) < 2:
        return [], [], "entry: fewer than 2 images"
    if len(images) != len(prefs):
        return [], [], "entry: file_path and human_preference lengths differ"
    try:
        chosen = [float(p) == 1 for p in prefs]
    except (TypeError, ValueError):
        return [], [], "entry: non-numeric human_preference"
    if not any(chosen):
        return [], [], "entry: no chosen image"
    if all(chosen):
        return [], [], "entry: every image chosen"
    pairs = []
    for i, j in combinations(range(len(images)), 2):
        if chosen[i] and not chosen[j]:
            pairs.append((i, j, (1, 0, 0)))
        elif chosen[j] and not chosen[i]:
            pairs.append((i, j, (0, 1, 0)))
    return [str(p) for p in images], pairs, None


def _rank_pairs(entry: dict[str, Any]) -> tuple[list[str], list[tuple[int, int, tuple]], str | None]:
    images = entry.get("image_path") or entry.get("file_path") or []
    ranks = entry.get("rank") or []
    if len(images) < 2:
        return [], [], "entry: fewer than 2 images"
    if len(images) != len(ranks):
        return [], [], "entry: image_path and rank lengths differ"
    try:
        ranks = [float(r) for r in ranks]
    except (TypeError, ValueError):
        return [], [], "entry: non-numeric rank"
    pairs = []
    for i, j in combinations(range(len(images)), 2):
        if ranks[i] < ranks[j]:
            pairs.append((i, j, (1, 0, 0)))
        elif ranks[i] > ranks[j]:
            pairs.append((i, j, (0, 1, 0)))
        else:
            pairs.append((i, j, (0, 0, 1)))
    return [str(p) for p in images], pairs, None
