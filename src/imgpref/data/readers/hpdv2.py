"""HPD v2 (Human Preference Dataset v2): train/test JSON and the per-annotator test table (data_cards/hpdv2.md).

SRC is the dataset folder holding train.json and/or test.json (or one of those files). Image paths in the JSON
are relative to that folder; when not found there, `<folder>/<split>/<path>` is tried (the release keeps images
in train/ and test/), then `<folder>/images/<path>`, then the `images` folder given to `read`.

- train.json entries {prompt, file_path[], human_preference[]}: the image(s) marked 1 were chosen; each chosen
  image vs each other image of the entry gives one pair with a hard label.
- test.json entries {prompt, image_path[], rank[], raw_annotations[]}: rank 1 = best; every pair of images of
  the entry gives one row: the better rank wins 1/0/0, equal ranks are a tie 0/0/1.
Pairs are oriented by list order (image_0 = the earlier image), so the label is not tied to a position.
group = the ranking entry (`<file stem>:<entry index>`), never the prompt text: two entries with the same
prompt are two rankings, and pairing images across them would invent comparisons nobody made.

Per-annotator test table (a .parquet / .csv / .jsonl file, or a folder of them, with columns user_id, prompt,
image_left_id, image_right_id, pref, ranking_id; pref 1 = left preferred, -1 = right): one row per annotator
judgement, annotator = user_id, image_0 = left, group = `<user_id>|<prompt>` (that annotator's ranking of that
prompt; the published ranking_id is unique per row, so it is kept as the extra column `ranking_id`).
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from imgpref.data.readers._common import (ConvertReport, PairAggregator, add_ranked_pairs, pair_skip_reason,
                                           rank_pairs, read_table, resolve_image, split_from_name)

ANNOTATOR_COLUMNS = ("user_id", "prompt", "image_left_id", "image_right_id", "pref")
TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl")


def _json_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"HPDv2 source not found: {src}; pass the folder holding train.json / test.json")
    files = [src / n for n in ("train.json", "test.json") if (src / n).is_file()]
    if not files:
        files = sorted(src.glob("*.json"))
    if not files:
        files = sorted(p for p in src.rglob("*") if p.suffix.lower() in TABLE_SUFFIXES and _is_annotator_table(p))
    if not files:
        raise FileNotFoundError(f"no train.json or test.json (or per-annotator .parquet / .csv table) in {src} "
                                f"(see data_cards/hpdv2.md)")
    return files


def _is_annotator_table(path: Path) -> bool:
    """Whether a table's header has the per-annotator columns (so a manifest written next to it is not read)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
    else:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
        names = set(json.loads(first)) if path.suffix.lower() == ".jsonl" and first.strip() else \
            {c.strip().strip('"') for c in first.split(",")}
    return set(ANNOTATOR_COLUMNS) <= names


def _load(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, dict):  # tolerate {"data": [...]} style wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    return data


def read(src: str | Path, out: str | Path | None = None, *,
         images: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows from HPD v2 JSON files (or the per-annotator table) and images under SRC (or `images`)."""
    src = Path(src)
    extra_dirs = _image_dirs(images)
    report = ConvertReport("hpdv2", str(src), str(out or ""))
    agg = PairAggregator()
    for path in _json_files(src):
        root = path.parent
        split = split_from_name(path.name)
        if path.suffix.lower() in TABLE_SUFFIXES:
            _read_annotator_table(path, extra_dirs, agg, report)
            continue
        for index, entry in enumerate(_load(path)):
            report.records_read += 1
            if not isinstance(entry, dict):
                report.skipped["entry: not an object"] += 1
                continue
            prompt = str(entry.get("prompt") or "")
            if "human_preference" in entry:
                paths, pairs, reason = _train_pairs(entry)
            elif "rank" in entry:
                paths, pairs, reason = _rank_pairs(entry)
            else:
                paths, pairs, reason = [], [], "entry: neither human_preference nor rank"
            if reason:
                report.skipped[reason] += 1
                continue
            resolved = [_resolve(root, p, split, extra_dirs) for p in paths]
            add_ranked_pairs(agg, report, resolved, pairs, prompt=prompt, group=f"{path.stem}:{index}", split=split)
    report.merged = agg.merged
    return agg.frame(), report


def _image_dirs(images: str | Path | None) -> list[Path]:
    if images is None:
        return []
    folder = Path(images)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: not a folder; pass the folder holding the HPD v2 images")
    return [folder]


def _resolve(root: Path, rel: str, split: str, extra_dirs: list[Path]) -> Path | None:
    found = resolve_image(root, rel, *(d for d in (split, "test", "images") if d))
    for folder in extra_dirs:
        if found is None:
            found = resolve_image(folder, rel, *(d for d in (split, "test") if d))
    return found


def _read_annotator_table(path: Path, extra_dirs: list[Path], agg: PairAggregator, report: ConvertReport) -> None:
    """Rows of the per-annotator HPD v2 test table: one judgement (user_id, left, right, pref) each."""
    table = read_table(path)
    missing = [c for c in ANNOTATOR_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} of the per-annotator HPD v2 table "
                         f"(user_id, prompt, image_left_id, image_right_id, pref, ranking_id); "
                         f"see data_cards/hpdv2.md")
    split = "test"  # built from HPD v2's test split (its hub copy names the shard "train")
    root = path.parent
    found: dict[str, Path | None] = {}  # 153,000 rows over a few thousand image ids: look each up once

    def resolve(image_id: str) -> Path | None:
        if image_id not in found:
            found[image_id] = _resolve(root, image_id, split, extra_dirs)
        return found[image_id]
    for record in table.to_dict("records"):
        report.records_read += 1
        pref = record["pref"].strip()
        votes = {"1": (1, 0, 0), "-1": (0, 1, 0), "1.0": (1, 0, 0), "-1.0": (0, 1, 0)}.get(pref)
        if votes is None:
            report.skipped["pref not 1 (left) or -1 (right)"] += 1
            continue
        left, right = resolve(record["image_left_id"].strip()), resolve(record["image_right_id"].strip())
        reason = pair_skip_reason(left, right)
        if reason:
            report.skipped[reason] += 1
            continue
        user, prompt = record["user_id"].strip(), record["prompt"]
        agg.add(str(left), str(right), *votes, prompt=prompt, group=f"{user}|{prompt}", annotator=user,
                split=split, ranking_id=record.get("ranking_id", ""))


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
    pairs, reason = rank_pairs(ranks)
    return [str(p) for p in images], pairs, reason
