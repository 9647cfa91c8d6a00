"""HPD v3 preference pairs (data_cards/hpdv3.md).

SRC is a .json (list of pairs) or .jsonl (one pair per line) file, or a folder of them. Each pair:
{prompt, path1 (the preferred image), path2, choice_dist, confidence, model1, model2}; image paths relative to
the file's folder (then `<folder>/images/` is tried).

Votes: image_0 = path1, image_1 = path2.
- choice_dist absent / null / "" / [] (empty list): a hard label 1/0/0 (path1 preferred), as HPSv3's own loader
  reads it (its pairwise dataset labels every pair "path1 preferred" and ignores the vote list).
- choice_dist of 2 (or 3, the third being ties) non-negative whole numbers: taken as vote counts
  (votes_0 = count for path1, votes_1 = count for path2, votes_tie = third or 0), taken literally even where
  they favour path2.
- choice_dist of fractions (probabilities): not counts, so the row keeps the hard label 1/0/0 and the
  fraction for path1 goes to the extra column `choice_p0` (empty otherwise).
Extra columns kept: confidence, model_0, model_1, choice_p0. group = prompt, split from the file name.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from imgpref.data.readers._common import ConvertReport, PairAggregator, resolve_image, split_from_name


def _files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"HPDv3 source not found: {src}; pass a .json / .jsonl file or a folder of them")
    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".json", ".jsonl"))
    if not files:
        raise FileNotFoundError(f"no .json or .jsonl files in {src} (see data_cards/hpdv3.md)")
    return files


def _records(path: Path, report: ConvertReport) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        return json.loads(text)
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            report.records_read += 1
            report.skipped["invalid JSON line"] += 1
    return records


def _votes(dist: Any) -> tuple[tuple[int, int, int] | None, str, str | None]:
    """(votes, choice_p0, skip reason) from a choice_dist value."""
    if dist is None or (isinstance(dist, float) and math.isnan(dist)):
        return (1, 0, 0), "", None
    if isinstance(dist, str) and not dist.strip():  # "" is null in the released long-format JSON
        return (1, 0, 0), "", None
    if isinstance(dist, str):
        try:
            dist = json.loads(dist)
        except json.JSONDecodeError:
            return None, "", "invalid choice_dist"
    if isinstance(dist, (list, tuple)) and len(dist) == 0:  # written by HPDv3-format exporters without votes
        return (1, 0, 0), "", None
    if not isinstance(dist, (list, tuple)) or len(dist) not in (2, 3):
        return None, "", "invalid choice_dist"
    try:
        values = [float(x) for x in dist]
    except (TypeError, ValueError):
        return None, "", "invalid choice_dist"
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        return None, "", "invalid choice_dist"
    if all(v == int(v) for v in values):
        counts = [int(v) for v in values] + [0] * (3 - len(values))
        return (counts[0], counts[1], counts[2]), "", None
    return (1, 0, 0), f"{values[0] / sum(values):.6g}", None


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == []:
        return ""
    return str(value)


def read(src: str | Path, out: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows from HPD v3 pair files."""
    src = Path(src)
    report = ConvertReport("hpdv3", str(src), str(out or ""))
    agg = PairAggregator()
    for path in _files(src):
        root = path.parent
        split = split_from_name(path.name)
        for rec in _records(path, report):
            report.records_read += 1
            if not isinstance(rec, dict) or "path1" not in rec or "path2" not in rec:
                report.skipped["missing path1/path2"] += 1
                continue
            votes, p0, reason = _votes(rec.get("choice_dist"))
            if reason:
                report.skipped[reason] += 1
                continue
            img0 = resolve_image(root, _text(rec["path1"]), "images")
            img1 = resolve_image(root, _text(rec["path2"]), "images")
            if img0 is None or img1 is None:
                report.skipped["missing image"] += 1
                continue
            if img0 == img1:
                report.skipped["same image on both sides"] += 1
                continue
            prompt = _text(rec.get("prompt"))
            agg.add(str(img0), str(img1), *votes, prompt=prompt, group=prompt, split=split,
                    confidence=_text(rec.get("confidence")), model_0=_text(rec.get("model1")),
                    model_1=_text(rec.get("model2")), choice_p0=p0)
    report.merged = agg.merged
    return agg.frame(), report
