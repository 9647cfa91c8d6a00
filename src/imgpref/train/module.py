"""`RewardModelModule`: the LightningModule that trains a Scorer on preference batches.

It only wires things: the scorer (backbone + head), a loss from `imgpref.train.losses` chosen by name, the
training mode (`imgpref.train.modes`), AdamW with linear warmup + cosine decay, and label-preserving
augmentation. Batches come from `imgpref.data.datamodule.PreferenceDataModule`.

Every pair loss sees the model's pair logit d = `pair_margin(head, ...)`: s0 - s1 for scalar heads, the full
(possibly cyclic) s(a, b) for a GPM head, and the difference of the pair's annotator rewards for a pluralistic
head (batches carry `annotators`, one per pair, from the manifest's annotator column). The pickscore loss
weights each pair by 1 / (pairs of its prompt in the whole split) unless `loss.prompt_weighting: false`.

Validation logs `val/nll` (binary cross-entropy of sigmoid(d) against the vote fraction, whatever the
training loss, so runs are comparable and early stopping has one target), `val/acc` (agreement with the vote
majority, 50/50 pairs left out) and `val/loss` (the training loss on val).

Reproducibility: augmentation draws from a generator seeded by (seed, global_step) and the global RNG (dropout)
is reseeded from (seed, epoch) at each epoch start, so a run resumed from an epoch-end checkpoint continues
exactly like an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from imgpref.recipes import signature_keys
from imgpref.scorers.base import Scorer
from imgpref.scorers.pref_heads import GPMHead, PluralisticHead, pair_margin
from imgpref.train import losses as L_
from imgpref.train.modes import apply_mode

PAIR_LOSSES = ("bt_hard", "bt_soft", "davidson", "pickscore")
LISTWISE_LOSSES = ("plackett_luce",)
ALL_LOSSES = PAIR_LOSSES + LISTWISE_LOSSES
# what configure_optimizers reads from the recipe's `optimizer:` section
OPTIMIZER_KEYS = ("lr", "weight_decay", "betas", "eps", "warmup_steps", "warmup_ratio", "min_lr_ratio", "schedule",
                  "max_steps")
SCHEDULES = ("cosine", "constant")
# read by the module itself from `loss:` whatever the loss (pickscore's per-prompt weighting on/off)
_MODULE_LOSS_KEYS = ("prompt_weighting",)
# parameters that are never weight-decayed whatever their shape: decay would pull every annotator's mixture
# toward uniform (softmax of zero logits), i.e. toward the population, which is exactly what the head must not do
_NO_DECAY_NAMES = ("annotator_logits", "positional_embedding")


def check_loss_for_head(loss: str, head_type: str) -> None:
    """ValueError when `loss` cannot train a head of `head_type` properly: Plackett-Luce ranks one scalar per
    item, so it would train a GPM head's non-identifiable scalar and leave a pluralistic head's annotator
    mixtures untouched (every row ranked by the population mixture)."""
    if loss in LISTWISE_LOSSES and head_type in ("gpm", "pluralistic"):
        raise ValueError(f"loss {loss!r} ranks one scalar per image and cannot train a {head_type} head "
                         f"({'its pair logit s(a, b)' if head_type == 'gpm' else 'per-annotator mixtures'}); "
                         "use a pair loss (bt_soft, bt_hard, davidson, pickscore) or a linear/mlp head")


def augment(x: Tensor, gen: torch.Generator, hflip: bool = True, crop_scale: float = 1.0,
            max_shift: float = 0.0) -> Tensor:
    """Label-preserving geometric augmentation of model inputs [N, C, H, W] (no colour changes: colour *is* the
    signal for rendering preferences). Each image gets its own random flip / zoom-in crop (side scale drawn in
    [crop_scale, 1]) / shift, drawn from `gen`; bilinear resampling back to H x W."""
    n = x.shape[0]
    if n == 0 or (not hflip and crop_scale >= 1.0 and max_shift <= 0.0):
        return x
    u = torch.rand(n, 4, generator=gen)
    flip = torch.where(u[:, 0] < 0.5, -1.0, 1.0) if hflip else torch.ones(n)
    scale = crop_scale + (1.0 - crop_scale) * u[:, 1]
    # the crop window stays inside the image: centre offset at most (1 - scale) (in [-1, 1] coordinates)
    room = (1.0 - scale) + max_shift
    tx, ty = (2 * u[:, 2] - 1) * room, (2 * u[:, 3] - 1) * room
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# the recipe's `augment:` keys are augment()'s options
AUGMENT_KEYS = tuple(signature_keys(augment, exclude=("x", "gen")))


def loss_options(name: str) -> tuple[str, ...]:
    """The keys a recipe's `loss:` section may hold besides `name` for loss `name`: the keyword options of its
    adapter in `imgpref.train.losses.LOSSES` (davidson: log_nu, pickscore: tie_offset) plus prompt_weighting."""
    fn = L_.LOSSES.get(name)
    own = signature_keys(fn, exclude=("s0", "s1", "votes", "weights")) if fn is not None else []
    return (*own, *_MODULE_LOSS_KEYS)


class RewardModelModule(L.LightningModule):
    """Train `scorer` with `loss` (bt_soft, bt_hard, davidson, pickscore, plackett_luce).

    optimizer: {lr, weight_decay, betas, eps, warmup_steps | warmup_ratio, min_lr_ratio, schedule: cosine|constant}
    mode: see `imgpref.train.modes.apply_mode`. augment: {hflip, crop_scale, max_shift} (training batches only).
    """

    def __init__(self, scorer: Scorer, loss: str = "bt_soft", *, loss_kwargs: dict | None = None,
                 optimizer: dict | None = None, mode: dict | str = "full", augment: dict | None = None,
                 seed: int = 0):
        super().__init__()
        if loss not in ALL_LOSSES:
            raise ValueError(f"unknown loss {loss!r}; use one of {', '.join(ALL_LOSSES)}")
        head = scorer.head
        check_loss_for_head(loss, "gpm" if isinstance(head, GPMHead) else
                            "pluralistic" if isinstance(head, PluralisticHead) else type(head).__name__)
        self.scorer = scorer
        self.loss_name = loss
        self.loss_kwargs = dict(loss_kwargs or {})
        self.opt_cfg = dict(optimizer or {})
        self.aug_cfg = dict(augment or {})
        self.seed = int(seed)
        self.mode = apply_mode(scorer, mode)
        self._set_train_modes()
        # PickScore weights each example by 1 / (examples of its prompt); on by default for that loss
        self.prompt_weighting = bool(self.loss_kwargs.pop("prompt_weighting", loss == "pickscore"))
        if self.prompt_weighting and loss != "pickscore":
            raise ValueError(f"loss.prompt_weighting applies to the pickscore loss only; remove it for {loss!r}")
        if loss == "davidson":  # the tie propensity is learned with the model
            self.log_nu = nn.Parameter(torch.tensor(float(self.loss_kwargs.pop("log_nu", 0.0))))
        self.save_hyperparameters({"loss": loss, "loss_kwargs": self.loss_kwargs,
                                   "prompt_weighting": self.prompt_weighting, "optimizer": self.opt_cfg,
                                   "mode": self.mode, "augment": self.aug_cfg, "seed": self.seed})

    # --------------------------------------------------------------------------------------------- scoring
    def embeddings(self, batch: dict[str, Any], train: bool = False) -> tuple[Tensor, Tensor | None]:
        """Image and text embeddings ([N, D], [N, D] or None) of the distinct items of a batch (pixels or
        precomputed `emb` / `txt`); text only when the head is prompt-conditioned."""
        scorer = self.scorer
        txt = batch.get("txt")
        if "emb" in batch:
            img = batch["emb"]
        else:
            x = batch["pixels"]
            if train and self.aug_cfg:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.global_step))
                x = augment(x, gen, bool(self.aug_cfg.get("hflip", False)),
                            float(self.aug_cfg.get("crop_scale", 1.0)), float(self.aug_cfg.get("max_shift", 0.0)))
            img = scorer.embed_images(x)
        if not scorer.head.needs_text:
            return img, None
        if txt is None:
            txt = scorer.embed_texts(batch["prompts"])
        return img, txt

    def item_scores(self, batch: dict[str, Any], train: bool = False) -> Tensor:
        """Scores [N] of the distinct items of a batch (the scalar the Scorer reports; population mixture for a
        pluralistic head, the transitive component for a GPM head)."""
        img, txt = self.embeddings(batch, train)
        return self.scorer.score_embeddings(img, txt).float()

    def pair_logits(self, batch: dict[str, Any], train: bool = False,
                    emb: tuple[Tensor, Tensor | None] | None = None) -> Tensor:
        """The model's preference logit of image_0 over image_1 for each pair [P] (`pair_margin`): the full
        intransitive s(a, b) for a GPM head, the annotator's reward difference for a pluralistic head (batch key
        `annotators`, one per pair), `s[i0] - s[i1]` for any other head."""
        img, txt = emb if emb is not None else self.embeddings(batch, train)
        i0, i1 = batch["i0"], batch["i1"]
        ann = batch.get("annotators") if isinstance(self.scorer.head, PluralisticHead) else None
        t0 = txt[i0] if txt is not None else None
        t1 = txt[i1] if txt is not None else None
        return pair_margin(self.scorer.head, img[i0], img[i1], t0, t1, annotators=ann).float()

    def _pair_weights(self, batch: dict[str, Any]) -> Tensor | None:
        """PickScore's 1 / (examples of the pair's prompt): counted over the whole split by the data module
        (`prompt_weight`); batches without it (e.g. `CachedPairs`) fall back to counts within the batch."""
        if self.loss_name != "pickscore" or not self.prompt_weighting:
            return None
        w = batch.get("prompt_weight")
        if w is not None:
            return w
        prompts = batch.get("prompts")
        if prompts is None:
            return None
        return L_.prompt_weights([prompts[int(k)] for k in batch["i0"]]).to(batch["votes"].device)

    def listwise_loss(self, s: Tensor, batch: dict[str, Any]) -> Tensor:
        """Plackett-Luce over the batch's group rankings (`order`, `mask`) of item scores s [N]."""
        if "order" not in batch:
            raise ValueError("loss plackett_luce needs listwise batches: set data.listwise: true")
        order, mask = batch["order"], batch["mask"]
        return L_.plackett_luce_batch(s.unsqueeze(0).expand(order.shape[0], -1), order, mask)

    def _loss(self, batch: dict[str, Any], emb: tuple[Tensor, Tensor | None]) -> Tensor:
        """The training loss of a batch, given its item embeddings (`embeddings(batch)`)."""
        if self.loss_name == "plackett_luce":
            return self.listwise_loss(self.scorer.score_embeddings(*emb).float(), batch)
        d = self.pair_logits(batch, emb=emb)
        kw = dict(self.loss_kwargs)
        if self.loss_name == "davidson":
            kw["log_nu"] = self.log_nu
        # every pair loss depends on (s0, s1) only through s0 - s1 (PickScore's softmax too), so (d, 0) is exact
        return L_.get_loss(self.loss_name)(d, torch.zeros_like(d), batch["votes"], weights=self._pair_weights(batch),
                                           **kw)

    # ------------------------------------------------------------------------------------------------ steps
    def _set_train_modes(self) -> None:
        # backbones are built in eval mode; trainable parts train, a frozen backbone stays in eval (no dropout)
        self.scorer.train()
        if self.mode.get("name") == "head":
            self.scorer.backbone.eval()

    def on_train_epoch_start(self) -> None:
        self._set_train_modes()
        # dropout & co. draw from the global RNG, which Lightning does not checkpoint: make it a function of epoch
        torch.manual_seed(self.seed * 7919 + int(self.current_epoch))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if batch["votes"].shape[0] == 0:
            return None  # every pair of the batch had an unreadable image (dropped by the data module): skip
        loss = self._loss(batch, self.embeddings(batch, train=True))
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["votes"].shape[0]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch["votes"].shape[0] == 0:
            return
        emb = self.embeddings(batch)
        d = self.pair_logits(batch, emb=emb)
        votes = batch["votes"].to(d.dtype)
        q = (votes[:, 0] + 0.5 * votes[:, 2]) / votes.sum(1)
        n = int(d.shape[0])
        nll = F.binary_cross_entropy_with_logits(d, q)
        decisive = votes[:, 0] != votes[:, 1]
        agree = ((d > 0) == (votes[:, 0] > votes[:, 1])).to(d.dtype) * 1.0
        agree = torch.where(d == 0, torch.full_like(agree, 0.5), agree)
        acc = (agree * decisive).sum() / decisive.sum().clamp_min(1)
        self.log("val/nll", nll, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("val/acc", acc, prog_bar=True, batch_size=max(int(decisive.sum()), 1), sync_dist=True)
        self.log("val/loss", self._loss(batch, emb), batch_size=n, sync_dist=True)

    # ------------------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.opt_cfg
        lr = float(cfg.get("lr", 1e-4))
        wd = float(cfg.get("weight_decay", 0.0))
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            # biases, norms, embeddings-as-vectors, scalars (log_nu, logit scales) and mixture logits are not decayed
            (decay if p.ndim >= 2 and not any(k in name for k in _NO_DECAY_NAMES) else no_decay).append(p)
        if not decay and not no_decay:
            raise ValueError(f"nothing to train in mode {self.mode.get('name')!r}: every parameter is frozen")
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, betas=tuple(cfg.get("betas", (0.9, 0.999))), eps=float(cfg.get("eps", 1e-8)),
        )
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        if "max_steps" in cfg:
            total = int(cfg["max_steps"])
        warm = int(cfg.get("warmup_steps", round(float(cfg.get("warmup_ratio", 0.0)) * total)))
        floor = float(cfg.get("min_lr_ratio", 0.0))
        kind = cfg.get("schedule", "cosine")
        if kind not in SCHEDULES:
            raise ValueError(f"optimizer.schedule must be cosine or constant; got {kind!r}")

        def factor(step: int) -> float:
            if warm > 0 and step < warm:
                return (step + 1) / warm
            if kind == "constant":
                return 1.0
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
