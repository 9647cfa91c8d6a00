"""Preference losses: pure tensor functions (no Lightning), one per method. See REFERENCE.md.

Scores `s0`, `s1` are the model's scalar rewards for image 0 and image 1 of each pair ([P] tensors).
`votes` is [P, 3]: (votes_0, votes_1, votes_tie) as in the canonical manifest.

Every loss in `LOSSES` is also reachable through one adapter signature, `loss(s0, s1, votes, **kw) -> scalar`,
which is what the LightningModule calls; the functions themselves take the natural arguments of each method.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# The GPM form lives in scorers (the GPM head needs it; scorers never import train); re-exported here.
from imgpref.scorers.gpm import gpm_score  # noqa: F401


def vote_fraction(votes: Tensor) -> Tensor:
    """q = (votes_0 + 0.5 * votes_tie) / n, the empirical P(image 0 preferred), ties split evenly."""
    votes = votes.to(torch.get_default_dtype() if not votes.is_floating_point() else votes.dtype)
    n = votes.sum(-1)
    if bool((n <= 0).any()):
        raise ValueError("every pair needs at least one vote; found a pair with 0 votes (run `imgpref data validate`)")
    return (votes[..., 0] + 0.5 * votes[..., 2]) / n


def _reduce(per_pair: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return per_pair.mean()
    weights = weights.to(per_pair)
    return (per_pair * weights).sum() / weights.sum().clamp_min(1e-12)


def bt_hard(s0: Tensor, s1: Tensor, label: Tensor, weights: Tensor | None = None) -> Tensor:
    """Bradley-Terry on hard labels: -log sigmoid(s_winner - s_loser). `label` is 1 where image 0 won, else 0."""
    sign = label.to(s0.dtype) * 2 - 1
    return _reduce(-F.logsigmoid(sign * (s0 - s1)), weights)


def bt_soft(s0: Tensor, s1: Tensor, q: Tensor, weights: Tensor | None = None) -> Tensor:
    """Bradley-Terry on soft labels: -(q log p + (1 - q) log(1 - p)), p = sigmoid(s0 - s1).

    Written with logsigmoid (log(1 - sigmoid(d)) = logsigmoid(-d)) so large margins do not produce inf.
    """
    d = s0 - s1
    q = q.to(d.dtype)
    return _reduce(-(q * F.logsigmoid(d) + (1 - q) * F.logsigmoid(-d)), weights)


def davidson_log_probs(s0: Tensor, s1: Tensor, log_nu: Tensor | float) -> Tensor:
    """Log-probabilities [P, 3] of (0 wins, 1 wins, tie) under Davidson's model.

    P(0>1) ∝ e^{s0}, P(1>0) ∝ e^{s1}, P(tie) ∝ nu * e^{(s0+s1)/2}.
    """
    log_nu = torch.as_tensor(log_nu, dtype=s0.dtype, device=s0.device)
    logits = torch.stack([s0, s1, log_nu + 0.5 * (s0 + s1)], dim=-1)
    return torch.log_softmax(logits, dim=-1)


def davidson(s0: Tensor, s1: Tensor, votes: Tensor, log_nu: Tensor | float, weights: Tensor | None = None) -> Tensor:
    """Davidson tie model: negative log-likelihood of the vote counts, averaged per vote.

    Per vote (not per pair) so that a pair with 25 votes weighs 25 times a pair with 1, as the likelihood says.
    `weights` multiplies each pair's votes.
    """
    votes = votes.to(s0.dtype)
    nll = -(votes * davidson_log_probs(s0, s1, log_nu)).sum(-1)
    n = votes.sum(-1)
    if weights is not None:
        nll, n = nll * weights.to(nll), n * weights.to(n)
    return nll.sum() / n.sum().clamp_min(1e-12)


def pickscore_ce(
    s0: Tensor, s1: Tensor, target: Tensor, weights: Tensor | None = None, tie_offset: bool = False
) -> Tensor:
    """PickScore's loss: cross-entropy of softmax([s0, s1]) against target (1,0), (0,1) or (0.5,0.5).

    `tie_offset` adds log 0.5 for tied examples (as the original does) so a perfect tie reaches 0; it shifts the
    value and leaves the gradient unchanged. `weights`: per-example weights, e.g. `prompt_weights(prompts)`.
    """
    target = target.to(s0.dtype)
    logp = torch.log_softmax(torch.stack([s0, s1], dim=-1), dim=-1)
    per = -(target * logp).sum(-1)
    if tie_offset:
        tie = (target[:, 0] == 0.5) & (target[:, 1] == 0.5)
        per = per + tie.to(per.dtype) * math.log(0.5)
    return _reduce(per, weights)


def prompt_weights(prompts: Sequence[str]) -> Tensor:
    """1 / (number of examples of that prompt in the batch/dataset), PickScore's per-prompt balancing."""
    counts: dict[str, int] = {}
    for p in prompts:
        counts[p] = counts.get(p, 0) + 1
    return torch.tensor([1.0 / counts[p] for p in prompts])


def plackett_luce(scores: Tensor, order: Tensor) -> Tensor:
    """Plackett-Luce NLL of one ranking: -sum_k log softmax(r over items not yet placed)[item placed at k].

    `order[k]` is the index of the item ranked k-th (best first). Ties in a ranking are broken as given.
    """
    r = scores[order]
    # log-sum-exp over the items still in the pool at step k = reverse cumulative logsumexp
    tail = torch.logcumsumexp(r.flip(0), dim=0).flip(0)
    return (tail - r).sum()


def plackett_luce_batch(scores: Tensor, order: Tensor, mask: Tensor) -> Tensor:
    """Plackett-Luce over padded groups: scores/order/mask are [G, N]; mask marks real items in `order`.

    Padded slots must come last in each row of `order`. Returns the mean NLL per group.
    """
    r = torch.gather(scores, 1, order)
    r = torch.where(mask, r, torch.full_like(r, -torch.inf))
    tail = torch.logcumsumexp(r.flip(1), dim=1).flip(1)
    per = torch.where(mask, tail - r, torch.zeros_like(r)).sum(1)
    return per.mean()


def gpm_prob(va: Tensor, vb: Tensor) -> Tensor:
    """P(a > b) = sigmoid(s(a, b))."""
    return torch.sigmoid(gpm_score(va, vb))


def gpm_loss(va: Tensor, vb: Tensor, q: Tensor, weights: Tensor | None = None) -> Tensor:
    """Soft-target BCE of the GPM probability; BT is the special case v = (r, 1)."""
    s = gpm_score(va, vb)
    return bt_soft(s, torch.zeros_like(s), q, weights)


def vote_weights(votes: Tensor, kind: str = "margin") -> Tensor:
    """Per-pair label confidence from vote counts, for down-weighting noisy pairs.

    "margin": |2q - 1| (0 for a 50/50 pair, 1 for a unanimous one); "n": number of votes; "none": ones.
    """
    if kind == "margin":
        return (2 * vote_fraction(votes) - 1).abs()
    if kind == "n":
        return votes.to(torch.get_default_dtype()).sum(-1)
    if kind == "none":
        return torch.ones(votes.shape[0])
    raise ValueError(f"unknown vote weighting {kind!r}; use 'margin', 'n' or 'none'")


# --- uniform adapters: loss(s0, s1, votes, **kw) -------------------------------------------------------------
def _hard_label(votes: Tensor) -> tuple[Tensor, Tensor]:
    """Majority label and a mask that drops exact 50/50 pairs (which have no hard label)."""
    q = vote_fraction(votes)
    return (q > 0.5).to(torch.long), q != 0.5


def _adapt_bt_hard(s0: Tensor, s1: Tensor, votes: Tensor, weights: Tensor | None = None, **_: object) -> Tensor:
    label, keep = _hard_label(votes)
    if not bool(keep.any()):
        return (s0 - s1).sum() * 0.0  # keeps the graph; nothing to learn from a batch of 50/50 pairs
    w = None if weights is None else weights[keep]
    return bt_hard(s0[keep], s1[keep], label[keep], w)


def _adapt_bt_soft(s0: Tensor, s1: Tensor, votes: Tensor, weights: Tensor | None = None, **_: object) -> Tensor:
    return bt_soft(s0, s1, vote_fraction(votes), weights)


def _adapt_davidson(
    s0: Tensor, s1: Tensor, votes: Tensor, weights: Tensor | None = None, log_nu: Tensor | float = 0.0, **_: object
) -> Tensor:
    return davidson(s0, s1, votes, log_nu, weights)


def _adapt_pickscore(
    s0: Tensor, s1: Tensor, votes: Tensor, weights: Tensor | None = None, tie_offset: bool = False, **_: object
) -> Tensor:
    q = vote_fraction(votes)
    # hard winner -> (1,0)/(0,1); a pair without a majority -> (0.5, 0.5), as PickScore encodes ties
    t0 = torch.where(q > 0.5, 1.0, torch.where(q < 0.5, 0.0, 0.5)).to(s0.dtype)
    return pickscore_ce(s0, s1, torch.stack([t0, 1 - t0], -1), weights, tie_offset)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "bt_hard": _adapt_bt_hard,
    "bt_soft": _adapt_bt_soft,
    "davidson": _adapt_davidson,
    "pickscore": _adapt_pickscore,
}


def get_loss(name: str) -> Callable[..., Tensor]:
    """Adapter `loss(s0, s1, votes, weights=None, **kw)` by name. (Plackett-Luce and GPM take other inputs.)"""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)} (or plackett_luce / gpm)") from None
