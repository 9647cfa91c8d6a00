"""The world's base text-to-image model: a diffusers `StableDiffusionPipeline` pretrained on world scenes.

Same class and components as SD1.5, so `imgpref align` runs on it unchanged:
- text encoder: the text tower of the world CLIP (`imgpref.world.clip_pretrain`), frozen;
- VAE: an `AutoencoderKL` trained briefly to reconstruct 32 px scenes from 8 x 8 x 4 latents (its
  `scaling_factor` set to 1 / std of the latents, as SD's 0.18215);
- UNet: a small `UNet2DConditionModel` (cross-attention to the text encoder's hidden states), trained on
  epsilon with 10% empty prompts, so classifier-free guidance works;
- scheduler: DDIM with SD1.5's scaled-linear betas.

All three are trained with Lightning (`imgpref.world.pretrain_modules`) on scenes whose (colour, shape) is in the
training combos of `split_combos(seed)`; held-out combos are never seen in pretraining. Training is short on
purpose: the base is recognisably the world but imperfect, so alignment has headroom.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

RESOLUTION = 32
LATENT_SIZE = 8
SAMPLE_SETTINGS = {"num_inference_steps": 20, "guidance_scale": 2.0}  # how the world base is sampled everywhere
# (held-out gold fidelity of the committed base at guidance 2 / 3 / 4.5: 0.321 / 0.297 / 0.284)

VAE_CONFIG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
    "sample_size": RESOLUTION, "mid_block_add_attention": False,
}
UNET_CONFIG: dict = {
    "sample_size": LATENT_SIZE, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8,
    "attention_head_dim": 8, "cross_attention_dim": 32,
}
SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
}


@dataclass
class PretrainSizes:
    """Knobs of `pretrain_world` (defaults: the committed base; `quick()` shrinks everything for tests)."""

    scenes: int = 8000
    clip_steps: int = 400
    clip_batch: int = 128
    clip_lr: float = 1e-3
    vae_steps: int = 1500  # 500 left reconstructions at gold fidelity 0.39 (shape 0.18): the ceiling of any base
    vae_batch: int = 32
    vae_lr: float = 2e-3
    kl_weight: float = 1e-4
    unet_steps: tuple[int, ...] = (1500, 1000)  # cosine cycles (warm restarts), peak lr halved per cycle
    unet_batch: int = 64
    unet_lr: float = 1e-3
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    # share of the UNet's scenes rendered with one flaw its caption does not mention (`scenes.sample_dataset`)
    caption_noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.caption_noise < 1.0:  # at construction: before any stage spends minutes
            raise ValueError(f"caption_noise must lie in [0, 1); got {self.caption_noise}")

    def check_processes(self, processes: int) -> None:
        """ValueError unless `processes` data-parallel ranks can split every stage's batch evenly."""
        if processes < 1:
            raise ValueError(f"--processes must be >= 1; got {processes}")
        batches = {"clip_batch": self.clip_batch, "vae_batch": self.vae_batch, "unet_batch": self.unet_batch}
        bad = ", ".join(f"{k} {b}" for k, b in batches.items() if b % processes)
        if bad:
            raise ValueError(f"--processes {processes} must divide every stage's batch, and does not divide {bad}; "
                             "use 1, 2 or another common divisor of the batches")

    @classmethod
    def fast(cls) -> "PretrainSizes":
        """The 10-minute recipe (`imgpref world pretrain --fast`, with 2 data-parallel ranks: 582 s on 2 idle cores):
        the VAE at half the batch for 1.6x the steps, which reconstructs better at equal compute (batch 32 x 1500:
        gold fidelity 0.648; 16 x 3000: 0.701; benchmarks/world_vae_cap.py), and 1900 UNet steps instead of 2500.
        Not the committed base: see benchmarks/RESULTS.md "world_align" for why."""
        return cls(vae_steps=2400, vae_batch=16, unet_steps=(1200, 700))

    @classmethod
    def quick(cls) -> "PretrainSizes":
        return cls(scenes=400, clip_steps=5, clip_batch=32, vae_steps=5, vae_batch=16, unet_steps=(5,), unet_batch=16)


def build_vae(seed: int = 0):
    """A randomly initialised world VAE (`VAE_CONFIG`)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**VAE_CONFIG)


def build_unet(seed: int = 0):
    """A randomly initialised world UNet (`UNET_CONFIG`)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG)


def build_scheduler():
    """DDIM with SD1.5's scaled-linear betas (training draws noise with the DDPM equivalent of this config)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def vae_pixels(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (the VAE's input range)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class VAEBatchLoss:
    """Batch (pixels in [-1, 1],) -> reconstruction MSE + kl_weight * KL, with a sampled latent."""

    def __init__(self, kl_weight: float) -> None:
        self.kl_weight = kl_weight

    def __call__(self, vae, batch, generator) -> tuple[Tensor, dict[str, Tensor]]:
        from imgpref.world.pretrain_losses import vae_loss

        (x,) = batch
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        loss, rec, kl = vae_loss(recon, x, post.mean, post.logvar, self.kl_weight)
        return loss, {"rec": rec.detach(), "kl": kl.detach()}


class DenoiseBatchLoss:
    """Batch (latents, caption index) -> epsilon MSE; a share `p_uncond` of captions is replaced by the empty
    prompt (row `null_index` of the table), which classifier-free guidance needs at sampling time."""

    def __init__(self, text_table: Tensor, null_index: int, p_uncond: float) -> None:
        from diffusers import DDPMScheduler

        self.table, self.null, self.p = text_table, int(null_index), float(p_uncond)
        self.noise = DDPMScheduler.from_config(SCHEDULER_CONFIG)

    def __call__(self, unet, batch, generator) -> tuple[Tensor, dict[str, Tensor]]:
        from imgpref.align.losses import diffusion_target, per_sample_mse

        z, cap = batch
        drop = torch.rand(cap.shape, generator=generator) < self.p
        cap = torch.where(drop, torch.full_like(cap, self.null), cap)
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (z.shape[0],), generator=generator)
        noisy = self.noise.add_noise(z, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=self.table[cap]).sample
        return per_sample_mse(pred, diffusion_target(self.noise, z, noise, t)).mean(), {}


def train_unet(unet, latents: Tensor, cap: Tensor, table: Tensor, null_index: int, sizes: PretrainSizes, seed: int,
               *, first_cycle: int = 0, progress: bool = False, processes: int = 1) -> list[float]:
    """The UNet's cosine cycles (`sizes.unet_steps`, from `first_cycle`): cycle i has peak lr unet_lr / 2^i, its
    own seed and EMA, whose weights start the next cycle. Returns the loss history of the cycles run."""
    from imgpref.world.pretrain_modules import fit_stage

    hist: list[float] = []
    for i, steps in enumerate(sizes.unet_steps):
        if i < first_cycle:
            continue
        hist += fit_stage(unet, DenoiseBatchLoss(table, null_index, sizes.p_uncond), (latents, cap), steps=steps,
                          batch_size=sizes.unet_batch, lr=sizes.unet_lr / 2 ** i, seed=seed + 2 + 1000 * i,
                          warmup=min(100, steps // 5 + 1), ema_decay=sizes.ema_decay, progress=progress,
                          processes=processes)
    return hist


@torch.no_grad()
def encode_latents(vae, pixels: Tensor, batch: int = 256) -> Tensor:
    """Posterior means of `pixels` (in [-1, 1]), unscaled."""
    return torch.cat([vae.encode(pixels[i : i + batch]).latent_dist.mean for i in range(0, len(pixels), batch)])


@torch.no_grad()
def text_states(text_encoder, prompts: Sequence[str]) -> Tensor:
    """The text encoder's last hidden states [N, 77, D] for prompts, tokenised as the SD pipeline does."""
    from imgpref.world.clip_pretrain import tokenize

    return text_encoder(input_ids=tokenize(prompts)).last_hidden_state


def assemble_pipeline(text_encoder, vae, unet):
    """The `StableDiffusionPipeline` of the three trained parts, the world tokenizer and DDIM."""
    from diffusers import StableDiffusionPipeline

    from imgpref.world.clip_pretrain import world_tokenizer

    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=world_tokenizer(),
                                   unet=unet.eval(), scheduler=build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@dataclass
class PretrainReport:
    """What `pretrain_world` did and measured (also written to `pretrain.json`)."""

    seed: int
    sizes: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    torch_threads: int = 1
    processes: int = 1


def _clock() -> tuple[float, float]:
    """(wall, CPU) seconds; CPU includes finished child processes (the data-parallel ranks of `processes`)."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter(), time.process_time() + kids.ru_utime + kids.ru_stime


def pretrain_world(out: str | os.PathLike | None = None, *, seed: int = 0, sizes: PretrainSizes | None = None,
                   threads: int | None = None, processes: int = 1, progress: bool = False,
                   log: Callable[[str], None] = lambda s: None) -> tuple[Any, Any, PretrainReport]:
    """Pretrain CLIP, VAE and UNet on world scenes; returns (pipeline, clip model, report).

    With `out`, writes `out/pipeline/` (`save_pretrained`), `out/clip/` (`save_world_clip`) and
    `out/pretrain.json`. Deterministic from `seed` for a given torch build, thread count and `processes`
    (data-parallel CPU ranks of one thread each, `pretrain_modules.fit_stage`; `threads` is then the main
    process's, which only renders, encodes latents and text).
    """
    from imgpref.world.clip_pretrain import pretrain_clip, text_encoder_from_clip
    from imgpref.world.pretrain_modules import fit_stage
    from imgpref.world.scenes import sample_dataset, split_combos

    sizes = sizes or PretrainSizes()
    sizes.check_processes(processes)  # before any scene is rendered
    if threads is not None:
        torch.set_num_threads(int(threads))
    report = PretrainReport(seed=seed, sizes=asdict(sizes), torch_threads=torch.get_num_threads(),
                            processes=processes)

    def lap(name: str, t: tuple[float, float]) -> tuple[float, float]:
        now = _clock()
        report.seconds[name] = round(now[0] - t[0], 1)
        report.cpu_seconds[name] = round(now[1] - t[1], 1)
        log(f"      {name}: {report.seconds[name]} s ({report.cpu_seconds[name]} CPU s)")
        return now

    t_all = t = _clock()
    train_combos, _ = split_combos(seed)
    images, prompts = sample_dataset(sizes.scenes, seed, size=RESOLUTION, combos=train_combos)
    t = lap("render", t)

    clip = pretrain_clip(images, prompts, steps=sizes.clip_steps, batch_size=sizes.clip_batch, lr=sizes.clip_lr,
                         seed=seed, progress=progress, processes=processes)
    text_encoder = text_encoder_from_clip(clip)
    t = lap("clip", t)

    vae = build_vae(seed + 1)
    pixels = vae_pixels(images)
    report.metrics["vae_rec_mse_last"] = float(np.mean(fit_stage(
        vae, VAEBatchLoss(sizes.kl_weight), (pixels,), steps=sizes.vae_steps, batch_size=sizes.vae_batch,
        lr=sizes.vae_lr, seed=seed + 1, progress=progress, processes=processes)[-20:]))
    vae.requires_grad_(False)
    latents = encode_latents(vae, pixels)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    report.metrics["vae_scaling_factor"] = scale
    t = lap("vae", t)

    if sizes.caption_noise > 0:
        # the UNet alone learns from mislabelled scenes (same prompts, a share of flawed images); CLIP and VAE
        # keep the clean ones, so the text encoder and latent space are the same as without noise
        noisy, _ = sample_dataset(sizes.scenes, seed, size=RESOLUTION, combos=train_combos,
                                  caption_noise=sizes.caption_noise)
        latents = encode_latents(vae, vae_pixels(noisy))
        t = lap("caption_noise", t)

    captions = sorted(set(prompts)) + [""]
    index = {c: i for i, c in enumerate(captions)}
    table = text_states(text_encoder, captions)
    cap = torch.tensor([index[p] for p in prompts])
    unet = build_unet(seed + 2)
    hist = train_unet(unet, latents * scale, cap, table, index[""], sizes, seed, progress=progress,
                      processes=processes)
    report.metrics["unet_loss_last"] = float(np.mean(hist[-50:]))
    t = lap("unet", t)

    pipe = assemble_pipeline(text_encoder, vae, unet)
    report.seconds["total"] = round(_clock()[0] - t_all[0], 1)
    report.cpu_seconds["total"] = round(_clock()[1] - t_all[1], 1)
    if out is not None:
        save_world(pipe, clip, out, report)
    return pipe, clip, report


def save_world(pipe, clip, out: str | os.PathLike, report: PretrainReport | None = None) -> Path:
    """Write `out/pipeline` (diffusers `save_pretrained`), `out/clip` and `out/pretrain.json`."""
    from imgpref.world.clip_pretrain import save_world_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out / "pipeline"), safe_serialization=True)
    save_world_clip(clip, out / "clip")
    if report is not None:
        (out / "pretrain.json").write_text(json.dumps(asdict(report), indent=2))
    return out


@torch.no_grad()
def sample_fidelity(pipe, prompts: Sequence[str], *, seeds: int = 2, base_seed: int = 1_000_000,
                    **sample: Any) -> dict[str, np.ndarray]:
    """Gold judgement (`imgpref.world.judge`) of `seeds` samples per prompt, sampled with `SAMPLE_SETTINGS`."""
    from imgpref.align.generate import generate_images
    from imgpref.world.judge import judge

    settings = {**SAMPLE_SETTINGS, "batch_size": 32, **sample}
    gens = generate_images(pipe, list(prompts), seeds, base_seed=base_seed, **settings)
    return judge(gens.images, gens.prompts)
