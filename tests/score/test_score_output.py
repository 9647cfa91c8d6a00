"""Score tables round-trip through .csv, .jsonl and .parquet; writes are atomic; dedupe keeps the last row."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from imgpref.scorers.output import Journal, dedupe, read_journal, read_scores, write_scores


@pytest.fixture
def table():
    return pd.DataFrame({
        "path": ["a/1.png", "a/2.png", "b, c/3.png", "ü/4.png"],
        "scorer": ["s", "s", "s", "t"],
        "score": [1.5, math.nan, -2.25e-7, 3.0],
        "prompt": ["NA", None, 'quotes " and, commas\nand a newline', "null"],
        "error": [None, "truncated or corrupt file", None, None],
    })


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip(tmp_path, table, suffix):
    out = write_scores(table, tmp_path / f"t{suffix}")
    back = read_scores(out)
    assert list(back.columns) == ["path", "scorer", "score", "prompt", "error", "abs_path", "file_id", "fingerprint"]
    assert list(back["prompt"]) == ["NA", None, 'quotes " and, commas\nand a newline', "null"]
    assert list(back["error"]) == [None, "truncated or corrupt file", None, None]
    assert back["score"].iloc[0] == 1.5 and math.isnan(back["score"].iloc[1]) and back["score"].iloc[2] == -2.25e-7
    assert list(back["path"]) == list(table["path"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind


def test_journal_appends_and_survives_a_torn_line(tmp_path, table):
    jp = tmp_path / "o.csv.partial.jsonl"
    j = Journal(jp)
    j.append(table.iloc[:2].to_dict("records"))
    j.close()
    with open(jp, "a") as fh:
        fh.write('{"path": "half')  # a kill in the middle of a write
    kept = read_journal(jp)
    assert len(kept) == 2
    j = Journal(jp, keep=kept)  # rewritten clean, then appended to
    j.append(table.iloc[2:].to_dict("records"))
    j.close()
    assert [r["path"] for r in read_journal(jp)] == list(table["path"])


def test_dedupe_keeps_last(table):
    doubled = pd.concat([table, table.assign(score=[9.0, 9.0, 9.0, 9.0])], ignore_index=True)
    out = dedupe(doubled)
    assert len(out) == 4 and (out["score"] == 9.0).all()
