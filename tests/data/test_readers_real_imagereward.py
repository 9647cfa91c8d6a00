"""The repeated-prompt rankings of THUDM/ImageReward `data/test.json`, read as published (issue 12).

`fixtures/imagereward/repeated_prompts.json` holds, copied exactly, the only 5 of the file's 466 rankings whose
prompt text is shared (2 prompts; source and licence in fixtures/README.md). Every expected number below is
counted by hand from those rankings (worked out in the comments), never by the reader under test.
"""
from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pandas as pd

from imgpref.data.manifest import read_manifest
from imgpref.data.readers import convert

FIXTURE = Path(__file__).parent / "fixtures" / "imagereward" / "repeated_prompts.json"

# Hand count per ranking (lower rank wins; pair i < j, image_0 = generation i): image_0 wins / image_1 wins / ties
#   007755-0051  [1,5,3,2]        6 pairs:  3 / 3 / 0   ((5,3), (5,2), (3,2) go to image_1)
#   008615-0036  [1,2,2,5]        6 pairs:  5 / 0 / 1   ((2,2) is the tie)
#   009528-0020  [2,1,2,3,3,4,4] 21 pairs: 17 / 1 / 3   ((2,1) only; ties (2,2), (3,3), (4,4))
#   011025-0007  [2,3,2,1,4,3,5] 21 pairs: 14 / 5 / 2   ((2,1), (3,2), (3,1), (2,1), (4,3); ties (2,2), (3,3))
#   001197-0059  [2,1,3,4,3,4,1] 21 pairs: 11 / 7 / 3   ((2,1) x2, (3,1), (4,3), (4,1), (3,1), (4,1); ties
#                                                          (1,1), (3,3), (4,4))
# total 75 pairs = 50 / 16 / 9, in 5 groups. Grouped by prompt text instead, the 4 + 4 images of the first prompt
# and the 7 + 7 + 7 of the second would be ranked together: C(8,2) + C(21,2) = 28 + 210 = 238 pairs, 163 of which
# nobody compared (the 7,393 - 7,230 = 163 extra pairs found on the full file).
PER_ENTRY = {"007755-0051": [3, 3, 0], "008615-0036": [5, 0, 1], "009528-0020": [17, 1, 3],
             "011025-0007": [14, 5, 2], "001197-0059": [11, 7, 3]}


def _release(tmp_path: Path, save, keys: str = "imagereward") -> Path:
    """The fixture at THUDM's path (data/test.json, images under data/test_images/), or renamed to HPDv2 keys."""
    data = tmp_path / "data"
    entries = json.loads(FIXTURE.read_text())
    for k, gen in enumerate(g for e in entries for g in e["generations"]):
        save(data / ("test_images" if keys == "imagereward" else "test") / gen, k)
    if keys == "hpdv2":  # the issue's check: the same rankings under HPDv2's test.json keys
        entries = [{"prompt": e["prompt"], "image_path": e["generations"], "rank": e["ranking"]} for e in entries]
    (data / "test.json").write_text(json.dumps(entries, indent=4))
    return data / "test.json"


def _votes(df: pd.DataFrame) -> list[list[int]]:
    return df[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist()


def _entry_folder(path: str) -> str:
    """`part-007755/images/0051` of a generation: the folder that identifies its ranking in the release."""
    parts = Path(path).parts
    return "/".join(parts[-4:-1])


def _check_rankings_kept_apart(df: pd.DataFrame) -> None:
    assert len(df) == 75
    votes = _votes(df)
    assert votes.count([1, 0, 0]) == 50 and votes.count([0, 1, 0]) == 16 and votes.count([0, 0, 1]) == 9
    assert sorted(df["group"].value_counts().tolist()) == [6, 6, 21, 21, 21]
    assert df["prompt"].nunique() == 2
    # no row pairs generations of two different rankings
    assert all(_entry_folder(a) == _entry_folder(b) for a, b in zip(df["image_0"], df["image_1"]))
    # what grouping by prompt text would have ranked together: 238 pairs of which 163 were never compared
    by_prompt = {p: set(g["image_0"]) | set(g["image_1"]) for p, g in df.groupby("prompt")}
    assert sorted(len(v) for v in by_prompt.values()) == [8, 21]
    assert sum(len(list(combinations(v, 2))) for v in by_prompt.values()) - len(df) == 163


def test_imagereward_repeated_prompts_stay_separate_rankings(tmp_path, save):
    src = _release(tmp_path, save)
    report = convert("imagereward", src, tmp_path / "m.csv")
    assert report.records_read == 5 and report.rows_written == 75 and report.rows_skipped == 0
    assert report.merged == 0
    df = read_manifest(tmp_path / "m.csv")
    _check_rankings_kept_apart(df)
    raw = pd.read_csv(tmp_path / "m.csv", keep_default_na=False, dtype=str)
    per_entry = {eid: _votes(df[raw["entry_id"] == eid]) for eid in PER_ENTRY}
    assert {eid: [v.count([1, 0, 0]), v.count([0, 1, 0]), v.count([0, 0, 1])] for eid, v in per_entry.items()} \
        == PER_ENTRY
    assert df["group"].unique().tolist() == ["test:0", "test:1", "test:2", "test:3", "test:4"]
    assert set(df["split"]) == {"test"}
    # orientation: first row of 007755-0051 is generation 0 (rank 1) vs generation 1 (rank 5) -> image_0 wins
    first = df.iloc[0]
    assert (Path(first["image_0"]).stem[:8], Path(first["image_1"]).stem[:8]) == ("87644c2c", "e8866c25")
    assert _votes(df.iloc[[0]]) == [[1, 0, 0]]


def test_hpdv2_keys_on_the_same_rankings_group_by_entry(tmp_path, save):
    # The issue renamed the ImageReward file to HPDv2's keys to evaluate it with --protocol hpd; the HPDv2 reader
    # must then also keep one group per ranking entry, not per prompt.
    src = _release(tmp_path, save, keys="hpdv2")
    report = convert("hpdv2", src.parent, tmp_path / "m.csv")
    assert report.rows_written == 75 and report.rows_skipped == 0
    df = read_manifest(tmp_path / "m.csv")
    _check_rankings_kept_apart(df)
    assert df["group"].unique().tolist() == ["test:0", "test:1", "test:2", "test:3", "test:4"]


def test_fixture_is_the_published_excerpt():
    # Guard against edits: the fixture keeps the release's keys, ids and image path layout.
    entries = json.loads(FIXTURE.read_text())
    assert [e["id"] for e in entries] == list(PER_ENTRY)
    assert all(set(e) == {"id", "prompt", "generations", "ranking"} for e in entries)
    assert all(g.startswith(f"part-{e['id'][:6]}/images/{e['id'][7:]}/") and g.endswith(".webp")
               for e in entries for g in e["generations"])
