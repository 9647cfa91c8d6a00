"""GPM and pluralistic preference heads: hand-computed values, BT special case, cycles, annotator fitting."""
from __future__ import annotations

import math

import pytest
import torch

from imgpref.scorers.gpm import gpm_anchor, gpm_score
from imgpref.scorers.pref_heads import GPMHead, PluralisticHead, fit_new_annotator, pair_margin
from imgpref.train.losses import bt_soft, gpm_loss

torch.set_num_threads(1)  # tiny tensors: extra threads only add overhead


def _identity_gpm(dim: int) -> GPMHead:
    """A GPM head whose preference vector is the raw embedding (no normalisation), for hand computation."""
    head = GPMHead(dim, k=dim // 2, normalize=False)
    with torch.no_grad():
        head.layers[-1].weight.copy_(torch.eye(dim))
        head.layers[-1].bias.zero_()
    return head


def test_losses_reexport_the_shared_gpm_form():
    import imgpref.train.losses as losses

    assert losses.gpm_score is gpm_score


def test_gpm_head_is_antisymmetric_and_probabilities_sum_to_one():
    torch.manual_seed(0)
    head = GPMHead(12, k=3, hidden=(16,))
    for p in head.parameters():  # move away from the BT initialisation so the test covers the general case
        torch.nn.init.normal_(p, std=0.5)
    a, b = torch.randn(7, 12), torch.randn(7, 12)
    s_ab, s_ba = head.pair_logit(a, b), head.pair_logit(b, a)
    torch.testing.assert_close(s_ab, -s_ba)
    torch.testing.assert_close(head.pair_logit(a, a), torch.zeros(7), atol=1e-6, rtol=0)
    torch.testing.assert_close(head.prob(a, b) + head.prob(b, a), torch.ones(7))
    assert head.vectors(a).shape == (7, 6)


def test_gpm_head_hand_computed_cycle():
    # v = embedding = unit vectors at 0, 120, 240 degrees: s(a, b) = a0 b1 - a1 b0 = sin(theta_b - theta_a)
    head = _identity_gpm(2)
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    e = torch.stack([ang.cos(), ang.sin()], -1)
    s = head.pair_logit(e[[0, 1, 2]], e[[1, 2, 0]])  # a vs b, b vs c, c vs a
    torch.testing.assert_close(s, torch.full((3,), math.sqrt(3) / 2))  # a > b > c > a: a cycle
    # forward = s(v, anchor (0, 1)) = v[0]: cos of each angle
    torch.testing.assert_close(head(e), torch.tensor([1.0, -0.5, -0.5]))


def test_gpm_head_learns_a_cycle_that_bt_cannot():
    torch.manual_seed(0)
    e = torch.eye(3)  # three items, one-hot embeddings
    a, b = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])
    q = torch.ones(3)  # a always beats b: a perfect rock-paper-scissors cycle
    head = GPMHead(3, k=1, normalize=False)
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        gpm_loss(head.vectors(e[a]), head.vectors(e[b]), q).backward()
        opt.step()
    assert bool((head.prob(e[a], e[b]) > 0.9).all())
    # any scalar reward puts at least one pair of the cycle at P <= 0.5
    r = head(e).detach()
    assert bool((torch.sigmoid(r[a] - r[b]) <= 0.5).any())


def test_gpm_bt_special_case_at_initialisation():
    torch.manual_seed(1)
    head = GPMHead(8, k=2, normalize=False)  # initialised as exact BT: odd coordinates == 1
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    va, vb = head.vectors(a), head.vectors(b)
    torch.testing.assert_close(va[:, 1::2], torch.ones(5, 2))
    r_a, r_b = va[:, 0::2].sum(-1), va[:, 0::2].sum(-1) * 0 + vb[:, 0::2].sum(-1)
    torch.testing.assert_close(head(a), r_a)
    torch.testing.assert_close(head.pair_logit(a, b), r_a - r_b)
    torch.testing.assert_close(head(a) - head(b), head.pair_logit(a, b))
    q = torch.rand(5)
    torch.testing.assert_close(gpm_loss(va, vb, q), bt_soft(r_a, r_b, q))


def test_gpm_anchor_and_validation():
    torch.testing.assert_close(gpm_anchor(4), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="even dimension"):
        gpm_anchor(3)
    with pytest.raises(ValueError, match="k"):
        GPMHead(4, k=0)


def _pluralistic(weights: torch.Tensor, annotators=(), logits=None) -> PluralisticHead:
    """Prototype k's reward = weights[k] . embedding (no normalisation, no bias)."""
    k, d = weights.shape
    head = PluralisticHead(d, n_prototypes=k, annotators=annotators, normalize=False)
    with torch.no_grad():
        head.layers[-1].weight.copy_(weights)
        head.layers[-1].bias.zero_()
        if logits is not None:
            head.annotator_logits.copy_(logits)
    return head


def test_pluralistic_mixture_weights_population_and_unknown_annotators():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    big = 50.0  # softmax of (50, 0, 0) is (1, 0, 0) to float precision
    head = _pluralistic(w, annotators=["ann", "bob"], logits=torch.tensor([[big, 0, 0], [0, big, 0]]))
    e = torch.tensor([[2.0, 3.0], [1.0, -1.0]])  # prototype rewards: [[2, 3, 5], [1, -1, 0]]
    torch.testing.assert_close(head.prototype_scores(e), torch.tensor([[2.0, 3.0, 5.0], [1.0, -1.0, 0.0]]))
    torch.testing.assert_close(head(e, annotators=["ann", "bob"]), torch.tensor([2.0, -1.0]))
    # population = mean of the annotators' weights = (0.5, 0.5, 0); unknown / empty / None annotators use it
    torch.testing.assert_close(head.population_weights(), torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(head(e), torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(head(e, annotators=["zoe", None]), torch.tensor([2.5, 0.0]))
    torch.testing.assert_close(head(e, annotators=["", "ann"]), torch.tensor([2.5, 1.0]))
    # no known annotator: uniform weights
    torch.testing.assert_close(_pluralistic(w)(e), torch.tensor([10 / 3, 0.0]))
    with pytest.raises(ValueError, match="one per row"):
        head(e, annotators=["ann"])
    with pytest.raises(ValueError, match="unique"):
        PluralisticHead(2, annotators=["a", "a"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_new_annotator_recovers_their_prototype_from_20_pairs(seed):
    g = torch.Generator().manual_seed(seed)
    d, k = 12, 3
    protos = torch.linalg.qr(torch.randn(d, k, generator=g))[0].T * 3.0  # orthogonal prototype directions
    head = _pluralistic(protos)
    for follows in range(k):
        e0, e1 = torch.randn(20, d, generator=g), torch.randn(20, d, generator=g)
        p = torch.sigmoid((e0 - e1) @ protos[follows])
        label = (torch.rand(20, generator=g) < p).float()  # one vote per pair, sampled from the prototype
        votes = torch.stack([label, 1 - label, torch.zeros(20)], -1)
        w = fit_new_annotator(head, (e0, e1), votes, name=f"new{follows}")
        assert int(w.argmax()) == follows, (seed, follows, w)
        assert float(w[follows]) > 0.6
        torch.testing.assert_close(w.sum(), torch.tensor(1.0))
        # the annotator was added with exactly these weights
        torch.testing.assert_close(head.annotator_weights([f"new{follows}"])[0], w)
    assert head.annotators == ["new0", "new1", "new2"]


def test_fit_new_annotator_validates_input():
    head = _pluralistic(torch.eye(2))
    e = torch.randn(4, 2)
    with pytest.raises(ValueError, match="at least one vote"):
        fit_new_annotator(head, (e, e), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="votes must be"):
        fit_new_annotator(head, (e, e), torch.ones(4, 2))
    with pytest.raises(ValueError, match="emb_pairs"):
        fit_new_annotator(head, torch.randn(4, 3, 2), torch.ones(4))
    head.add_annotator("x")
    with pytest.raises(ValueError, match="already known"):
        head.add_annotator("x")


def test_pluralistic_head_trains_per_annotator_tastes_with_a_bt_loss():
    # two annotators with opposite tastes: one scalar reward cannot serve both, a 2-prototype mixture can
    torch.manual_seed(0)
    d = 6
    taste = torch.randn(d)
    e0, e1 = torch.randn(400, d), torch.randn(400, d)
    who = ["x" if i % 2 == 0 else "y" for i in range(400)]
    sign = torch.tensor([1.0 if a == "x" else -1.0 for a in who])
    q = torch.sigmoid(3 * sign * ((e0 - e1) @ taste))
    head = PluralisticHead(d, n_prototypes=2, annotators=["x", "y"], normalize=False)
    with torch.no_grad():
        head.annotator_logits.normal_(0, 0.5)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        bt_soft(head(e0, annotators=who), head(e1, annotators=who), q).backward()
        opt.step()
    with torch.no_grad():
        pred = head(e0, annotators=who) > head(e1, annotators=who)
    assert float((pred == (q > 0.5)).float().mean()) > 0.9


@pytest.mark.parametrize("kind", ["gpm", "pluralistic"])
def test_pref_heads_round_trip_through_a_scorer_folder(tmp_path, kind):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.folder import load_scorer_folder, save_scorer
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, name = tiny_open_clip_model(seed=0)
    bb = OpenClipBackbone.from_model(model, name)
    torch.manual_seed(3)
    if kind == "gpm":
        head = GPMHead(bb.embed_dim, k=2, hidden=(8,))
    else:
        head = PluralisticHead(bb.embed_dim, n_prototypes=3, annotators=["a", "b"])
        fit_new_annotator(head, (torch.randn(5, bb.embed_dim), torch.randn(5, bb.embed_dim)), torch.ones(5),
                          name="c")
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    scorer = Scorer(bb, head, ScorerInfo(name=f"tiny-{kind}"))
    pixels = torch.rand(2, 3, 32, 32)
    loaded = load_scorer_folder(save_scorer(scorer, tmp_path / kind))
    assert type(loaded.head) is type(head) and loaded.head.describe() == head.describe()
    torch.testing.assert_close(loaded.score(pixels), scorer.score(pixels))


def test_pair_margin_dispatches_per_head_type():
    from imgpref.scorers.heads import LinearHead

    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    gpm = GPMHead(6, k=3)
    for p in gpm.parameters():
        torch.nn.init.normal_(p, std=0.5)
    torch.testing.assert_close(pair_margin(gpm, a, b), gpm.pair_logit(a, b))
    lin = LinearHead(6)
    torch.testing.assert_close(pair_margin(lin, a, b), lin(a) - lin(b))
    plu = _pluralistic(torch.eye(6)[:2], annotators=["x"], logits=torch.tensor([[50.0, 0.0]]))
    torch.testing.assert_close(pair_margin(plu, a, b, annotators=["x"] * 4), a[:, 0] - b[:, 0])


def test_pref_head_types_are_known_to_the_registry_in_a_fresh_process():
    import subprocess
    import sys

    code = ("from imgpref.scorers.heads import build_head, registered_heads; "
            "assert {'gpm', 'pluralistic'} <= set(registered_heads()); "
            "print(type(build_head({'type': 'gpm', 'input_dim': 4, 'k': 1})).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "GPMHead"
