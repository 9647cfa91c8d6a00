"""Pick-a-Pic v1/v2 Parquet shards (data_cards/pickapic.md).

Columns read: caption, jpg_0, jpg_1 (image bytes), label_0, label_1 (1/0, 0/1 or 0.5/0.5 = tie), has_label,
are_different, model_0, model_1, user_id (ranking_id optional). SRC is one .parquet file or a folder searched
recursively for *.parquet. Images are written to `<manifest folder>/images/<sha1 of bytes>.<ext>` unless the
output manifest is .parquet (then the bytes stay in image_0 / image_1).

The `pickapic_v*_no_images` layout (image_0_uid, image_0_url, image_1_uid, image_1_url instead of jpg_0 / jpg_1)
is read as a manifest of images the user has downloaded: `images` names the folder holding `<uid>.<ext>`
(any image suffix; the file name of the URL is tried next). Pairs whose image is not there are skipped and
counted. The labels and every other column are read exactly as in the layout with bytes.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pandas as pd

from imgpref.data.readers._common import ConvertReport, PairAggregator, find_by_stem, split_from_name

LABELS = ("caption", "label_0", "label_1")
BYTES = ("jpg_0", "jpg_1")
UIDS = ("image_0_uid", "image_1_uid")
REQUIRED = LABELS[:1] + BYTES + LABELS[1:]  # the layout with image bytes
OPTIONAL = ("has_label", "are_different", "model_0", "model_1", "user_id", "ranking_id", "image_0_url",
            "image_1_url")


def _shards(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    if src.is_dir():
        shards = sorted(src.rglob("*.parquet"))
        if shards:
            return shards
        raise FileNotFoundError(f"no *.parquet shards under {src}")
    raise FileNotFoundError(f"Pick-a-Pic source not found: {src}; pass a .parquet shard or a folder of shards")


def _extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return ".img"  # unknown container: kept as is; the image loader reports it if it cannot decode it


def _label(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _flag(value: Any, default: bool = True) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "t")
    return bool(value)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def read(src: str | Path, out: str | Path | None = None, *,
         images: str | Path | None = None) -> tuple[pd.DataFrame, ConvertReport]:
    """Canonical rows from Pick-a-Pic shards; image files written next to `out` unless it is .parquet or None.

    Shards without image bytes (the no_images layout) need `images`: the folder of downloaded `<uid>.<ext>` files.
    """
    import pyarrow.parquet as pq

    src = Path(src)
    keep_bytes = out is None or Path(out).suffix.lower() == ".parquet"
    image_dir = None if keep_bytes else Path(out).parent / "images"
    if images is not None and not Path(images).is_dir():
        raise FileNotFoundError(f"--images {images}: not a folder; pass the folder of downloaded <uid>.<ext> files")
    report = ConvertReport("pickapic", str(src), str(out or ""))
    agg = PairAggregator()
    written: dict[str, str] = {}
    listing: dict[Path, dict[str, Path]] = {}
    for shard in _shards(src):
        schema = pq.read_schema(shard)
        by_uid = not set(BYTES) <= set(schema.names) and set(UIDS) <= set(schema.names)
        needed = LABELS + (UIDS if by_uid else BYTES)
        missing = [c for c in needed if c not in schema.names]
        if missing:
            raise ValueError(f"{shard}: missing Pick-a-Pic column(s) {missing}; found {schema.names}")
        if by_uid and images is None:
            raise ValueError(f"{shard}: no image bytes (the pickapic_v2_no_images layout: image_0_uid / image_0_url);"
                             f" download the images and pass --images DIR (files named <uid>.<ext>)")
        columns = list(needed) + [c for c in OPTIONAL if c in schema.names and c not in needed]
        split = split_from_name(shard.name) or split_from_name(shard.parent.name)
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=512, columns=columns):
            for record in batch.to_pylist():
                report.records_read += 1
                reason = _skip_reason(record, by_uid)
                if reason:
                    report.skipped[reason] += 1
                    continue
                l0, l1 = _label(record["label_0"]), _label(record["label_1"])
                if (l0, l1) == (1.0, 0.0):
                    votes = (1, 0, 0)
                elif (l0, l1) == (0.0, 1.0):
                    votes = (0, 1, 0)
                else:
                    votes = (0, 0, 1)
                if by_uid:
                    h0, h1 = str(record["image_0_uid"]), str(record["image_1_uid"])
                    f0 = _downloaded(Path(images), h0, record.get("image_0_url"), listing)
                    f1 = _downloaded(Path(images), h1, record.get("image_1_url"), listing)
                    if f0 is None or f1 is None:
                        report.skipped["missing image (uid not in --images)"] += 1
                        continue
                    img0, img1 = str(f0), str(f1)
                else:
                    b0, b1 = bytes(record["jpg_0"]), bytes(record["jpg_1"])
                    h0, h1 = hashlib.sha1(b0).hexdigest(), hashlib.sha1(b1).hexdigest()
                    if keep_bytes:
                        img0, img1 = b0, b1
                    else:
                        img0 = _write_image(image_dir, h0, b0, written, report)
                        img1 = _write_image(image_dir, h1, b1, written, report)
                caption = _text(record["caption"])
                agg.add(img0, img1, *votes, prompt=caption, group=caption, annotator=_text(record.get("user_id")),
                        split=split, key0=h0, key1=h1,
                        model_0=_text(record.get("model_0")), model_1=_text(record.get("model_1")))
    report.merged = agg.merged
    return agg.frame(), report


def _downloaded(folder: Path, uid: str, url: Any, listing: dict[Path, dict[str, Path]]) -> Path | None:
    found = find_by_stem(folder, uid, listing)
    if found is None and url:
        found = find_by_stem(folder, Path(str(url).split("?")[0]).stem, listing)
    return found


def _skip_reason(record: dict[str, Any], by_uid: bool = False) -> str | None:
    if not _flag(record.get("has_label"), default=True):
        return "unlabelled (has_label false)"
    l0, l1 = _label(record["label_0"]), _label(record["label_1"])
    if l0 is None or l1 is None:
        return "unlabelled (label missing)"
    if (l0, l1) not in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        return "invalid label (expected 1/0, 0/1 or 0.5/0.5)"
    if not _flag(record.get("are_different"), default=True):
        return "identical images (are_different false)"
    if by_uid:
        if not record["image_0_uid"] or not record["image_1_uid"]:
            return "missing image uid"
        if record["image_0_uid"] == record["image_1_uid"]:
            return "same image on both sides"
        return None
    if not record["jpg_0"] or not record["jpg_1"]:
        return "missing image bytes"
    if bytes(record["jpg_0"]) == bytes(record["jpg_1"]):
        return "same image on both sides"
    return None


def _write_image(image_dir: Path, digest: str, data: bytes, written: dict[str, str], report: ConvertReport) -> str:
    if digest not in written:
        image_dir.mkdir(parents=True, exist_ok=True)
        path = image_dir / f"{digest}{_extension(data)}"
        if not path.exists():  # content-addressed: an existing file already holds these bytes
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            report.images_written += 1
        written[digest] = str(path.resolve())
    return written[digest]
