"""Data-parallel pretraining stages (`fit_stage(processes=2)`, Lightning ddp_fork on CPU).

With a deterministic loss and one full batch per step, two ranks of half a batch each must follow exactly the
single-process trajectory (their averaged gradients are the full batch's), and the rank's EMA weights and loss
history must come back to the calling process.
"""
from __future__ import annotations

import pytest
import torch

from imgpref.world.pretrain_modules import fit_stage


class RegressionLoss:
    """Batch (x, y) -> mean squared error of a linear model; no randomness, so ranks are comparable."""

    def __call__(self, model, batch, generator):
        x, y = batch
        return (model(x).squeeze(-1) - y).pow(2).mean(), {}


def _fit(processes: int) -> tuple[torch.Tensor, list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    hist = fit_stage(model, RegressionLoss(), (x, y), steps=12, batch_size=8, lr=0.05, seed=0, warmup=1,
                     ema_decay=0.8, processes=processes)
    return torch.cat([model.weight.detach().flatten(), model.bias.detach()]), hist


def test_two_ranks_follow_the_single_process_trajectory():
    w1, h1 = _fit(1)
    w2, h2 = _fit(2)
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for p in torch.nn.Linear(3, 1).parameters()])
    assert (w1 - init).abs().max() > 0.05                 # it trained (and the EMA came back, not the init)
    assert torch.allclose(w1, w2, atol=1e-5), (w1, w2)    # same weights: gradients averaged over the two ranks
    assert len(h2) == len(h1) == 12                       # rank 0's history is returned
    assert h2[-1] < h2[0]


def test_processes_must_divide_the_batch():
    import pytest

    with pytest.raises(ValueError, match="divide batch_size 8"):
        fit_stage(torch.nn.Linear(3, 1), RegressionLoss(), (torch.zeros(8, 3), torch.zeros(8)), steps=1,
                  batch_size=8, lr=0.1, seed=0, processes=3)


def test_two_ranks_are_deterministic_with_per_rank_noise():
    # The denoising loss draws noise and timesteps per rank; the same seed must rebuild the same weights, and a
    # rank's draws must not repeat rank 0's (else the two half-batches would share their noise).
    from imgpref.world.base_model import DenoiseBatchLoss, build_unet

    g = torch.Generator().manual_seed(0)
    z, cap = torch.randn(16, 4, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g)
    table = torch.randn(6, 77, 32, generator=g)
    weights = []
    for _ in range(2):
        unet = build_unet(0)
        fit_stage(unet, DenoiseBatchLoss(table, 5, 0.1), (z, cap), steps=2, batch_size=8, lr=1e-3, seed=4,
                  warmup=1, processes=2)
        weights.append(unet.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["conv_in.weight"], build_unet(0).state_dict()["conv_in.weight"])


def test_rank_generators_differ():
    from imgpref.world.pretrain_modules import StageModule

    class _Rank(StageModule):
        rank = 0

        @property
        def global_rank(self) -> int:
            return self.rank

    draws = []
    for rank in (0, 1):
        m = _Rank(torch.nn.Linear(1, 1), RegressionLoss(), lr=0.1, max_steps=1, seed=9)
        m.rank = rank
        m.on_fit_start()
        draws.append(torch.rand(4, generator=m._gen))
    assert torch.equal(draws[0], torch.rand(4, generator=torch.Generator().manual_seed(9)))  # rank 0: the seed
    assert not torch.equal(draws[0], draws[1])


def test_processes_that_do_not_split_the_batches_are_a_usage_error_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app
    from imgpref.world.base_model import PretrainSizes

    PretrainSizes().check_processes(2)  # 128 / 32 / 64 split evenly
    with pytest.raises(ValueError, match="does not divide clip_batch 128, vae_batch 32, unet_batch 64"):
        PretrainSizes().check_processes(3)
    out = tmp_path / "base"
    res = CliRunner().invoke(app, ["world", "pretrain", "--out", str(out), "--quick", "--processes", "3"])
    assert res.exit_code == 2 and "--processes 3 must divide every stage's batch" in res.output
    res = CliRunner().invoke(app, ["world", "pretrain", "--out", str(out), "--quick", "--processes", "0"])
    assert res.exit_code == 2 and "--processes must be >= 1; got 0" in res.output
    assert not out.exists()  # nothing rendered or written


def test_fast_recipe_halves_the_vae_batch_and_is_exclusive_with_quick(tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app
    from imgpref.world.base_model import PretrainSizes

    fast, full = PretrainSizes.fast(), PretrainSizes()
    # same VAE samples seen (steps x batch within 20%), half the batch; fewer UNet steps; the rest unchanged
    assert fast.vae_batch * 2 == full.vae_batch and fast.vae_steps * fast.vae_batch == 38400
    assert sum(fast.unet_steps) == 1900 < sum(full.unet_steps) and fast.unet_batch == full.unet_batch
    assert (fast.scenes, fast.clip_steps, fast.unet_lr) == (full.scenes, full.clip_steps, full.unet_lr)
    fast.check_processes(2)
    out = tmp_path / "base"
    res = CliRunner().invoke(app, ["world", "pretrain", "--out", str(out), "--quick", "--fast"])
    assert res.exit_code == 2 and "--quick and --fast" in res.output
    assert not out.exists()
