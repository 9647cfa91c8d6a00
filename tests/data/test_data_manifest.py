"""Canonical manifest: reading, writing, and every bad-row kind of validate_manifest."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from imgpref.data.manifest import (
    COLUMNS,
    ManifestError,
    RowProblem,
    read_manifest,
    validate_manifest,
    vote_fraction,
    write_manifest,
)


def _write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def _row(a="img/0.png", b="img/1.png", v0=3, v1=1, vt=1, prompt="", group="", annotator="", split="train"):
    return dict(image_0=a, image_1=b, votes_0=v0, votes_1=v1, votes_tie=vt, prompt=prompt, group=group,
                annotator=annotator, split=split)


def test_read_valid_manifest(tmp_path, images):
    path = _write_csv(tmp_path / "m.csv", [
        _row(), _row("img/2.png", "img/3.png", 0, 0, 5, prompt="a, b", group="g1", annotator="u1", split="test"),
    ])
    assert validate_manifest(path) == []
    df = read_manifest(path)
    assert tuple(df.columns) == COLUMNS
    assert df["image_0"].tolist() == [str(images[0].resolve()), str(images[2].resolve())]
    assert df["votes_0"].dtype == np.int64 and df["votes_tie"].tolist() == [1, 5]
    assert df["prompt"].tolist() == ["", "a, b"]
    # group defaults to the image pair key when empty
    assert df["group"].tolist() == ["|".join(sorted([str(images[0].resolve()), str(images[1].resolve())])), "g1"]
    test = read_manifest(path, split="test")
    assert len(test) == 1 and test["annotator"].tolist() == ["u1"]


def test_optional_columns_absent(tmp_path, images):
    path = tmp_path / "m.csv"
    pd.DataFrame([{"image_0": "img/0.png", "image_1": "img/1.png", "votes_0": 1, "votes_1": 0, "votes_tie": 0}]) \
        .to_csv(path, index=False)
    df = read_manifest(path)
    assert df.loc[0, "split"] == "" and df.loc[0, "prompt"] == "" and df.loc[0, "annotator"] == ""


def test_vote_fraction_hand_computed():
    df = pd.DataFrame({"votes_0": [3, 0, 1], "votes_1": [1, 0, 1], "votes_tie": [1, 4, 2]})
    np.testing.assert_allclose(vote_fraction(df), [3.5 / 5, 0.5, 2 / 4])
    with pytest.raises(ValueError, match="zero total votes"):
        vote_fraction(pd.DataFrame({"votes_0": [0], "votes_1": [0], "votes_tie": [0]}))


def test_every_bad_row_kind_is_reported(tmp_path, images):
    rows = [
        _row(),                                              # 1 ok
        _row("img/0.png", "img/missing.png"),                # 2 missing image
        _row(v0=-1),                                         # 3 negative votes (pair 0-1 dup of row 1 too)
        _row("img/1.png", "img/2.png", v1="1.5"),            # 4 non-integer votes
        _row("img/2.png", "img/3.png", 0, 0, 0),             # 5 zero total
        _row("img/2.png", "img/2.png"),                      # 6 same image both sides
        _row("img/0.png", "img/3.png", split="training"),    # 7 unknown split
        _row("img/1.png", "img/0.png", annotator="x"),       # 8 ok: other annotator
        _row("img/1.png", "img/0.png", annotator="x"),       # 9 duplicate of row 8 (unordered)
        _row("img/0.png", "img/2.png", v0="abc"),            # 10 non-integer (text)
    ]
    problems = validate_manifest(_write_csv(tmp_path / "bad.csv", rows))
    found = {(p.row, p.column, p.reason.split(" ")[0]) for p in problems}
    assert (2, "image_1", "missing") in found
    assert (3, "votes_0", "negative") in found
    assert (4, "votes_1", "non-integer") in found
    assert (5, "votes_0", "zero") in found
    assert (6, "image_1", "the") in found  # "the same image on both sides"
    assert (7, "split", "unknown") in found
    assert (9, "image_0", "duplicate") in found
    assert (10, "votes_0", "non-integer") in found
    assert (3, "image_0", "duplicate") in found  # row 3 repeats the pair of row 1
    assert all(p.file == str(tmp_path / "bad.csv") for p in problems)
    assert not any(p.row in (1, 8) for p in problems)
    assert len(problems) == 9
    dup = next(p for p in problems if p.row == 9)
    assert "row 8" in dup.reason


def test_missing_column_and_unreadable_files(tmp_path, images):
    path = tmp_path / "m.csv"
    pd.DataFrame({"image_0": ["img/0.png"], "image_1": ["img/1.png"], "votes_0": [1]}).to_csv(path, index=False)
    problems = validate_manifest(path)
    assert {(p.row, p.column, p.reason) for p in problems} == {
        (0, "votes_1", "missing column"), (0, "votes_tie", "missing column")}
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    [problem] = validate_manifest(broken)
    assert problem.row == 0 and problem.reason.startswith("unreadable file")
    [problem] = validate_manifest(tmp_path / "absent.csv")
    assert problem.reason == "file not found"
    weird = tmp_path / "m.xlsx"
    weird.write_text("x")
    assert "unknown format" in validate_manifest(weird)[0].reason
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.csv")


def test_jsonl_bad_line_keeps_row_numbers(tmp_path, images):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps(_row()), "{not json", json.dumps(_row("img/2.png", "img/3.png", v0=-2))]
    path.write_text("\n".join(lines) + "\n")
    problems = validate_manifest(path)
    assert [(p.row, p.column) for p in problems] == [(2, ""), (3, "votes_0")]
    assert problems[0].reason.startswith("invalid JSON")


def test_read_manifest_raises_with_listing(tmp_path, images):
    rows = [_row("img/0.png", f"img/none{i}.png") for i in range(25)]
    path = _write_csv(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert isinstance(info.value, ValueError)
    assert len(info.value.problems) == 25
    message = str(info.value)
    assert "25 problem(s)" in message and "and 5 more" in message and "row 20" in message and "row 21," not in message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_write_read_roundtrip(tmp_path, images, suffix):
    df = pd.DataFrame([_row(str(images[0]), str(images[1]), prompt="p", group="g"),
                       _row(str(images[2]), str(images[3]), 0, 2, 1, split="val")])
    out = tmp_path / f"m{suffix}"
    write_manifest(df, out)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    back = read_manifest(out)
    assert back["image_0"].tolist() == [str(images[0].resolve()), str(images[2].resolve())]
    assert back[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist() == [[3, 1, 1], [0, 2, 1]]
    assert back["split"].tolist() == ["train", "val"]
    # paths under the manifest folder are stored relative to it
    if suffix == ".csv":
        assert pd.read_csv(out)["image_0"].tolist() == ["img/0.png", "img/2.png"]


def test_parquet_with_image_bytes(tmp_path, jpeg):
    a, b = jpeg(1), jpeg(2)
    df = pd.DataFrame([_row(a, b), _row(b, a, 0, 1, 0, annotator="u"), _row(a, a)])
    out = tmp_path / "bytes.parquet"
    write_manifest(df, out)
    problems = validate_manifest(out)
    # no file check for bytes; identical bytes on both sides are caught
    assert [(p.row, p.column, p.reason) for p in problems] == [(3, "image_1", "the same image on both sides")]
    good = tmp_path / "good.parquet"
    write_manifest(df.iloc[:2], good)
    back = read_manifest(good)
    assert back["image_0"].tolist() == [a, b] and isinstance(back.loc[0, "image_1"], bytes)
    with pytest.raises(ValueError, match="parquet"):
        write_manifest(df, tmp_path / "bytes.csv")


def test_row_problem_str():
    text = str(RowProblem("m.csv", 4, "votes_0", "negative votes -1"))
    assert text == "m.csv: row 4, column 'votes_0': negative votes -1"
    assert str(RowProblem("m.csv", 0, "", "file not found")) == "m.csv: file: file not found"


def test_vote_counts_beyond_int64_are_row_errors_not_overflows(tmp_path, images):
    big = 2**63  # one more than int64 can hold
    rows = [_row("img/0.png", "img/1.png"),
            _row("img/1.png", "img/2.png", v0=str(big * 10**3)),      # 22 digits
            _row("img/2.png", "img/3.png", v0=2**62, v1=2**62),       # each fits, the pair's total does not
            _row("img/0.png", "img/3.png", v0=str(big - 1), v1=0, vt=0)]  # the int64 maximum itself is fine
    csv = _write_csv(tmp_path / "m.csv", rows)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [_row(), _row("img/1.png", "img/2.png", vt=big)]) + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(csv)
    got = {(p.row, p.column) for p in info.value.problems}
    assert got == {(2, "votes_0"), (3, "votes_0")}
    assert all("int64" in p.reason for p in info.value.problems)
    assert f"{csv}: row 2, column 'votes_0'" in str(info.value)
    with pytest.raises(ManifestError) as info:
        read_manifest(jsonl)
    assert [(p.row, p.column) for p in info.value.problems] == [(2, "votes_tie")]
    ok = read_manifest(_write_csv(tmp_path / "ok.csv", [rows[0], rows[3]]))
    assert ok["votes_0"].tolist() == [3, big - 1]
