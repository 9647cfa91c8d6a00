"""Simulated annotators: Davidson-with-lapse probabilities by hand, vote frequencies against them, the manifest."""
import math

import numpy as np
import pandas as pd
import pytest

from imgpref.data.manifest import read_manifest, write_manifest
from imgpref.world.annotators import (
    Annotator,
    AnnotatorConfig,
    all_pairs,
    build_manifest,
    draw_votes,
    make_annotators,
    vote_probabilities,
)


def test_vote_probabilities_by_hand():
    # u0 = 0.8, u1 = 0.6, T = 0.1 -> r = 8, 6; nu = 0.5: weights e^8, e^6, 0.5 e^7; lapse 0.1
    w = np.array([math.exp(8), math.exp(6), 0.5 * math.exp(7)])
    p = w / w.sum()
    expect = (0.9 * p[0] + 0.05, 0.9 * p[1] + 0.05, 0.9 * p[2])
    got = vote_probabilities(0.8, 0.6, 0.1, 0.5, 0.1)
    np.testing.assert_allclose(np.array(got, dtype=float), expect, rtol=1e-12)
    # equal utilities, no lapse: tie share nu / (2 + nu)
    p0, p1, pt = vote_probabilities(0.5, 0.5, 0.05, 0.3, 0.0)
    assert pt == pytest.approx(0.3 / 2.3) and p0 == pytest.approx(p1)
    # a tiny temperature does not overflow
    assert np.isfinite(np.array(vote_probabilities(1.0, 0.0, 1e-4, 0.3, 0.0), dtype=float)).all()


def test_vote_frequencies_match_probabilities():
    cfg = AnnotatorConfig(votes_per_pair=1, tie_nu=0.4)
    pool = [Annotator("a", 0, 0.1, 0.1)]
    n = 20000
    # gold utility 0.7 f + 0.3 a: u0 = 0.7 * 0.9 + 0.3 * 0.5 = 0.78, u1 = 0.7 * 0.8 + 0.3 * 0.5 = 0.71
    j0 = {"fidelity": np.full(n, 0.9), "aesthetics": np.full(n, 0.5)}
    j1 = {"fidelity": np.full(n, 0.8), "aesthetics": np.full(n, 0.5)}
    votes = draw_votes(j0, j1, cfg, seed=0, annotators=pool)
    freq = np.bincount(votes["choice"], minlength=3) / n
    w = np.array([math.exp(7.8), math.exp(7.1), 0.4 * math.exp(7.45)])
    expect = 0.9 * w / w.sum() + np.array([0.05, 0.05, 0.0])
    np.testing.assert_allclose(freq, expect, atol=4 * np.sqrt(0.25 / n))


def test_taste_groups_weight_aesthetics_differently():
    cfg = AnnotatorConfig(n_annotators=200, votes_per_pair=20, taste_groups=2, lapse=0.0, temperature=0.02,
                          temperature_sd=0.0)
    # image 0: better fidelity, image 1: better aesthetics. group 0 weights (0.7, 0.3): u0 = 0.7 + 0.12 = 0.82
    # > u1 = 0.49 + 0.27 = 0.76; group 1 weights (0.3, 0.7): u0 = 0.3 + 0.28 = 0.58 < u1 = 0.21 + 0.63 = 0.84.
    # With T = 0.02 and nu = 0.3, group 0 picks image 0 with P = e^3 / (e^3 + 1 + 0.3 e^1.5) = 0.89.
    j0 = {"fidelity": np.full(300, 1.0), "aesthetics": np.full(300, 0.4)}
    j1 = {"fidelity": np.full(300, 0.7), "aesthetics": np.full(300, 0.9)}
    votes = draw_votes(j0, j1, cfg, seed=1)
    by_group = votes.groupby("group")["choice"].apply(lambda c: (c == 0).mean())
    assert set(votes["group"]) == {0, 1}
    p0 = math.exp(3) / (math.exp(3) + 1 + 0.3 * math.exp(1.5))
    assert by_group[0] == pytest.approx(p0, abs=0.03) and by_group[1] < 0.01
    assert all(a.startswith(f"g{g}-") for a, g in zip(votes["annotator"], votes["group"]))


def test_make_annotators_deterministic_and_validated():
    cfg = AnnotatorConfig(n_annotators=10, taste_groups=2)
    assert make_annotators(cfg, 3) == make_annotators(cfg, 3)
    assert make_annotators(cfg, 3) != make_annotators(cfg, 4)
    with pytest.raises(ValueError, match="taste_groups"):
        make_annotators(AnnotatorConfig(taste_groups=3), 0)
    with pytest.raises(ValueError, match="votes_per_pair"):
        draw_votes({"fidelity": np.ones(2), "aesthetics": np.ones(2)}, {"fidelity": np.ones(2), "aesthetics":
                   np.ones(2)}, AnnotatorConfig(n_annotators=3, votes_per_pair=5), seed=0)


def test_all_pairs():
    assert all_pairs(3) == [(0, 1), (0, 2), (1, 2)]
    sub = all_pairs(6, max_pairs=5, seed=1)
    assert len(sub) == 5 and len(set(sub)) == 5 and all(i < j for i, j in sub)


def test_build_manifest_is_canonical_and_counts_votes(tmp_path):
    items = pd.DataFrame({"path": [f"im{i}.png" for i in range(8)], "prompt": ["p"] * 4 + ["q"] * 4,
                          "prompt_id": ["a"] * 4 + ["b"] * 4, "split": ["train"] * 4 + ["test"] * 4})
    judged = {"fidelity": np.linspace(0, 1, 8), "aesthetics": np.full(8, 0.5), "utility": np.zeros(8)}
    cfg = AnnotatorConfig(votes_per_pair=7)
    m = build_manifest(items, judged, cfg, seed=0)
    assert len(m) == 12 and (m[["votes_0", "votes_1", "votes_tie"]].sum(axis=1) == 7).all()
    assert set(m["group"]) == {"a", "b"} and (m.loc[m.group == "b", "split"] == "test").all()
    per = build_manifest(items, judged, cfg, seed=0, per_annotator=True)
    assert len(per) == 12 * 7 and (per[["votes_0", "votes_1", "votes_tie"]].sum(axis=1) == 1).all()
    # per-vote rows aggregate to the same counts as the aggregated manifest (same seed, same draws)
    agg = per.groupby(["image_0", "image_1"])[["votes_0", "votes_1", "votes_tie"]].sum().sort_index()
    np.testing.assert_array_equal(agg.to_numpy(), m.set_index(["image_0", "image_1"]).sort_index()[
        ["votes_0", "votes_1", "votes_tie"]].to_numpy())
    for i in range(8):
        (tmp_path / f"im{i}.png").write_bytes(b"")
    write_manifest(m, tmp_path / "m.csv")
    back = read_manifest(tmp_path / "m.csv", validate=False)
    assert len(back) == 12
