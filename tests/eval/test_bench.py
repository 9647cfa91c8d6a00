"""`imgpref bench` end to end on tiny synthetic copies of each test-set format, with tiny scorers.

The synthetic sets are built so that the expected accuracies are known by hand: images are flat grey squares of
known brightness, the scorer is the weight-free `exposure` measure (which is highest at mid-grey, and tells the
squares apart), and the human rankings are written from the brightness. Expected numbers below are derived from
the brightness values, not from imgpref's code."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgpref.eval.bench import BenchDataset, run_bench

LEVELS = {"a": 128, "b": 100, "c": 70, "d": 30}  # exposure: a > b > c > d (mid-grey best)


def _png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), level, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _save(folder, name, level):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(_png(level))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    # HPD v2 test.json: prompt 1 ranked as exposure ranks (acc 1), prompt 2 fully reversed (acc 0) -> 0.5
    hp = root / "hpdv2"
    for k, v in LEVELS.items():
        _save(hp, f"{k}.png", v)
    (hp / "test.json").write_text(json.dumps([
        {"prompt": "a red car", "image_path": ["a.png", "b.png", "c.png"], "rank": [1, 2, 3], "raw_annotations": []},
        {"prompt": "a white cat", "image_path": ["b.png", "c.png", "d.png"], "rank": [3, 2, 1],
         "raw_annotations": []}]))
    # ImageReward test.json: ranking 1 right on 3 pairs, ranking 2 right on 2 of 3 (c > b wrong) -> pooled 5/6
    ir = root / "ir"
    for k, v in LEVELS.items():
        _save(ir, f"{k}.png", v)
    (ir / "test.json").write_text(json.dumps([
        {"id": "x1", "prompt": "a dog", "generations": ["a.png", "b.png", "c.png"], "ranking": [1, 2, 3]},
        {"id": "x2", "prompt": "a cup", "generations": ["b.png", "c.png", "d.png"], "ranking": [2, 1, 3]}]))
    # Pick-a-Pic shards: test (4 pairs, 3 right, no ties) + validation (to tune the threshold)
    pk = root / "pick"
    pk.mkdir()

    def shard(name, rows):
        pd.DataFrame([{"caption": c, "jpg_0": _png(LEVELS[x]), "jpg_1": _png(LEVELS[y]), "label_0": l0,
                       "label_1": 1 - l0, "has_label": True, "are_different": True} for c, x, y, l0 in rows]
                     ).to_parquet(pk / name)
        return pk / name

    shard("test-0.parquet", [("p1", "a", "b", 1.0), ("p2", "a", "c", 1.0), ("p3", "b", "d", 1.0),
                             ("p4", "c", "d", 0.0)])
    shard("test_unique-0.parquet", [("p1", "a", "b", 1.0), ("p4", "c", "d", 0.0)])
    shard("validation-0.parquet", [("v1", "a", "d", 1.0), ("v2", "b", "c", 1.0)])
    # HPD v3 pairs: path1 preferred; 2 of 3 agree with exposure
    h3 = root / "hpdv3"
    for k, v in LEVELS.items():
        _save(h3, f"{k}.png", v)
    (h3 / "test.json").write_text(json.dumps([
        {"prompt": "q1", "path1": "a.png", "path2": "d.png", "model1": "m", "model2": "n"},
        {"prompt": "q2", "path1": "b.png", "path2": "c.png", "model1": "m", "model2": "n"},
        {"prompt": "q3", "path1": "d.png", "path2": "a.png", "model1": "m", "model2": "n"}]))
    return {"hpdv2": hp / "test.json", "ir": ir / "test.json", "pick": pk, "h3": h3 / "test.json"}


def test_bench_protocols_and_outputs(sets, tmp_path):
    pick_test = sets["pick"] / "test-0.parquet"
    datasets = [BenchDataset("hpdv2_test", sets["hpdv2"]), BenchDataset("imagereward_test", sets["ir"]),
                BenchDataset("pickapic_test", pick_test, val_src=sets["pick"] / "validation-0.parquet"),
                BenchDataset("pickapic_test_unique", sets["pick"] / "test_unique-0.parquet"),
                BenchDataset("hpdv3_test", sets["h3"])]
    table = run_bench(["exposure", "noise"], datasets, tmp_path / "out", n_resamples=50, num_workers=0)
    got = table[table.scorer == "exposure"].set_index("dataset")["accuracy"]
    assert got["hpdv2_test"] == pytest.approx(50.0)
    assert got["imagereward_test"] == pytest.approx(100 * 5 / 6)
    assert got["pickapic_test"] == pytest.approx(75.0)
    assert got["pickapic_test_unique"] == pytest.approx(50.0)
    assert got["hpdv3_test"] == pytest.approx(100 * 2 / 3)
    assert len(table) == 10 and table["note"].str.len().min() > 10
    row = table.set_index(["scorer", "dataset"]).loc[("exposure", "hpdv2_test")]
    assert row["ci_low"] <= row["accuracy"] <= row["ci_high"] and math.isnan(row["published"])
    csv = pd.read_csv(tmp_path / "out" / "bench.csv")
    assert list(csv.columns)[:4] == ["scorer", "dataset", "protocol", "accuracy"] and len(csv) == 10
    page = (tmp_path / "out" / "bench.html").read_text()
    assert "pickapic_test_unique" in page and "HPSv3 issue #38" in page
    # a second run over the same output folder (manifests, embedding cache) gives the same table
    again = run_bench(["exposure"], datasets, tmp_path / "out", n_resamples=50, num_workers=0,
                      cache=tmp_path / "cache")
    assert again[again.scorer == "exposure"]["accuracy"].tolist() == got.tolist()


def test_bench_shows_published_number_and_difference(sets, tmp_path, monkeypatch):
    from imgpref.scorers import metadata as md

    fake = md.ScorerMeta(licence="x", licence_source="x", backbone="x", params="0", input_size="x", score_range="x",
                         published={"hpdv3_test": md.Published(60.0, "made up for the test")})
    real = md.metadata_for
    monkeypatch.setattr(md, "metadata_for", lambda n: fake if n == "exposure" else real(n))
    table = run_bench(["exposure"], [BenchDataset("hpdv3_test", sets["h3"])], tmp_path, n_resamples=20,
                      num_workers=0)
    row = table.iloc[0]
    assert row["published"] == 60.0 and row["difference"] == pytest.approx(100 * 2 / 3 - 60.0)
    assert "published 60.0 (+6.7)" in (tmp_path / "bench.html").read_text()


def test_bench_cli_runs_and_reports_usage_errors(sets, tmp_path):
    from imgpref.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["bench", "--scorer", "exposure", "--hpdv3", str(sets["h3"]), "--out",
                              str(tmp_path / "o"), "--n-boot", "20", "--num-workers", "0"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "bench.csv").is_file() and "hpdv3_test" in res.stdout
    res = runner.invoke(app, ["bench", "--scorer", "exposure", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "no dataset" in res.output
    res = runner.invoke(app, ["bench", "--scorer", "exposure", "--hpdv2", str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "nope.json" in res.output
