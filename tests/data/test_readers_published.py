"""Readers against excerpts of the files their owners publish (tests/data/fixtures/README.md says which).

Every expected count below is counted by hand from the excerpt (worked out in the comments).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from imgpref.data.manifest import read_manifest, validate_manifest
from imgpref.data.readers import convert

FIXTURES = Path(__file__).parent / "fixtures"


def _votes(df: pd.DataFrame) -> list[list[int]]:
    return df[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist()


def _name(path) -> str:
    return Path(path).name


# ------------------------------------------------------------------------------------------ ImageReward


def imagereward_release(tmp_path: Path, save) -> Path:
    """THUDM's layout: data/test.json and the generations under data/test_images/ (their test.py default)."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FIXTURES / "imagereward" / "test.json", data / "test.json")
    entries = json.loads((data / "test.json").read_text())
    for k, gen in enumerate(g for e in entries for g in e["generations"]):
        save(data / "test_images" / gen, k)
    return data / "test.json"


def test_imagereward_excerpt_pairs_ties_groups(tmp_path, save):
    # Hand count over the 6 rankings (lower = better; i < j, image_0 = generation i):
    #   [1,2,5,3]      5 x image_0 wins, 1 x image_1 wins ((5,3))
    #   [1,2,3,4] x 2  6 + 6 x image_0
    #   [1,3,5,4]      5 x image_0, 1 x image_1 ((5,4))
    #   [1,2,1,4,3,4]  15 pairs: 11 x image_0, 2 x image_1 ((2,1), (4,3)), 2 ties ((1,1), (4,4))
    #   [2,4,1,3]      3 x image_0, 3 x image_1
    # total 45 pairs = 36 image_0 + 7 image_1 + 2 ties; 6 groups (one per ranking entry)
    src = imagereward_release(tmp_path, save)
    out = tmp_path / "m.csv"
    report = convert("imagereward", src, out)
    assert report.records_read == 6 and report.rows_written == 45 and report.rows_skipped == 0
    df = read_manifest(out)
    votes = _votes(df)
    assert votes.count([1, 0, 0]) == 36 and votes.count([0, 1, 0]) == 7 and votes.count([0, 0, 1]) == 2
    assert df["group"].value_counts().to_dict() == {
        "test:0": 6, "test:1": 6, "test:2": 6, "test:3": 6, "test:4": 15, "test:5": 6}
    assert set(df["split"]) == {"test"} and set(df["annotator"]) == {""}
    first = df[df["group"] == "test:0"]
    assert [(_name(a)[:8], _name(b)[:8]) for a, b in zip(first["image_0"], first["image_1"])] == [
        ("45b0de4d", "7d4cc31d"), ("45b0de4d", "f24a2c01"), ("45b0de4d", "e77d096b"),
        ("7d4cc31d", "f24a2c01"), ("7d4cc31d", "e77d096b"), ("f24a2c01", "e77d096b")]
    assert _votes(first) == [[1, 0, 0]] * 5 + [[0, 1, 0]]  # rank 5 (f24a2c01) loses to rank 3 (e77d096b)
    ties = df[df["votes_tie"] == 1]
    assert [(_name(a)[:8], _name(b)[:8]) for a, b in zip(ties["image_0"], ties["image_1"])] == [
        ("a22b9093", "a134055b"), ("31884b8e", "0779edc6")]
    raw = pd.read_csv(out, keep_default_na=False)
    assert raw.loc[raw["group"] == "test:4", "entry_id"].unique().tolist() == ["005695-0057"]
    assert df.loc[df["group"] == "test:1", "prompt"].unique().tolist() == ["cola made from cockroaches"]


def test_imagereward_images_option_and_missing(tmp_path, save):
    # Generations kept in a separate folder: --images finds them; one removed -> its pairs are skipped.
    src = imagereward_release(tmp_path, save)
    moved = tmp_path / "elsewhere"
    shutil.move(str(src.parent / "test_images"), moved)
    with pytest.raises(ValueError, match="no valid pairs"):
        convert("imagereward", src, tmp_path / "none.csv")
    gone = moved / json.loads(src.read_text())[1]["generations"][0]
    gone.unlink()
    report = convert("imagereward", src, tmp_path / "m.csv", images=moved)
    assert report.rows_written == 42 and dict(report.skipped) == {"pair: missing image": 3}  # 3 pairs of it
    with pytest.raises(FileNotFoundError, match="--images"):
        convert("imagereward", src, tmp_path / "m.csv", images=tmp_path / "nope")


# ------------------------------------------------------------------------------------------ HPD v2 per annotator


def hpdv2_annotator_release(tmp_path: Path, save, as_parquet: bool = False) -> Path:
    table = pd.read_csv(FIXTURES / "hpdv2_annotators" / "test_excerpt.csv", dtype={"ranking_id": str})
    root = tmp_path / "hpdv2"
    for k, name in enumerate(sorted(set(table["image_left_id"]) | set(table["image_right_id"]))):
        save(root / "test" / name, k)
    if as_parquet:
        path = root / "data" / "train-00000-of-00001.parquet"
        path.parent.mkdir(parents=True)
        table.to_parquet(path)
        return path
    shutil.copy(FIXTURES / "hpdv2_annotators" / "test_excerpt.csv", root / "test_excerpt.csv")
    return root / "test_excerpt.csv"


@pytest.mark.parametrize("as_parquet", [False, True])
def test_hpdv2_annotator_table(tmp_path, save, as_parquet):
    # 30 judgements by 3 annotators (9 + 9 + 12), no ties; pref 1 (left wins) on 5 + 6 + 5 = 16 rows,
    # -1 on 4 + 3 + 7 = 14. The pair (03680, 03687) is judged by two annotators, opposite ways: two rows.
    src = hpdv2_annotator_release(tmp_path, save, as_parquet)
    (src.parent / "old_manifest.csv").write_text("image_0,image_1,votes_0,votes_1,votes_tie\n")  # not a table
    out = tmp_path / "m.csv"
    report = convert("hpdv2", src if as_parquet else src.parent, out, images=tmp_path / "hpdv2")
    assert report.records_read == 30 and report.rows_written == 30 and report.merged == 0
    df = read_manifest(out)
    votes = _votes(df)
    assert votes.count([1, 0, 0]) == 16 and votes.count([0, 1, 0]) == 14 and votes.count([0, 0, 1]) == 0
    assert df["annotator"].value_counts().to_dict() == {
        "7894559197870586000": 12, "7682360478763886000": 9, "2097195476097621200": 9}
    assert df["group"].nunique() == 3 and set(df["split"]) == {"test"}
    assert df["group"].iloc[0] == ("7682360478763886000|a cellphone standing on a counter next to a small "
                                   "statue of buddy christ")
    # image_0 = left: row 152201 is 03686 (left) vs 03680 (right) with pref -1 -> the right image wins
    assert (_name(df["image_0"].iloc[0]), _name(df["image_1"].iloc[0])) == ("03686.jpg", "03680.jpg")
    assert votes[0] == [0, 1, 0] and votes[1] == [1, 0, 0]
    both = df[[{_name(a), _name(b)} == {"03680.jpg", "03687.jpg"} for a, b in zip(df["image_0"], df["image_1"])]]
    assert _votes(both) == [[1, 0, 0], [0, 1, 0]] and both["annotator"].nunique() == 2
    raw = pd.read_csv(out, keep_default_na=False, dtype=str)
    assert raw["ranking_id"].iloc[:3].tolist() == ["152201", "152202", "152203"]
    assert validate_manifest(out) == []


def test_hpdv2_annotator_table_bad_pref_and_columns(tmp_path, save):
    src = hpdv2_annotator_release(tmp_path, save)
    table = pd.read_csv(src, dtype=str)
    table.loc[0, "pref"] = "0"  # the card only defines 1 and -1
    table.to_csv(src, index=False)
    report = convert("hpdv2", src, tmp_path / "m.csv")
    assert dict(report.skipped) == {"pref not 1 (left) or -1 (right)": 1} and report.rows_written == 29
    table.drop(columns=["pref"]).to_csv(src, index=False)
    with pytest.raises(ValueError, match="pref"):
        convert("hpdv2", src, tmp_path / "m.csv")


# ------------------------------------------------------------------------------------------ HPD v3


@pytest.mark.parametrize("index, expected", [
    (0, [12, 7, 0]),  # choice_dist [12, 7]: 12 votes for path1 (the preferred image), 7 for path2
    (1, [1, 0, 0]),   # Midjourney example: choice_dist null -> path1 preferred
    (2, [1, 0, 0]),   # curated HPDv2 example: null
    (3, [1, 0, 0]),   # test.json example: no choice_dist key
])
def test_hpdv3_readme_examples(tmp_path, save, index, expected):
    records = json.loads((FIXTURES / "hpdv3" / "readme_examples.json").read_text())
    save(tmp_path / "images" / "uuid1.jpg", 1)
    save(tmp_path / "images" / "uuid2.jpg", 2)
    (tmp_path / "all.json").write_text(json.dumps([records[index]]))
    report = convert("hpdv3", tmp_path / "all.json", tmp_path / "m.csv")
    assert report.rows_written == 1
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [expected]
    assert (_name(df["image_0"][0]), _name(df["image_1"][0])) == ("uuid1.jpg", "uuid2.jpg")  # path1 = image_0
    assert df["group"][0] == df["prompt"][0] == records[index]["prompt"]


def test_hpdv3_empty_choice_dist_is_path1_preferred(tmp_path, save):
    # HPSv3's pairwise dataset labels every pair "path1 preferred" and ignores the vote list, so
    # "choice_dist": [] (written by public HPDv3-format exporters) is a hard 1/0/0, not an invalid row.
    shutil.copy(FIXTURES / "hpdv3" / "exporter_empty_lists.json", tmp_path / "train.json")
    save(tmp_path / "data" / "Pickapic" / "images" / "win_uid.jpg", 1)
    save(tmp_path / "data" / "Pickapic" / "images" / "lose_uid.jpg", 2)
    report = convert("hpdv3", tmp_path / "train.json", tmp_path / "m.csv")
    assert report.rows_skipped == 0 and report.rows_written == 1
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [[1, 0, 0]] and _name(df["image_0"][0]) == "win_uid.jpg"
    assert pd.read_csv(tmp_path / "m.csv", keep_default_na=False)["confidence"].tolist() == [""]


# ------------------------------------------------------------------------------------------ DEAR / REPID

RENDERINGS = ("original", "tiff16_a", "tiff16_b", "tiff16_c", "tiff16_d", "tiff16_e")


def repid_release(tmp_path: Path, save) -> tuple[Path, list[str]]:
    """The REPID layout as published: images/<rendering>/<scene>.jpeg (scene names from its file list)."""
    listed = (FIXTURES / "dear" / "repid_files.txt").read_text().split()
    scenes = [Path(p).stem for p in listed[:2]]
    root = tmp_path / "REPID"
    for s, scene in enumerate(scenes):
        for r, rendering in enumerate(RENDERINGS):
            save(root / "images" / rendering / f"{scene}.jpeg", 10 * s + r)
    assert all((root / p).is_file() for p in listed[:1])  # the first listed file, at its published path
    return root, scenes


def test_dear_reads_repid_layout_without_rearranging(tmp_path, save):
    # 5 votes over 2 pairs of scene 0 and 1 pair of scene 1:
    #   (original, tiff16_c): left, right (sides swapped -> still original wins), equal -> 2/0/1
    #   (tiff16_a, tiff16_e): right -> 0/1/0;   scene 1 (tiff16_b, original): left -> 1/0/0
    root, (s0, s1) = repid_release(tmp_path, save)
    pd.DataFrame([
        (s0, "original", "tiff16_c", "left"),
        (s0, "tiff16_c", "original", "right"),
        (s0, "original", "tiff16_c", "equal"),
        (s0, "tiff16_a", "tiff16_e", "right"),
        (s1, "tiff16_b", "original", "left"),
    ], columns=["scene", "left", "right", "choice"]).to_csv(root / "train_processed_markup.csv", index=False)
    report = convert("dear", root, tmp_path / "m.csv")
    assert report.rows_skipped == 0 and report.rows_written == 3
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [[2, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert df["group"].tolist() == [s0, s0, s1]
    assert [Path(p).relative_to(root.resolve()).as_posix() for p in df["image_0"]] == [
        f"images/original/{s0}.jpeg", f"images/tiff16_a/{s0}.jpeg", f"images/tiff16_b/{s1}.jpeg"]


def test_dear_repid_image_paths_and_expert_letters(tmp_path, save):
    # left/right given as the published image paths (no scene column) or as expert letters (A = tiff16_a)
    root, (s0, s1) = repid_release(tmp_path, save)
    (root / "markup").mkdir()
    pd.DataFrame([
        (f"images/tiff16_c/{s0}.jpeg", f"images/original/{s0}.jpeg", "Left preferable", "w1"),
        (f"https://example.org/REPID/images/tiff16_d/{s1}.jpeg", f"images/tiff16_c/{s1}.jpeg", "Both equal", "w2"),
        (f"images/tiff16_c/{s0}.jpeg", f"images/original/{s1}.jpeg", "left", "w3"),  # different scenes
    ], columns=["left", "right", "choice", "worker_id"]).to_csv(root / "markup" / "batch.tsv", sep="\t",
                                                                index=False)
    report = convert("dear", root / "markup", tmp_path / "m.csv", per_annotator=True)
    assert dict(report.skipped) == {"renderings of different scenes": 1}
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [[1, 0, 0], [0, 0, 1]] and df["annotator"].tolist() == ["w1", "w2"]
    assert df["group"].tolist() == [s0, s1]
    pd.DataFrame([(s0, "A", "E", 3, 1, 1)], columns=["scene", "left", "right", "n_left", "n_right", "n_equal"]
                 ).to_csv(root / "votes.csv", index=False)
    convert("dear", root, tmp_path / "m2.csv")
    df = read_manifest(tmp_path / "m2.csv")
    assert _votes(df) == [[3, 1, 1]]
    assert (_name(Path(df["image_0"][0]).parent), _name(Path(df["image_1"][0]).parent)) == ("tiff16_a", "tiff16_e")


def test_dear_markup_of_scenes_outside_the_sample_is_skipped(tmp_path, save):
    # The 100-scene sample ships images of 100 scenes, while its train_processed_markup.csv (51.6 MB, 10K-100K rows
    # per the hub) may cover more scenes: their rows are reported as "missing image", the sample's rows are kept.
    root, (s0, s1) = repid_release(tmp_path, save)
    other = Path((FIXTURES / "dear" / "repid_files.txt").read_text().split()[2]).stem  # listed, not downloaded
    assert other not in (s0, s1)
    pd.DataFrame([(s0, "original", "tiff16_a", 20, 3, 2), (other, "original", "tiff16_a", 5, 15, 5),
                  (s1, "tiff16_e", "tiff16_b", 1, 22, 2)],
                 columns=["scene", "left", "right", "n_left", "n_right", "n_equal"]
                 ).to_csv(root / "train_processed_markup.csv", index=False)
    report = convert("dear", root, tmp_path / "m.csv")
    assert report.rows_written == 2 and dict(report.skipped) == {"missing image": 1}
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [[20, 3, 2], [1, 22, 2]] and df["group"].tolist() == [s0, s1]


def test_image_lookup_prefers_suffix_order_not_listing_order(tmp_path, save):
    from imgpref.data.readers._common import IMAGE_SUFFIXES, find_by_stem

    for k, suffix in enumerate((".png", ".jpg", ".webp")):
        save(tmp_path / f"x{suffix}", k)
    assert IMAGE_SUFFIXES.index(".jpg") < IMAGE_SUFFIXES.index(".png") < IMAGE_SUFFIXES.index(".webp")
    assert find_by_stem(tmp_path, "x", {}).name == "x.jpg"
    assert find_by_stem(tmp_path, "y", {}) is None and find_by_stem(tmp_path / "nope", "x", {}) is None


# ------------------------------------------------------------------------------------------ Pick-a-Pic no_images


def _no_images_shard(path: Path) -> None:
    """A shard with exactly the card's columns and dtypes; the VALUES are placeholders (no real row was found)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = json.loads((FIXTURES / "pickapic" / "no_images_card_features.json").read_text())
    rows = [  # image_0_uid, image_1_uid, label_0, label_1, user
        ("u1", "u2", 1.0, 0.0, 11),
        ("u3", "u4", 0.0, 1.0, 11),
        ("u1", "u3", 0.5, 0.5, 12),   # tie
        ("u1", "u9", 1.0, 0.0, 12),   # u9 not downloaded
        ("u2", "u5", 0.0, 1.0, 13),   # u5 only findable by its URL's file name
    ]
    types = {"bool": pa.bool_(), "string": pa.string(), "timestamp[ns]": pa.timestamp("ns"),
             "float64": pa.float64(), "int64": pa.int64()}
    values = {
        "are_different": [True] * 5, "best_image_uid": [r[0] if r[2] >= r[3] else r[1] for r in rows],
        "caption": ["a red fox", "a red fox", "a blue car", "a blue car", "a red fox"],
        "created_at": [0] * 5, "has_label": [True] * 5,
        "image_0_uid": [r[0] for r in rows], "image_0_url": [f"https://host/{r[0]}.png" for r in rows],
        "image_1_uid": [r[1] for r in rows],
        "image_1_url": [f"https://host/{'img5' if r[1] == 'u5' else r[1]}.png" for r in rows],
        "label_0": [r[2] for r in rows], "label_1": [r[3] for r in rows],
        "model_0": ["m0"] * 5, "model_1": ["m1"] * 5, "ranking_id": list(range(5)),
        "user_id": [r[4] for r in rows], "num_example_per_prompt": [1] * 5, "__index_level_0__": list(range(5)),
    }
    table = pa.table({name: pa.array(values[name], type=types[dtype]) for name, dtype in features})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_pickapic_no_images_layout(tmp_path, save):
    # 5 rows: 3 usable as they are, 1 with an image not downloaded (skipped), 1 found by its URL file name.
    shard = tmp_path / "pickapic_v2_no_images" / "data" / "test-00000-of-00001.parquet"
    _no_images_shard(shard)
    imgs = tmp_path / "downloaded"
    for k, name in enumerate(("u1.jpg", "u2.png", "u3.webp", "u4.jpeg", "img5.png")):
        save(imgs / name, k)
    with pytest.raises(ValueError, match="--images"):
        convert("pickapic", shard, tmp_path / "m.csv")
    report = convert("pickapic", shard.parent.parent, tmp_path / "m.csv", images=imgs)
    assert report.records_read == 5 and report.rows_written == 4
    assert dict(report.skipped) == {"missing image (uid not in --images)": 1}
    df = read_manifest(tmp_path / "m.csv")
    assert _votes(df) == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert [(_name(a), _name(b)) for a, b in zip(df["image_0"], df["image_1"])] == [
        ("u1.jpg", "u2.png"), ("u3.webp", "u4.jpeg"), ("u1.jpg", "u3.webp"), ("u2.png", "img5.png")]
    assert df["annotator"].tolist() == ["11", "11", "12", "13"] and set(df["split"]) == {"test"}
    assert df["group"].tolist() == ["a red fox", "a red fox", "a blue car", "a red fox"]


# ------------------------------------------------------------------------------------------ CLI options


def test_convert_cli_options(tmp_path, save):
    from imgpref.cli import app

    runner = CliRunner()
    src = imagereward_release(tmp_path, save)
    out = tmp_path / "ir.csv"
    result = runner.invoke(app, ["data", "convert", "--from", "imagereward", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(out)) == 45
    root, (s0, _) = repid_release(tmp_path, save)
    pd.DataFrame([(s0, "original", "tiff16_a", "left", "w1"), (s0, "original", "tiff16_a", "left", "w2")],
                 columns=["scene", "left", "right", "choice", "annotator"]).to_csv(root / "votes.csv", index=False)
    result = runner.invoke(app, ["data", "convert", "--from", "dear", str(root), "--out", str(tmp_path / "d.csv"),
                                 "--per-annotator"])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / "d.csv")["annotator"].tolist() == ["w1", "w2"]
    result = runner.invoke(app, ["data", "convert", "--from", "hpdv3", str(root), "--out", str(tmp_path / "x.csv"),
                                 "--per-annotator"])
    assert result.exit_code != 0 and "--per-annotator" in result.output
