"""Pick-a-Pic v2 with the only published row values found (issue 12; fixtures/README.md says where from).

No row of `pickapic_v2` / `pickapic_v2_no_images` with its uids could be found (the hub's viewer did not answer);
a public WebDataset copy of pickapic_v2 train shows, for its first two rows, the caption and both labels.
Those values go into a shard with the pickapic_v2 card's columns and dtypes; the images are tiny stand-ins and
the other columns (uids, user ids, ...) are placeholders, so only caption and label handling meet real values.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from imgpref.data.manifest import read_manifest
from imgpref.data.readers import convert

ROWS = Path(__file__).parent / "fixtures" / "pickapic" / "v2_webdataset_mirror_rows.json"


def _shard(path: Path, jpeg) -> list[dict]:
    rows = json.loads(ROWS.read_text())["rows"]
    n = len(rows)
    table = pa.table({
        "are_different": pa.array([True] * n), "best_image_uid": pa.array([f"a{k}" for k in range(n)]),
        "caption": pa.array([r["original_prompt.txt"] for r in rows]),
        "created_at": pa.array([0] * n, type=pa.timestamp("ns")), "has_label": pa.array([True] * n),
        "image_0_uid": pa.array([f"a{k}" for k in range(n)]), "image_0_url": pa.array([""] * n),
        "image_1_uid": pa.array([f"b{k}" for k in range(n)]), "image_1_url": pa.array([""] * n),
        "jpg_0": pa.array([jpeg(2 * k) for k in range(n)], type=pa.binary()),
        "jpg_1": pa.array([jpeg(2 * k + 1) for k in range(n)], type=pa.binary()),
        # the copy stores the labels as text ("1.0"); the original shards hold float64
        "label_0": pa.array([float(r["label_0.txt"]) for r in rows], type=pa.float64()),
        "label_1": pa.array([float(r["label_1.txt"]) for r in rows], type=pa.float64()),
        "model_0": pa.array(["m"] * n), "model_1": pa.array(["m"] * n),
        "ranking_id": pa.array(range(n), type=pa.int64()), "user_id": pa.array([7] * n, type=pa.int64()),
        "num_example_per_prompt": pa.array([1] * n, type=pa.int64()),
        "__index_level_0__": pa.array(range(n), type=pa.int64()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return rows


def test_pickapic_v2_published_captions_and_labels(tmp_path, jpeg):
    # Hand count: both rows have label_0 = 1.0, label_1 = 0.0 -> image 0 preferred: 2 rows of 1/0/0, one group per
    # caption, the caption kept verbatim as prompt (commas and capitals included).
    rows = _shard(tmp_path / "pickapic_v2" / "data" / "train-00000-of-00645.parquet", jpeg)
    report = convert("pickapic", tmp_path / "pickapic_v2", tmp_path / "out" / "m.csv")
    assert report.records_read == 2 and report.rows_written == 2 and report.rows_skipped == 0
    df = read_manifest(tmp_path / "out" / "m.csv")
    assert df[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist() == [[1, 0, 0], [1, 0, 0]]
    assert df["prompt"].tolist() == df["group"].tolist() == [
        "stunningly beautiful space zombie, insanely detailed, photorealistic, 8k, created with midjourney",
        "Female athletic belts holster short black hair Natalie portman spy in a black pvc flightsuit"]
    assert df["prompt"].tolist() == [r["original_prompt.txt"] for r in rows]
    assert set(df["split"]) == {"train"} and set(df["annotator"]) == {"7"}
    assert all(Path(p).is_file() and Path(p).parent.name == "images" for p in df["image_0"].tolist()
               + df["image_1"].tolist())
