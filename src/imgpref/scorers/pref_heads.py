"""Preference heads beyond one scalar: the General Preference Model (intransitive) and pluralistic mixtures.

Both are ordinary `Head`s (so a scorer folder stores and rebuilds them; types "gpm" and "pluralistic"), and
both still give one scalar per image through `forward` (documented on each class). What the model predicts is
richer, and training, `imgpref eval` and `imgpref score` use it: `item_outputs` (per image) and
`pair_logit_from_outputs` (per pair, per annotator) give the same logit as `pair_margin`; `borda_scores` ranks
a set of images with a pairwise head; `per_image_scorers` says what `imgpref score` / `compare` may write.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgpref.scorers.base import Head
from imgpref.scorers.gpm import gpm_anchor, gpm_score
from imgpref.scorers.heads import _check_prompt, _combine, _normalize, register_head


def _trunk(width: int, hidden: Sequence[int], dropout: float, out: int) -> tuple[nn.Sequential, nn.Linear]:
    """[Linear, GELU, Dropout] x len(hidden), then Linear(., out); returns (the whole stack, the last Linear)."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.GELU(), nn.Dropout(dropout)]
        width = int(h)
    last = nn.Linear(width, out)
    layers.append(last)
    return nn.Sequential(*layers), last


class _EmbeddingHead(Head):
    """Shared input handling: optional L2 normalisation and prompt conditioning (none / concat / product)."""

    def __init__(self, input_dim: int, normalize: bool, prompt: str):
        super().__init__()
        self.input_dim, self.normalize, self.prompt = int(input_dim), bool(normalize), _check_prompt(prompt)
        self.needs_text = self.prompt != "none"
        self.in_width = self.input_dim * (2 if self.prompt == "concat" else 1)

    def _features(self, img_emb: Tensor, txt_emb: Tensor | None) -> Tensor:
        if self.normalize:
            img_emb = _normalize(img_emb)
            txt_emb = _normalize(txt_emb) if txt_emb is not None else None
        return _combine(img_emb, txt_emb, self.prompt)


@register_head("gpm")
class GPMHead(_EmbeddingHead):
    """General Preference Model head: embedding -> v in R^{2k}; P(a > b) = sigmoid(s(v_a, v_b)).

    `pair_logit(a, b)` is the model's actual preference logit s(a, b) (antisymmetric; can be cyclic).

    `forward` (the scalar `Scorer.score` returns) is s(v_a, u) with the fixed anchor u = (0, 1, 0, 1, ...), i.e.
    `sum_l v_a[2l]`: the logit of "a beats the reference item u". It is the BT-compatible component: when the
    model is Bradley-Terry (every odd coordinate v[2l+1] = 1), `forward(a) - forward(b) == pair_logit(a, b)`
    exactly; in general the difference of scalars ignores the intransitive part and is not even identifiable
    (a reparametrisation with the same s(a, b) reorders it). `imgpref eval` therefore evaluates `pair_logit`,
    and `imgpref score` ranks images of a set by their Borda score (`borda_scores`), never by this scalar.

    Defaults (k = 2, normalize = False) can learn cycles; with normalize = True or k = 1 training from the BT
    initialisation was seen to learn no cycle at all (the recipe checker warns).

    The last layer starts as exact BT (odd outputs: weight 0, bias 1), so training departs from a scalar
    reward only where the data need intransitivity.
    """

    def __init__(self, input_dim: int, k: int = 2, hidden: Sequence[int] = (), dropout: float = 0.0,
                 normalize: bool = False, prompt: str = "none"):
        super().__init__(input_dim, normalize, prompt)
        if int(k) < 1:
            raise ValueError(f"GPMHead k (number of 2-d blocks) must be >= 1; got {k}")
        self.k, self.hidden, self.dropout = int(k), [int(h) for h in hidden], float(dropout)
        self.layers, last = _trunk(self.in_width, self.hidden, self.dropout, 2 * self.k)
        with torch.no_grad():
            last.weight[1::2].zero_()
            last.bias[1::2].fill_(1.0)
        self.register_buffer("anchor", gpm_anchor(2 * self.k), persistent=False)

    def vectors(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        """[B, D] (+ [B, D] text) -> preference vectors v [B, 2k]."""
        return self.layers(self._features(img_emb, txt_emb))

    def pair_logit(self, img_a: Tensor, img_b: Tensor, txt_a: Tensor | None = None,
                   txt_b: Tensor | None = None) -> Tensor:
        """s(a, b) [P] for image embeddings [P, D] of a and b (text: the pair's prompt embedding, both sides)."""
        return gpm_score(self.vectors(img_a, txt_a), self.vectors(img_b, txt_b if txt_b is not None else txt_a))

    def prob(self, img_a: Tensor, img_b: Tensor, txt_a: Tensor | None = None, txt_b: Tensor | None = None) -> Tensor:
        """P(a > b) = sigmoid(s(a, b))."""
        return torch.sigmoid(self.pair_logit(img_a, img_b, txt_a, txt_b))

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        v = self.vectors(img_emb, txt_emb)
        return gpm_score(v, self.anchor.to(v.dtype).expand_as(v))

    def describe(self) -> dict[str, Any]:
        return {"type": "gpm", "input_dim": self.input_dim, "k": self.k, "hidden": self.hidden,
                "dropout": self.dropout, "normalize": self.normalize, "prompt": self.prompt}


@register_head("pluralistic")
class PluralisticHead(_EmbeddingHead):
    """K prototype rewards r_1..r_K and, per known annotator a, mixture weights w_a = softmax(logits_a).

    An annotator's reward is `sum_k w_a[k] r_k(x)`, so every BT-style loss applies to it unchanged
    (`forward(emb, annotators=[...])` gives one score per row for the annotator of that row).

    `forward` without annotators (what a Scorer reports) and rows whose annotator is unknown (None, "" or a
    name not in `annotators`) use the population mixture: the mean of the known annotators' weights (each
    annotator counts once; only those of `population_annotators` when it is set), or uniform weights when the
    head knows no annotator (or `population="uniform"`).
    A new annotator is fitted from a few pairs with `fit_new_annotator`, which estimates only their K weights;
    `imgpref annotator fit` then sets `population_annotators` to the earlier annotators, so adding someone does
    not move everyone's default score.
    """

    def __init__(self, input_dim: int, n_prototypes: int = 4, annotators: Sequence[str] = (),
                 hidden: Sequence[int] = (), dropout: float = 0.0, normalize: bool = True, prompt: str = "none",
                 population: str = "mean", population_annotators: Sequence[str] | None = None):
        super().__init__(input_dim, normalize, prompt)
        if int(n_prototypes) < 1:
            raise ValueError(f"PluralisticHead n_prototypes must be >= 1; got {n_prototypes}")
        if population not in ("mean", "uniform"):
            raise ValueError(f"population must be 'mean' or 'uniform'; got {population!r}")
        names = [str(a) for a in annotators]
        dup = sorted({a for a in names if names.count(a) > 1})
        if dup or "" in names:
            raise ValueError(f"annotator names must be unique and non-empty; got duplicates {dup}" if dup
                             else "annotator names must be non-empty (an empty annotator means 'unknown')")
        self.n_prototypes, self.hidden, self.dropout = int(n_prototypes), [int(h) for h in hidden], float(dropout)
        self.population = population
        self.layers, _ = _trunk(self.in_width, self.hidden, self.dropout, self.n_prototypes)
        self.annotators: list[str] = names
        self._index = {a: i for i, a in enumerate(names)}
        self.annotator_logits = nn.Parameter(torch.zeros(len(names), self.n_prototypes))
        self.population_annotators: list[str] | None = None
        if population_annotators is not None:
            self.set_population(population_annotators)

    def set_population(self, names: Sequence[str] | None) -> None:
        """Base the population mixture on these known annotators only (None: on every known annotator)."""
        if names is None:
            self.population_annotators = None
            return
        names = [str(a) for a in names]
        unknown = [a for a in names if a not in self._index]
        if unknown or not names:
            raise ValueError(f"population annotators must be known annotators; unknown: {unknown or '(empty list)'}"
                             f" (known: {', '.join(self.annotators) or 'none'})")
        self.population_annotators = names

    def prototype_scores(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        """[B, D] -> the K prototype rewards [B, K]."""
        return self.layers(self._features(img_emb, txt_emb))

    def population_weights(self) -> Tensor:
        """Mixture weights [K] for an unknown annotator (see the class docstring)."""
        if self.population == "uniform" or not self.annotators:
            return torch.full((self.n_prototypes,), 1.0 / self.n_prototypes, device=self.annotator_logits.device,
                              dtype=self.annotator_logits.dtype)
        w = torch.softmax(self.annotator_logits, dim=-1)
        if self.population_annotators is not None:
            w = w[[self._index[a] for a in self.population_annotators]]
        return w.mean(0)

    def annotator_weights(self, annotators: Sequence[str | None]) -> Tensor:
        """Mixture weights [B, K], one row per entry of `annotators` (unknown -> population weights)."""
        rows = [self._index.get(a, -1) if a else -1 for a in annotators]
        idx = torch.tensor(rows, dtype=torch.long, device=self.annotator_logits.device)
        pop = self.population_weights().unsqueeze(0).expand(len(rows), -1)
        if not self.annotators:
            return pop
        known = torch.softmax(self.annotator_logits, dim=-1)[idx.clamp_min(0)]
        return torch.where((idx >= 0).unsqueeze(-1), known, pop)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None,
                annotators: Sequence[str | None] | None = None) -> Tensor:
        r = self.prototype_scores(img_emb, txt_emb)
        if annotators is None:
            return r @ self.population_weights().to(r.dtype)
        if len(annotators) != r.shape[0]:
            raise ValueError(f"got {len(annotators)} annotators for {r.shape[0]} embeddings; pass one per row")
        return (r * self.annotator_weights(annotators).to(r.dtype)).sum(-1)

    def add_annotator(self, name: str, logits: Tensor | None = None) -> int:
        """Append annotator `name` (mixture logits, default 0 = uniform); returns its row.

        Replaces the `annotator_logits` parameter: rebuild any optimizer that holds the old one.
        """
        name = str(name)
        if not name:
            raise ValueError("annotator name must be non-empty")
        if name in self._index:
            raise ValueError(f"annotator {name!r} is already known (row {self._index[name]})")
        old = self.annotator_logits.data
        row = torch.zeros(1, self.n_prototypes, dtype=old.dtype, device=old.device)
        if logits is not None:
            row[0] = logits.detach().to(row)
        self.annotator_logits = nn.Parameter(torch.cat([old, row]))
        self.annotators.append(name)
        self._index[name] = len(self.annotators) - 1
        return self._index[name]

    def describe(self) -> dict[str, Any]:
        return {"type": "pluralistic", "input_dim": self.input_dim, "n_prototypes": self.n_prototypes,
                "annotators": list(self.annotators), "hidden": self.hidden, "dropout": self.dropout,
                "normalize": self.normalize, "prompt": self.prompt, "population": self.population,
                **({"population_annotators": list(self.population_annotators)}
                   if self.population_annotators is not None else {})}


def pair_margin(head: Head, img_a: Tensor, img_b: Tensor, txt_a: Tensor | None = None,
                txt_b: Tensor | None = None, annotators: Sequence[str | None] | None = None) -> Tensor:
    """The preference logit of a over b [P] for any head: what a pairwise loss should see.

    GPM: `pair_logit` (the full, possibly intransitive model; the difference of `forward` scalars would only
    train its transitive component). Pluralistic: the difference of the rows' annotator rewards (population
    mixture when `annotators` is None). Any other head: `head(a) - head(b)`.
    """
    if isinstance(head, GPMHead):
        return head.pair_logit(img_a, img_b, txt_a, txt_b)
    tb = txt_b if txt_b is not None else txt_a
    if isinstance(head, PluralisticHead):
        return head(img_a, txt_a, annotators) - head(img_b, tb, annotators)
    return head(img_a, txt_a) - head(img_b, tb)


def item_outputs(head: Head, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
    """What a head knows about each item on its own [B, m], from which every pair logit follows
    (`pair_logit_from_outputs`): GPM: the preference vectors v [B, 2k]; pluralistic: the K prototype rewards
    [B, K]; any other head: its scalar score [B, 1]."""
    if isinstance(head, GPMHead):
        return head.vectors(img_emb, txt_emb)
    if isinstance(head, PluralisticHead):
        return head.prototype_scores(img_emb, txt_emb)
    return head(img_emb, txt_emb).reshape(-1, 1)


def pair_logit_from_outputs(head: Head, out_a: Tensor, out_b: Tensor,
                            annotators: Sequence[str | None] | None = None) -> Tensor:
    """The preference logit of a over b [P] from `item_outputs` of both sides: the same value as `pair_margin`
    on the embeddings (GPM s(a, b); pluralistic: the row's annotator mixture of the prototype differences,
    population mixture when `annotators` is None; otherwise the score difference)."""
    if isinstance(head, GPMHead):
        return gpm_score(out_a, out_b)
    if isinstance(head, PluralisticHead):
        diff = out_a - out_b
        if annotators is None:
            return diff @ head.population_weights().to(diff)
        if len(annotators) != diff.shape[0]:
            raise ValueError(f"got {len(annotators)} annotators for {diff.shape[0]} pairs; pass one per pair")
        return (diff * head.annotator_weights(annotators).to(diff)).sum(-1)
    return (out_a - out_b)[..., 0]


def item_scores_from_outputs(head: Head, outputs: Tensor,
                             annotators: Sequence[str | None] | None = None) -> Tensor:
    """One scalar per item [N] where the head defines one: the (annotator's or population) mixture reward of a
    pluralistic head, the score of a scalar head. A GPM head has no identifiable per-item score: ValueError
    (rank its items with `borda_scores` instead)."""
    if isinstance(head, GPMHead):
        raise ValueError("a GPM (pairwise) head has no per-image score; rank a set of images with borda_scores")
    if isinstance(head, PluralisticHead):
        w = (head.population_weights().unsqueeze(0).expand(outputs.shape[0], -1) if annotators is None
             else head.annotator_weights(annotators))
        return (outputs * w.to(outputs)).sum(-1)
    return outputs[..., 0]


def borda_scores(head: Head, outputs: Tensor, scale: float = 1.0,
                 annotators: Sequence[str | None] | None = None) -> Tensor:
    """Borda score of each item of a set [N]: its mean probability sigmoid(scale * s(i, j)) of beating each
    other item j of the same set (0.5 for a set of one). The documented ranking of a pairwise (GPM) head within a
    set (a folder, a group): unlike the GPM head's `forward` scalar it depends only on the model's pair
    probabilities, so every parametrisation with the same s(a, b) ranks alike. `annotators` (one name for the
    whole set, repeated) selects a pluralistic head's mixture."""
    n = outputs.shape[0]
    if n < 2:
        return torch.full((n,), 0.5, dtype=outputs.dtype, device=outputs.device)
    ia, ib = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    ia, ib = ia.reshape(-1), ib.reshape(-1)
    ann = None if annotators is None else [annotators[0]] * ia.numel()
    p = torch.sigmoid(float(scale) * pair_logit_from_outputs(head, outputs[ia], outputs[ib], ann)).reshape(n, n)
    p = p * (1 - torch.eye(n, dtype=p.dtype, device=p.device))
    return p.sum(1) / (n - 1)


def _pair_targets(votes: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(q, n_votes) from votes [P, 3] (counts) or [P] (P(first preferred): hard 1/0 or fractions)."""
    votes = torch.as_tensor(votes, dtype=torch.float32)
    if votes.ndim == 2 and votes.shape[-1] == 3:
        total = votes.sum(-1)
        if bool((total <= 0).any()):
            raise ValueError("every pair needs at least one vote; found a pair with 0 votes")
        return (votes[:, 0] + 0.5 * votes[:, 2]) / total, total
    if votes.ndim == 1 and votes.shape[0] == n:
        if bool(((votes < 0) | (votes > 1)).any()):
            raise ValueError("1-d votes are P(first image preferred) and must lie in [0, 1]")
        return votes, torch.ones_like(votes)
    raise ValueError(f"votes must be [P, 3] counts (votes_0, votes_1, votes_tie) or [P] fractions; got "
                     f"{tuple(votes.shape)} for {n} pairs")


def fit_new_annotator(
    head: PluralisticHead,
    emb_pairs: tuple[Tensor, Tensor] | Tensor,
    votes: Tensor,
    *,
    txt: Tensor | None = None,
    name: str | None = None,
    l2: float = 0.01,
    max_iter: int = 100,
) -> Tensor:
    """Estimate a new annotator's K mixture weights from a few of their pairs; everything else stays frozen.

    emb_pairs: (emb_0 [P, D], emb_1 [P, D]) or [P, 2, D] image embeddings of each pair; votes: [P, 3] counts
    or [P] P(image 0 preferred). txt: the pairs' prompt embeddings [P, D] for prompt-conditioned heads.
    Maximises the annotator's Bradley-Terry likelihood (soft targets, each pair weighted by its vote count) of
    the mixture reward over the mixture logits, with an L2 pull of `l2` towards uniform weights (a prior that
    keeps a handful of pairs from producing extreme weights). With `name`, the annotator is added to `head`.
    Returns the weights [K] (they sum to 1).
    """
    if isinstance(emb_pairs, (tuple, list)):
        e0, e1 = emb_pairs
    else:
        if emb_pairs.ndim != 3 or emb_pairs.shape[1] != 2:
            raise ValueError(f"emb_pairs must be (emb_0, emb_1) or [P, 2, D]; got {tuple(emb_pairs.shape)}")
        e0, e1 = emb_pairs[:, 0], emb_pairs[:, 1]
    if e0.shape != e1.shape or e0.ndim != 2:
        raise ValueError(f"pair embeddings must both be [P, D]; got {tuple(e0.shape)} and {tuple(e1.shape)}")
    q, n = _pair_targets(votes, e0.shape[0])
    with torch.no_grad():
        d = (head.prototype_scores(e0, txt) - head.prototype_scores(e1, txt)).float().cpu()
    q, n = q.to(d), n.to(d)
    z = torch.zeros(head.n_prototypes, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        s = d @ torch.softmax(z, -1)
        nll = -(n * (q * F.logsigmoid(s) + (1 - q) * F.logsigmoid(-s))).sum() / n.sum()
        loss = nll + float(l2) * (z - z.mean()).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # callers often sit in no_grad / inference code
        opt.step(closure)
    z = z.detach()
    if name is not None:
        head.add_annotator(name, z)
    return torch.softmax(z, -1)


def per_image_scorers(scorers: Sequence[Any], annotator: str | None = None,
                      gpm_ranking: str | None = None, command: str = "score") -> list[Any]:
    """Make loaded scorers say what a per-image score means before `imgpref score` / `compare` write one.

    `annotator`: every pluralistic scorer scores with that annotator's mixture (its population is pinned to
    [annotator]; the scorer is renamed `NAME[annotator=ANN]`, so its fingerprint and output rows differ from the
    population's); ValueError when no scorer is pluralistic or one does not know the annotator.
    A pairwise (GPM) scorer has no identifiable per-image score: ValueError unless `gpm_ranking` is "borda"
    (the Borda score within each folder, `imgpref.eval.scoring.gpm_borda_scores`). Returns the GPM scorers.
    """
    plural = [s for s in scorers if isinstance(getattr(s, "head", None), PluralisticHead)]
    gpm = [s for s in scorers if isinstance(getattr(s, "head", None), GPMHead)]
    if annotator is not None:
        if not plural:
            raise ValueError("--annotator applies to pluralistic scorers; none of the given scorers is one")
        for s in plural:
            if annotator not in s.head.annotators:
                raise ValueError(f"scorer {s.name!r} does not know annotator {annotator!r}; known: "
                                 f"{', '.join(s.head.annotators) or '(none)'} (add one with `imgpref annotator fit`)")
            s.head.set_population([annotator])
            s.info.name = f"{s.info.name}[annotator={annotator}]"
    if gpm and command != "score":
        raise ValueError(f"`imgpref {command}` needs a per-image score and scorer {gpm[0].name!r} has a pairwise "
                         "(GPM) head, which has none: evaluate pairs with `imgpref eval` (its pair probability) or "
                         "rank a folder with `imgpref score --gpm-ranking borda`")
    if gpm and gpm_ranking not in ("borda",):
        raise ValueError(f"scorer {gpm[0].name!r} has a pairwise (GPM) head, which has no per-image score; pass "
                         "--gpm-ranking borda (each image's mean probability of beating the other images of its "
                         "folder), or evaluate pairs with `imgpref eval`" if gpm_ranking is None else
                         f"--gpm-ranking {gpm_ranking!r}: use borda")
    if gpm_ranking is not None and not gpm:
        raise ValueError("--gpm-ranking applies to pairwise (GPM) scorers; none of the given scorers is one")
    return gpm
