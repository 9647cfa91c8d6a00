"""Lightning wiring for pretraining the world's models (CLIP, VAE, UNet): one module, one fit helper.

Each stage is a model plus a pure loss function on a batch (`imgpref.world.pretrain_losses`); this module only
adds AdamW with linear warm-up and cosine decay, an optional EMA of the weights, and a seeded CPU trainer.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from typing import Any, Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class StageModule(L.LightningModule):
    """Trains `model` by minimising `loss_fn(model, batch, generator) -> (loss, stats)`.

    lr: peak AdamW learning rate (linear warm-up over `warmup` steps, cosine decay to 10% at `max_steps`).
    ema_decay: if set, an exponential moving average of the weights is kept (warm-up min(decay, (1+n)/(10+n)))
    and copied into the model at the end of training (`copy_ema_into_model`).
    history_file: where rank 0 writes the loss history at the end of training (data-parallel runs train in forked
    processes, so the history would otherwise stay there).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Callable, *, lr: float, max_steps: int, warmup: int = 50,
                 weight_decay: float = 0.0, ema_decay: float | None = None, seed: int = 0,
                 history_file: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.lr, self.max_steps, self.warmup, self.weight_decay = lr, max_steps, warmup, weight_decay
        self.ema_decay = ema_decay
        self._ema: dict[str, torch.Tensor] | None = None
        self._updates = 0
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)  # noise/timestep draws: seeded apart from global state
        self.history: list[float] = []
        self.history_file = history_file

    def on_fit_start(self) -> None:
        # Each data-parallel rank draws its own noise and timesteps (rank 0 keeps the single-process stream).
        if self.global_rank:
            self._gen.manual_seed(self.seed + 7919 * self.global_rank)

    def on_train_end(self) -> None:
        # Runs inside every rank, before the launcher sends rank 0's weights back: the EMA goes with them.
        self.copy_ema_into_model()
        if self.history_file and self.global_rank == 0:
            with open(self.history_file, "w") as fh:
                json.dump(self.history, fh)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, stats = self.loss_fn(self.model, batch, self._gen)
        self.history.append(float(loss.detach()))
        for k, v in stats.items():
            self.log(f"train/{k}", v, batch_size=len(batch[0]))
        return loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

        def factor(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            t = min(1.0, (step - self.warmup) / max(1, self.max_steps - self.warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_decay is None:
            return
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if self._ema is None:
            self._ema = {n: p.detach().clone() for n, p in params.items()}
        d = min(self.ema_decay, (1.0 + self._updates) / (10.0 + self._updates))
        for n, p in params.items():
            self._ema[n].lerp_(p.detach(), 1.0 - d)
        self._updates += 1

    def copy_ema_into_model(self) -> None:
        """Replace the trained weights by their moving average (no-op without EMA)."""
        if self._ema is None:
            return
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                if n in self._ema:
                    p.copy_(self._ema[n])


def fit_stage(model: torch.nn.Module, loss_fn: Callable, tensors: tuple[torch.Tensor, ...], *, steps: int,
              batch_size: int, lr: float, seed: int, warmup: int = 50, weight_decay: float = 0.0,
              ema_decay: float | None = None, progress: bool = False, processes: int = 1) -> list[float]:
    """Train `model` in place for `steps` steps on shuffled batches of `tensors`; returns the loss history.

    processes: data-parallel CPU processes (Lightning `ddp_fork`, gloo). Each takes `batch_size / processes`
    items per step, and gradients are averaged, so the optimiser sees the same batch size. On a few cores this is
    faster than intra-op threads, whose work items are too small for these models. Fork, not spawn: a spawned
    rank re-imports torch, Lightning and diffusers (~17 s per stage here), a forked one starts at once and
    inherits the tensors; Lightning gives each rank cores / processes torch threads (1 on 2 cores). The result
    is deterministic for a given `processes`, but differs from a single-process run (other noise draws and
    sample order).
    """
    if processes < 1 or batch_size % processes:
        raise ValueError(f"processes must be >= 1 and divide batch_size {batch_size}; got {processes}")
    L.seed_everything(seed, workers=True, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        history_file = os.path.join(tmp, "history.json") if processes > 1 else None
        module = StageModule(model, loss_fn, lr=lr, max_steps=steps, warmup=warmup, weight_decay=weight_decay,
                             ema_decay=ema_decay, seed=seed, history_file=history_file)
        loader = DataLoader(TensorDataset(*tensors), batch_size=batch_size // processes, shuffle=True,
                            drop_last=True, generator=torch.Generator().manual_seed(seed), num_workers=0)
        parallel = {"devices": processes, "strategy": "ddp_fork"} if processes > 1 else {"devices": 1}
        trainer = L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, **parallel,
                            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                            deterministic=True, gradient_clip_val=1.0, num_sanity_val_steps=0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(num_workers|module\\(s\\) in eval mode|does not have many).*")
            trainer.fit(module, train_dataloaders=loader)
        history = module.history
        if history_file:  # the forked rank 0 trained; its EMA weights are already loaded back into `model`
            with open(history_file) as fh:
                history = json.load(fh)
    model.eval()
    return history
