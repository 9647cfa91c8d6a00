"""Synthetic rendering preferences: determinism, structure, oracle accuracy, and agreement with the DEAR reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpref.data.manifest import read_manifest, validate_manifest, vote_fraction
from imgpref.data.pairs import majority_label, pairs_to_arrays
from imgpref.data.readers import convert
from imgpref.data.synth import RENDERINGS, load_utilities, make_rendering_dataset, quality


@pytest.fixture(scope="module")
def synth40(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth40")
    return out, make_rendering_dataset(out, scenes=40, seed=3)


def test_structure(synth40):
    out, summary = synth40
    assert validate_manifest(out / "manifest.csv") == []
    df = read_manifest(out / "manifest.csv")
    assert len(df) == 40 * 15 and summary["n_pairs"] == 600
    assert (df[["votes_0", "votes_1", "votes_tie"]].sum(axis=1) == 25).all()
    assert df["group"].nunique() == 40 and (df.groupby("group").size() == 15).all()
    assert (df["prompt"] == "").all() and (df["annotator"] == "").all()
    # splits are by scene, ~70/15/15
    per_scene = df.groupby("group")["split"].nunique()
    assert (per_scene == 1).all()
    counts = df.groupby("group")["split"].first().value_counts().to_dict()
    assert counts == {"train": 28, "val": 6, "test": 6}
    for scene in df["group"].unique()[:3]:
        files = sorted(p.name for p in (out / "images" / scene).iterdir())
        assert files == sorted(f"{r}.png" for r in RENDERINGS)
        assert Image.open(out / "images" / scene / "original.png").size == (64, 64)
    util = pd.read_csv(out / "utilities.csv")
    assert len(util) == 240 and set(util.columns) >= {"scene", "rendering", "image", "utility"}


def test_oracle_and_ties_in_range(synth40):
    out, summary = synth40
    df = read_manifest(out / "manifest.csv")
    utilities = load_utilities(out)
    q = vote_fraction(df)
    u0 = np.array([utilities[p] for p in df["image_0"]])
    u1 = np.array([utilities[p] for p in df["image_1"]])
    decided = q != 0.5
    oracle = float(((u0 > u1) == (q > 0.5))[decided].mean())
    assert oracle == pytest.approx(summary["oracle_accuracy"])
    assert 0.82 <= oracle <= 0.98
    assert summary["tie_share"] == pytest.approx(df["votes_tie"].sum() / (25 * len(df)))
    assert 0.07 <= summary["tie_share"] <= 0.22
    ceiling = float(np.mean(np.maximum(q, 1 - q)))
    assert summary["human_ceiling"] == pytest.approx(ceiling) and 0.6 < ceiling < 0.9
    for split in ("train", "val", "test"):
        assert 0.7 <= summary["splits"][split]["oracle_accuracy"] <= 1.0


def test_utility_is_a_function_of_the_image(synth40):
    out, _ = synth40
    util = pd.read_csv(out / "utilities.csv")
    recomputed = np.array([0.5 * quality(np.asarray(Image.open(out / p))) for p in util["image"]])
    residual = util["utility"].to_numpy() - recomputed
    assert np.abs(residual).max() < 0.6  # only the small taste term (sd 0.1) is not explained by the pixels
    assert np.corrcoef(util["utility"], recomputed)[0, 1] > 0.97


def test_deterministic_given_seed(tmp_path):
    a = make_rendering_dataset(tmp_path / "a", scenes=5, seed=11, size=24)
    b = make_rendering_dataset(tmp_path / "b", scenes=5, seed=11, size=24)
    c = make_rendering_dataset(tmp_path / "c", scenes=5, seed=12, size=24)
    for name in ("manifest.csv", "utilities.csv", "votes.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "manifest.csv").read_bytes() != (tmp_path / "c" / "manifest.csv").read_bytes()
    img = "images/scene_0002/expert_c.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / img)), np.asarray(Image.open(tmp_path / "b" / img)))
    assert a["oracle_accuracy"] == b["oracle_accuracy"]
    assert c["n_pairs"] == 75


def test_dear_reader_reproduces_synth_manifest(synth40, tmp_path):
    out, _ = synth40
    report = convert("dear", out, tmp_path / "from_votes.csv")
    assert report.records_read == 600 * 25 and report.rows_skipped == 0
    ours = read_manifest(out / "manifest.csv")
    theirs = read_manifest(tmp_path / "from_votes.csv")
    pd.testing.assert_frame_equal(ours, theirs)


def test_pairs_to_arrays(synth40):
    out, _ = synth40
    df = read_manifest(out / "manifest.csv")
    arrays = pairs_to_arrays(df)
    assert len(arrays.images) == 240 and len(arrays.group_names) == 40
    assert [arrays.images[i] for i in arrays.idx0[:5]] == df["image_0"].tolist()[:5]
    assert arrays.votes.shape == (600, 3) and arrays.votes.sum() == 600 * 25
    assert arrays.group_names[arrays.groups[0]] == df["group"].iloc[0]
    np.testing.assert_array_equal(majority_label(np.array([[3, 1, 0], [1, 3, 0], [1, 1, 4]])), [1.0, 0.0, 0.5])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="scenes"):
        make_rendering_dataset(tmp_path, scenes=0)
    with pytest.raises(ValueError, match="size"):
        make_rendering_dataset(tmp_path, scenes=2, size=4)
