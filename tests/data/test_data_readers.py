"""Each reader turns a tiny file in its published layout into the right canonical rows, votes and ties."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from imgpref.data.manifest import read_manifest, validate_manifest
from imgpref.data.readers import convert
from imgpref.data.readers._common import split_from_name


def _votes(df: pd.DataFrame) -> list[list[int]]:
    return df[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist()


def _names(df: pd.DataFrame, col: str) -> list[str]:
    return [Path(p).name if isinstance(p, str) else p for p in df[col]]


# ------------------------------------------------------------------------------------------------- DEAR


def _dear_images(root: Path, save) -> None:
    for s, scene in enumerate(("s1", "s2")):
        for r, name in enumerate(("original", "expertA", "expertB")):
            save(root / scene / f"{name}.jpg", 10 * s + r)


def test_dear_per_vote(tmp_path, save):
    src = tmp_path / "dear"
    _dear_images(src, save)
    pd.DataFrame([
        ("s1", "original", "expertA", "left"),
        ("s1", "expertA", "original", "left"),     # same unordered pair, other orientation -> votes_1
        ("s1", "original", "expertA", "equal"),
        ("s1", "original", "expertB", "right"),
        ("s1", "original", "expertB", "Right"),
        ("s2", "expertA", "expertB", "equal"),
        ("s2", "expertA", "expertB", "maybe"),     # unknown choice
        ("s2", "original", "expertC", "left"),     # missing image
        ("s2", "original", "original", "left"),    # same rendering
    ], columns=["scene", "left", "right", "choice"]).to_csv(src / "votes.csv", index=False)
    out = tmp_path / "out" / "m.csv"
    report = convert("dear", src, out)
    assert report.rows_written == 3 and report.records_read == 9
    assert dict(report.skipped) == {"unknown choice": 1, "missing image": 1, "same rendering on both sides": 1}
    df = read_manifest(out)
    assert _names(df, "image_0") == ["original.jpg", "original.jpg", "expertA.jpg"]
    assert _names(df, "image_1") == ["expertA.jpg", "expertB.jpg", "expertB.jpg"]
    assert _votes(df) == [[1, 1, 1], [0, 2, 0], [0, 0, 1]]
    assert df["group"].tolist() == ["s1", "s1", "s2"]
    assert df["prompt"].tolist() == ["", "", ""] and df["split"].tolist() == ["", "", ""]


def test_dear_aggregated_with_images_folder(tmp_path, save):
    src = tmp_path / "dear"
    _dear_images(src / "images", save)
    pd.DataFrame([
        ("s1", "original", "expertA", 10, 12, 3, "train"),
        ("s1", "expertA", "original", 1, 0, 0, "train"),   # merged into the first row, flipped
        ("s2", "expertB", "expertA", 0, 0, 25, "test"),
        ("s2", "original", "expertA", 0, 0, 0, "test"),     # zero votes
        ("s2", "original", "expertB", -1, 2, 0, "test"),    # invalid counts
    ], columns=["scene", "left", "right", "n_left", "n_right", "n_equal", "split"]).to_csv(
        src / "my_votes.csv", index=False)
    out = tmp_path / "m.jsonl"
    report = convert("dear", src, out)
    assert dict(report.skipped) == {"zero votes": 1, "invalid vote counts": 1} and report.merged == 1
    df = read_manifest(out)
    assert _votes(df) == [[10, 13, 3], [0, 0, 25]]
    assert _names(df, "image_0") == ["original.jpg", "expertB.jpg"]
    assert df["split"].tolist() == ["train", "test"] and df["group"].tolist() == ["s1", "s2"]


def test_dear_column_synonyms_and_per_annotator(tmp_path, save):
    # Crowdsourcing exports prefix columns (Toloka: INPUT:, OUTPUT:, ASSIGNMENT:; GOLDEN: holds control answers,
    # not votes) and word the answers; 3 accepted votes on one pair by 2 workers -> summed 1/1/1, or 2 rows per
    # annotator; the rejected assignment is no vote.
    src = tmp_path / "dear"
    _dear_images(src, save)
    pd.DataFrame([
        ("s1", "original", "expertA", "Left preferable", "", "w1", "APPROVED"),
        ("s1", "expertA", "original", "Both equal", "left", "w1", "APPROVED"),
        ("s1", "original", "expertA", "Right preferable", "", "w2", "SUBMITTED"),
        ("s1", "original", "expertA", "Left preferable", "", "w3", "REJECTED"),
    ], columns=["INPUT:scene", "INPUT:left", "INPUT:right", "OUTPUT:result", "GOLDEN:result",
                "ASSIGNMENT:worker_id", "ASSIGNMENT:status"]).to_csv(src / "markup.tsv", sep="\t", index=False)
    report = convert("dear", src / "markup.tsv", tmp_path / "sum.csv")
    assert dict(report.skipped) == {"rejected assignment": 1}
    assert _votes(read_manifest(tmp_path / "sum.csv")) == [[1, 1, 1]]
    convert("dear", src / "markup.tsv", tmp_path / "each.csv", per_annotator=True)
    df = read_manifest(tmp_path / "each.csv")
    assert _votes(df) == [[1, 0, 1], [0, 1, 0]] and df["annotator"].tolist() == ["w1", "w2"]
    assert df["group"].tolist() == ["s1", "s1"]
    pd.DataFrame([("s1", "original", "expertA", "left")], columns=["scene", "left", "right", "choice"]).to_csv(
        src / "votes.csv", index=False)
    with pytest.raises(ValueError, match="annotator column"):
        convert("dear", src, tmp_path / "m.csv", per_annotator=True)


def test_dear_bad_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="votes.csv"):
        convert("dear", tmp_path, tmp_path / "m.csv")
    (tmp_path / "votes.csv").write_text("scene,left\ns1,a\n")
    with pytest.raises(ValueError, match="missing column"):
        convert("dear", tmp_path, tmp_path / "m.csv")
    with pytest.raises(ValueError, match="unknown format"):
        convert("nope", tmp_path, tmp_path / "m.csv")


# ------------------------------------------------------------------------------------------------- Pick-a-Pic


def _pickapic_shard(path: Path, jpeg) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        # caption, img0, img1, label_0, label_1, has_label, are_different, user
        ("a cat", 1, 2, 1.0, 0.0, True, True, 7),
        ("a cat", 1, 3, 0.0, 1.0, True, True, 7),
        ("a dog", 4, 5, 0.5, 0.5, True, True, 8),
        ("a dog", 4, 6, None, None, False, True, 8),        # unlabelled (has_label false)
        ("a dog", 5, 6, float("nan"), float("nan"), True, True, 8),  # label missing
        ("a dog", 4, 4, 1.0, 0.0, True, False, 9),          # are_different false
        ("a cat", 2, 1, 1.0, 0.0, True, True, 7),           # same user, pair flipped, 2 wins -> merged
    ]
    table = pa.table({
        "caption": [r[0] for r in rows],
        "jpg_0": pa.array([jpeg(r[1]) for r in rows], type=pa.binary()),
        "jpg_1": pa.array([jpeg(r[2]) for r in rows], type=pa.binary()),
        "label_0": pa.array([r[3] for r in rows], type=pa.float64()),
        "label_1": pa.array([r[4] for r in rows], type=pa.float64()),
        "has_label": [r[5] for r in rows],
        "are_different": [r[6] for r in rows],
        "model_0": ["sdxl"] * len(rows),
        "model_1": ["sd15"] * len(rows),
        "user_id": pa.array([r[7] for r in rows], type=pa.int64()),
        "ranking_id": list(range(len(rows))),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_pickapic_to_csv_writes_images(tmp_path, jpeg):
    import hashlib

    src = tmp_path / "shards"
    _pickapic_shard(src / "validation-00000-of-00001.parquet", jpeg)
    out = tmp_path / "out" / "m.csv"
    report = convert("pickapic", src, out)
    assert report.records_read == 7 and report.rows_written == 3 and report.merged == 1
    assert dict(report.skipped) == {"unlabelled (has_label false)": 1, "unlabelled (label missing)": 1,
                                    "identical images (are_different false)": 1}
    assert report.images_written == 5  # seeds 1..5, each once (content-addressed)
    df = read_manifest(out)
    assert _votes(df) == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert _names(df, "image_0") == [hashlib.sha1(jpeg(s)).hexdigest() + ".jpg" for s in (1, 1, 4)]
    assert _names(df, "image_1") == [hashlib.sha1(jpeg(s)).hexdigest() + ".jpg" for s in (2, 3, 5)]
    assert df["prompt"].tolist() == ["a cat", "a cat", "a dog"] == df["group"].tolist()
    assert df["annotator"].tolist() == ["7", "7", "8"] and set(df["split"]) == {"val"}
    assert (tmp_path / "out" / "images").is_dir()
    raw = pd.read_csv(out)
    assert raw["image_0"].str.startswith("images/").all() and raw["model_0"].tolist() == ["sdxl"] * 3


def test_pickapic_to_parquet_keeps_bytes(tmp_path, jpeg):
    shard = tmp_path / "train-0.parquet"
    _pickapic_shard(shard, jpeg)
    out = tmp_path / "m.parquet"
    convert("pickapic", shard, out)
    assert not (tmp_path / "images").exists()
    df = read_manifest(out)
    assert df["image_0"].tolist() == [jpeg(1), jpeg(1), jpeg(4)] and set(df["split"]) == {"train"}
    assert validate_manifest(out) == []


def test_split_from_name():
    assert split_from_name("train-00001-of-00010.parquet") == "train"
    assert split_from_name("validation_unique.parquet") == "val"
    assert split_from_name("test.json") == "test"
    assert split_from_name("pairs.jsonl") == ""
    assert split_from_name("contest.json") == ""  # whole words only


# ------------------------------------------------------------------------------------------------- HPD v2


def test_hpdv2_train_and_test(tmp_path, save):
    src = tmp_path / "HPDv2"
    for i in range(4):
        save(src / "train" / f"t{i}.jpg", i)
    for i in range(3):
        save(src / "test" / f"e{i}.jpg", 10 + i)
    train = [
        {"prompt": "p1", "file_path": ["train/t0.jpg", "train/t1.jpg"], "human_preference": [0, 1]},
        {"prompt": "p2", "file_path": ["t1.jpg", "t2.jpg", "t3.jpg"], "human_preference": [1, 0, 0]},  # under train/
        {"prompt": "p3", "file_path": ["t0.jpg", "t2.jpg"], "human_preference": [0, 0]},  # no chosen image
        {"prompt": "p4", "file_path": ["t0.jpg", "gone.jpg"], "human_preference": [1, 0]},  # missing image
    ]
    test = [{"prompt": "q", "image_path": ["e0.jpg", "e1.jpg", "e2.jpg"], "rank": [2, 1, 2],
             "raw_annotations": [[2, 1, 3], [2, 1, 2]]}]
    (src / "train.json").write_text(json.dumps(train))
    (src / "test.json").write_text(json.dumps(test))
    out = tmp_path / "m.csv"
    report = convert("hpdv2", src, out)
    assert report.records_read == 5
    assert dict(report.skipped) == {"entry: no chosen image": 1, "pair: missing image": 1}
    df = read_manifest(out)
    assert list(zip(_names(df, "image_0"), _names(df, "image_1"))) == [
        ("t0.jpg", "t1.jpg"), ("t1.jpg", "t2.jpg"), ("t1.jpg", "t3.jpg"),
        ("e0.jpg", "e1.jpg"), ("e0.jpg", "e2.jpg"), ("e1.jpg", "e2.jpg")]
    assert _votes(df) == [[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    # group = the ranking entry (file stem : entry index); prompt keeps the text
    assert df["group"].tolist() == ["train:0", "train:1", "train:1", "test:0", "test:0", "test:0"]
    assert df["prompt"].tolist() == ["p1", "p2", "p2", "q", "q", "q"]
    assert df["split"].tolist() == ["train"] * 3 + ["test"] * 3


def test_hpdv2_repeated_prompt_makes_two_groups(tmp_path, save):
    # Two rankings of the same prompt over different images: 3 + 1 pairs, never a pair across the entries.
    # (Grouped by prompt text, the hpd protocol would rank all 5 images together: 10 pairs, 6 never compared.)
    src = tmp_path / "HPDv2"
    for i in range(5):
        save(src / "test" / f"e{i}.jpg", i)
    test = [{"prompt": "same", "image_path": ["e0.jpg", "e1.jpg", "e2.jpg"], "rank": [1, 2, 3]},
            {"prompt": "same", "image_path": ["e3.jpg", "e4.jpg"], "rank": [2, 1]}]
    (src / "test.json").write_text(json.dumps(test))
    convert("hpdv2", src, tmp_path / "m.csv")
    df = read_manifest(tmp_path / "m.csv")
    assert df["group"].tolist() == ["test:0", "test:0", "test:0", "test:1"]
    assert df["prompt"].tolist() == ["same"] * 4
    assert _votes(df) == [[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]]
    pairs = set(zip(_names(df, "image_0"), _names(df, "image_1")))
    assert pairs == {("e0.jpg", "e1.jpg"), ("e0.jpg", "e2.jpg"), ("e1.jpg", "e2.jpg"), ("e3.jpg", "e4.jpg")}


# ------------------------------------------------------------------------------------------------- HPD v3


def test_hpdv3_pairs(tmp_path, save):
    src = tmp_path / "hpdv3"
    for i in range(4):
        save(src / "images" / f"{i}.png", i)
    pairs = [
        {"prompt": "a", "path1": "images/0.png", "path2": "images/1.png", "choice_dist": None,
         "confidence": 0.9, "model1": "m1", "model2": "m2"},
        {"prompt": "a", "path1": "2.png", "path2": "3.png", "choice_dist": [3, 1], "confidence": 0.7,
         "model1": "m1", "model2": "m3"},                                            # counts (images/ fallback)
        {"prompt": "b", "path1": "images/1.png", "path2": "images/2.png", "choice_dist": [0.75, 0.25],
         "confidence": 0.5, "model1": "m2", "model2": "m3"},                         # probabilities
        {"prompt": "b", "path1": "images/0.png", "path2": "images/3.png", "choice_dist": [2, 1, 4]},  # with ties
        {"prompt": "b", "path1": "images/0.png", "path2": "images/9.png"},            # missing image
        {"prompt": "b", "path1": "images/0.png", "path2": "images/2.png", "choice_dist": "bad"},
    ]
    (src / "test.jsonl").write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
    out = tmp_path / "m.csv"
    report = convert("hpdv3", src / "test.jsonl", out)
    assert dict(report.skipped) == {"missing image": 1, "invalid choice_dist": 1}
    df = read_manifest(out)
    assert list(zip(_names(df, "image_0"), _names(df, "image_1"))) == [
        ("0.png", "1.png"), ("2.png", "3.png"), ("1.png", "2.png"), ("0.png", "3.png")]
    assert _votes(df) == [[1, 0, 0], [3, 1, 0], [1, 0, 0], [2, 1, 4]]
    assert df["split"].tolist() == ["test"] * 4 and df["group"].tolist() == ["a", "a", "b", "b"]
    raw = pd.read_csv(out, keep_default_na=False)
    assert raw["choice_p0"].tolist() == ["", "", "0.75", ""]
    assert raw["model_0"].tolist() == ["m1", "m1", "m2", ""]
    # the same pairs as a JSON list give the same rows
    (src / "pairs.json").write_text(json.dumps(pairs))
    convert("hpdv3", src / "pairs.json", tmp_path / "m2.csv")
    assert _votes(read_manifest(tmp_path / "m2.csv")) == _votes(df)
