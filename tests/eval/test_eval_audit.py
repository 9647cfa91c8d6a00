"""`audit()`: vote confidence per pair and the pairs a scorer strongly disagrees with."""
import math

import numpy as np
import pytest

from imgpref.eval.audit import audit, ensemble_margins, majority_confidence


def sig(x):
    return 1 / (1 + math.exp(-x))


def binom_cdf(k, n):
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def test_majority_confidence_by_hand():
    # Beta(1 + w0, 1 + w1) with integer parameters: P(theta > 1/2) = P(Binomial(w0 + w1 + 1, 1/2) <= w0)
    # one hard vote: Beta(2, 1) -> 1 - (1/2)^2 = 0.75; 20 vs 5: P(Bin(26, .5) <= 20)
    # ties are half votes: 3/1/2 -> w = (4, 2) -> P(Bin(7, .5) <= 4); an even pair -> 0.5
    c = majority_confidence([[1, 0, 0], [0, 1, 0], [20, 5, 0], [3, 1, 2], [2, 2, 3]])
    assert c == pytest.approx([0.75, 0.75, binom_cdf(20, 26), binom_cdf(4, 7), 0.5])


@pytest.fixture
def audit_manifest(tmp_path, kit):
    img = tmp_path / "img"
    a, b, c = kit.solid(img, "a.png", 204), kit.solid(img, "b.png", 102), kit.solid(img, "c.png", 0)
    d, e = kit.solid(img, "d.png", 153), kit.solid(img, "e.png", 153)
    rows = [  # scores: a 0.8, b 0.4, c 0, d = e 0.6; bt_scale 5
        dict(image_0=f"img/{a}", image_1=f"img/{c}", votes_0=20, votes_1=5, votes_tie=0, prompt="p1"),
        dict(image_0=f"img/{c}", image_1=f"img/{a}", votes_0=20, votes_1=5, votes_tie=0, prompt="p2"),
        dict(image_0=f"img/{c}", image_1=f"img/{b}", votes_0=1, votes_1=0, votes_tie=0, prompt="p3"),
        dict(image_0=f"img/{d}", image_1=f"img/{e}", votes_0=3, votes_1=3, votes_tie=4, prompt="p4"),
    ]
    return kit.write_manifest_csv(tmp_path / "audit.csv", rows)


def test_audit_flags_confident_disagreements(audit_manifest, tmp_path, kit):
    # row 1: majority a (conf P(Bin(26,.5) <= 20)), model P(a) = sig(4) = 0.982 -> agrees
    # row 2: majority c, model P(c) = sig(-4) = 0.018 < 0.2 and confidence > 0.9 -> flagged
    # row 3: one vote for c (confidence 0.75), model P(c) = sig(-2) = 0.119: disagrees, but not confident enough
    # row 4: an even pair: never flagged, disagreement 0
    # order: flagged first (2), then disagreement 1 - P(majority): 3 (0.881), 1 (0.018), 4 (0)
    out = tmp_path / "audit_out.csv"
    t = audit(kit.make_scorer(bt_scale=5.0), audit_manifest, out=out)
    assert t["row"].tolist() == [2, 3, 1, 4]
    assert t["flagged"].tolist() == [True, False, False, False]
    assert t["p_model_majority"].tolist() == pytest.approx([sig(-4), sig(-2), sig(4), 0.5], rel=1e-5)
    assert t["confidence"].tolist() == pytest.approx([binom_cdf(20, 26), 0.75, binom_cdf(20, 26), 0.5])
    assert t["majority"].tolist() == ["0", "0", "0", "tie"]
    assert t["majority_share"].tolist() == pytest.approx([0.8, 1.0, 0.8, 0.5])
    assert out.read_text().splitlines()[0].startswith("row,image_0,image_1")
    # a lower confidence bar also flags the single-vote pair
    t2 = audit(kit.make_scorer(bt_scale=5.0), audit_manifest, min_confidence=0.7)
    assert t2.loc[t2["flagged"], "row"].tolist() == [2, 3]


def test_audit_ensemble_columns(audit_manifest, kit):
    t = audit(kit.make_scorer(), audit_manifest, ensemble=4, seed=1)
    for col in ("ens_margin_mean", "ens_margin_std", "ens_p_majority", "ens_flagged"):
        assert col in t.columns
    assert (t["ens_margin_std"] >= 0).all()
    again = audit(kit.make_scorer(), audit_manifest, ensemble=4, seed=1)
    assert np.allclose(t["ens_margin_mean"], again["ens_margin_mean"])


def test_ensemble_margins_learn_a_linear_preference():
    # utility u = x . w_true; pair features x0 - x1; labels from the sign: the out-of-bag margins agree in sign
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    mean, std = ensemble_margins(x, y, np.ones(60, dtype=bool), k=5, seed=0)
    assert np.mean((mean > 0) == (y == 1)) > 0.9
    assert std.shape == (60,) and np.all(std >= 0)
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_margins(x, y, np.zeros(60, dtype=bool), k=3)
