"""The world's flow-matching base: a diffusers `StableDiffusion3Pipeline` pretrained on world scenes (issue 10).

The SD3 counterpart of `imgpref.world.base_model` (the UNet base), on the same world and the same parts where
they exist, so the two bases differ only in the denoiser and its training objective:
- text encoders: the world CLIP's text tower (with its projection) as `CLIPTextModelWithProjection`, the same
  weights in both CLIP slots; `text_encoder_3` (T5) is None, which SD3 allows (its tokens are then zeros);
- VAE: the world base's VAE as it is (a copy), with two config entries re-measured for this base: SD3 decodes
  `z / scaling_factor + shift_factor`, so `shift_factor` is set to the mean of the training latents and
  `scaling_factor` to 1 / their std after the shift (unit-variance latents, as SD3's 1.5305 / 0.0609 do);
- transformer: a small `SD3Transformer2DModel` (latent size and channels read from the VAE), trained with
  flow matching (`imgpref.align.flow`: x_t = (1 - sigma) x0 + sigma eps, target eps - x0, plain MSE,
  logit-normal sigma as SD3's training) with 10% empty prompts, so classifier-free guidance works;
- scheduler: `FlowMatchEulerDiscreteScheduler` (shift 1: the latents are 8 x 8, far from SD3's 128 x 128).

Training runs with the same Lightning stage helper (`pretrain_modules.fit_stage`) on scenes of the training combos
of `split_combos(seed)` only. Deterministic from `seed` for a given torch build and thread count.
`ensure_flow_world()` caches the result under the user cache dir (`store.materialise_once`), so tests and
benchmarks train it once.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

# How the flow base is sampled everywhere, as the UNet base (held-out gold fidelity of the default base at
# guidance 2 / 3: 0.288 / 0.286; of the earlier 4 x 16-head base at 1.5 / 2 / 3 / 4.5: 0.262 / 0.264 / 0.250 /
# 0.220, where 40 steps or scheduler shift 0.5 / 3 changed it by < 0.003)
FLOW_SAMPLE_SETTINGS = {"num_inference_steps": 20, "guidance_scale": 2.0}
SCHEDULER_SHIFT = 1.0


@dataclass
class FlowPretrainSizes:
    """Knobs of `pretrain_flow_world` (defaults: the cached base; `quick()` shrinks it for tests)."""

    scenes: int = 6000
    steps: int = 1200
    batch: int = 32  # with head_dim 32: held-out gold fidelity 0.288 for 270 CPU s (batch 64, head_dim 16: 0.264, 208)
    lr: float = 1e-3
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    layers: int = 3
    heads: int = 4
    head_dim: int = 32
    logit_mean: float = 0.0
    logit_std: float = 1.0

    @classmethod
    def quick(cls) -> "FlowPretrainSizes":
        return cls(scenes=64, steps=4, batch=16, layers=1, heads=2, head_dim=8)


def transformer_config(vae, text_encoder, sizes: FlowPretrainSizes) -> dict[str, Any]:
    """The SD3 transformer's config, sized from the VAE (latent channels, latent size) and the text tower."""
    from imgpref.world.base_model import RESOLUTION

    down = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = RESOLUTION // down
    ch = int(vae.config.latent_channels)
    text = int(text_encoder.config.hidden_size)
    proj = int(text_encoder.config.projection_dim)
    return {"sample_size": latent, "patch_size": 1, "in_channels": ch, "out_channels": ch,
            "num_layers": sizes.layers, "attention_head_dim": sizes.head_dim, "num_attention_heads": sizes.heads,
            # SD3 concatenates the two CLIP states (2 x text wide) and zero-pads them to joint_attention_dim
            "joint_attention_dim": 2 * text, "caption_projection_dim": sizes.heads * sizes.head_dim,
            "pooled_projection_dim": 2 * proj, "pos_embed_max_size": latent}


def build_transformer(config: dict[str, Any], seed: int = 0):
    """A randomly initialised `SD3Transformer2DModel` of `config`, deterministic from `seed`."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(**config)


def build_flow_scheduler():
    """FlowMatchEulerDiscreteScheduler with 1000 training steps and `SCHEDULER_SHIFT`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SCHEDULER_SHIFT)


def text_encoder_with_projection(clip):
    """The world CLIP's text tower plus its text projection as a `CLIPTextModelWithProjection` (frozen)."""
    from transformers import CLIPTextModelWithProjection

    cfg = copy.deepcopy(clip.config.text_config)
    cfg.projection_dim = int(clip.config.projection_dim)
    te = CLIPTextModelWithProjection(cfg)
    te.text_model.load_state_dict(clip.text_model.state_dict())
    te.text_projection.load_state_dict(clip.text_projection.state_dict())
    return te.eval().requires_grad_(False)


def flow_tokenizer():
    """The world tokenizer with `model_max_length` = `clip_pretrain.TRAIN_TOKENS` (16): SD3 pads CLIP prompts to
    it, and world captions (<= 12 tokens) fit; 16 text tokens instead of 77 make the joint attention cheaper."""
    from imgpref.world.clip_pretrain import TRAIN_TOKENS, world_tokenizer

    tok = world_tokenizer()
    tok.model_max_length = TRAIN_TOKENS
    return tok


def assemble_flow_pipeline(clip, vae, transformer):
    """The `StableDiffusion3Pipeline` of the world CLIP (both CLIP slots, no T5), `vae` and `transformer`."""
    from diffusers import StableDiffusion3Pipeline

    te = text_encoder_with_projection(clip)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=build_flow_scheduler(), vae=vae.eval(), text_encoder=te,
        tokenizer=flow_tokenizer(), text_encoder_2=copy.deepcopy(te), tokenizer_2=flow_tokenizer(),
        text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flow_vae(vae, latents: Tensor):
    """A copy of `vae` with `shift_factor` = mean of `latents` (unscaled posterior means) and `scaling_factor`
    = 1 / their std after the shift; the world pipeline's own VAE is left untouched."""
    out = copy.deepcopy(vae).requires_grad_(False).eval()
    shift = float(latents.mean())
    out.register_to_config(shift_factor=shift, scaling_factor=float(1.0 / (latents - shift).std()))
    return out


class FlowBatchLoss:
    """Batch (scaled latents, caption index) -> flow-matching velocity MSE, logit-normal sigma.

    `cond` holds the pipeline's prompt embeddings per distinct caption ("encoder_hidden_states" [N, L, D],
    "pooled_projections" [N, P]); a share `p_uncond` of captions becomes the empty prompt (row `null_index`).
    """

    def __init__(self, cond: dict[str, Tensor], null_index: int, p_uncond: float, scheduler,
                 logit_mean: float = 0.0, logit_std: float = 1.0) -> None:
        from imgpref.align.flow import training_sigmas

        self.cond, self.null, self.p = cond, int(null_index), float(p_uncond)
        self.sigmas = training_sigmas(scheduler)
        self.logit = (float(logit_mean), float(logit_std))

    def __call__(self, transformer, batch, generator) -> tuple[Tensor, dict[str, Tensor]]:
        from imgpref.align.flow import flow_errors, flow_noisy, sample_flow_u, sigmas_from_u, transformer_velocity

        z, cap = batch
        drop = torch.rand(cap.shape, generator=generator) < self.p
        cap = torch.where(drop, torch.full_like(cap, self.null), cap)
        noise = torch.randn(z.shape, generator=generator)
        u = sample_flow_u(z.shape[0], "logit_normal", logit_mean=self.logit[0], logit_std=self.logit[1],
                          generator=generator)
        sigma, t = sigmas_from_u(u, self.sigmas)
        cond = {k: v[cap] for k, v in self.cond.items()}
        pred = transformer_velocity(transformer, "sd3", flow_noisy(z, noise, sigma), t, cond)
        return flow_errors(pred, z, noise, sigma).mean(), {}


def t5_slot_length() -> int:
    """Zero rows SD3 appends for an absent T5 at sampling time: `StableDiffusion3Pipeline.__call__`'s default
    `max_sequence_length` (256)."""
    from diffusers import StableDiffusion3Pipeline

    return int(inspect.signature(StableDiffusion3Pipeline.__call__).parameters["max_sequence_length"].default)


class CollapsedT5Attention:
    """SD3 joint attention in which the LAST context token stands for `copies` identical tokens.

    Without T5, SD3 appends `max_sequence_length` zero rows to the prompt embeddings. SD3's context stream has no
    position embedding and acts per token outside attention, so those rows stay identical through every block;
    attention over n identical keys/values equals attention over one of them with its logit raised by log(n),
    and the n identical outputs equal that one's output. With one zero row and this processor, the transformer
    computes exactly its function on the full 256-row embeddings (tested) at a fraction of the cost: the
    pretraining uses it, sampling and alignment use diffusers' own processor on the full rows.
    """

    def __init__(self, copies: int) -> None:
        if copies < 1:
            raise ValueError(f"copies must be >= 1; got {copies}")
        self.log_n = math.log(copies)

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, *args: Any, **kwargs: Any):
        import torch.nn.functional as F

        if encoder_hidden_states is None or attention_mask is not None:
            raise ValueError("CollapsedT5Attention is for SD3 joint attention blocks (context tokens, no mask)")
        b, n_img = hidden_states.shape[:2]

        def split(x: Tensor) -> Tensor:
            return x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        cq = split(attn.add_q_proj(encoder_hidden_states))
        ck = split(attn.add_k_proj(encoder_hidden_states))
        cv = split(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if attn.norm_added_q is not None:
            cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        q, k, v = torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2)
        bias = torch.zeros(k.shape[2], dtype=q.dtype, device=q.device)
        bias[-1] = self.log_n
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.expand(q.shape[2], -1))
        out = out.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]).to(q.dtype)
        img, ctx = out[:, :n_img], out[:, n_img:]
        if not attn.context_pre_only:
            ctx = attn.to_add_out(ctx)
        return attn.to_out[1](attn.to_out[0](img)), ctx


@contextlib.contextmanager
def collapsed_t5(transformer, copies: int | None = None) -> Iterator[Any]:
    """Within the block, the joint attention of every SD3 block uses `CollapsedT5Attention(copies)` (default
    `t5_slot_length()`); diffusers' own processors are put back on exit (sampling and alignment use those)."""
    attns = [block.attn for block in transformer.transformer_blocks]
    saved = [a.processor for a in attns]
    proc = CollapsedT5Attention(copies or t5_slot_length())
    for a in attns:
        a.set_processor(proc)
    try:
        yield transformer
    finally:
        for a, p in zip(attns, saved):
            a.set_processor(p)


def with_collapsed_t5(pipe, copies: int | None = None):
    """A deep copy of `pipe` whose transformer always uses `CollapsedT5Attention` (for training: encode prompts
    with `max_sequence_length=1`, e.g. `imgpref align` with `model.max_sequence_length: 1`); `pipe` is untouched.
    Not for sampling: the pipeline's own call feeds 256 zero rows, which this processor would over-count."""
    out = copy.deepcopy(pipe)
    proc = CollapsedT5Attention(copies or t5_slot_length())
    for block in out.transformer.transformer_blocks:
        block.attn.set_processor(proc)
    return out


@functools.cache
def _one_t5_row_class(base: type) -> type:
    """A subclass of the pipeline class `base` whose call defaults to `max_sequence_length=1` (one zero T5 row)."""

    class OneT5Row(base):  # type: ignore[misc, valid-type]
        def __call__(self, *args: Any, **kwargs: Any):
            kwargs.setdefault("max_sequence_length", 1)
            return super().__call__(*args, **kwargs)

    OneT5Row.__name__ = OneT5Row.__qualname__ = f"OneT5Row{base.__name__}"
    return OneT5Row


def fast_sampling_pipeline(pipe, copies: int | None = None):
    """A deep copy of `pipe` that samples the same function as `pipe` (tested within 1e-4 on images) at a fraction
    of the cost: its transformer uses `CollapsedT5Attention(copies)` and its call feeds one zero T5 row instead of
    `t5_slot_length()` (default `max_sequence_length=1`). For benchmarks and evaluation in memory; LoRA loaded
    into it (`load_lora_weights`) applies as usual. `pipe` is untouched; do not `save_pretrained` the copy."""
    if pipe.text_encoder_3 is not None:
        raise ValueError("fast_sampling_pipeline is for flow bases without T5 (text_encoder_3 None); this pipeline "
                         "has a T5 encoder, whose rows differ per token: sample it as it is")
    out = with_collapsed_t5(pipe, copies)
    out.__class__ = _one_t5_row_class(type(pipe))
    return out


@torch.no_grad()
def caption_conditioning(pipe, captions: Sequence[str], batch: int = 64,
                         max_sequence_length: int | None = None) -> dict[str, Tensor]:
    """The pipeline's own prompt embeddings (`imgpref.align.conditioning.encode_prompts`, T5 slot included,
    `max_sequence_length` zero rows when T5 is absent; None: the pipeline's default) for each caption."""
    from imgpref.align.conditioning import encode_prompts

    parts = [encode_prompts(pipe, captions[i : i + batch], torch.device("cpu"), max_sequence_length=max_sequence_length)
             for i in range(0, len(captions), batch)]
    return {k: torch.cat([p[k] for p in parts]).float() for k in parts[0]}


def pretrain_flow_world(world: tuple[Any, Any] | None = None, out: str | os.PathLike | None = None, *, seed: int = 0,
                        sizes: FlowPretrainSizes | None = None, threads: int | None = None, progress: bool = False,
                        log: Callable[[str], None] = lambda s: None) -> tuple[Any, Any]:
    """Pretrain the SD3-style transformer on world scenes; returns (StableDiffusion3Pipeline, report), the report
    a `base_model.PretrainReport` (its `sizes` also hold the transformer's config under "transformer").

    world: (UNet world pipeline, world CLIP) whose CLIP and VAE are reused (default `store.load_world()`).
    With `out`, writes `out/pipeline` (`save_pretrained`) and `out/pretrain_flow.json`.
    """
    from imgpref.world.base_model import RESOLUTION, PretrainReport, encode_latents, vae_pixels
    from imgpref.world.pretrain_modules import fit_stage
    from imgpref.world.scenes import sample_dataset, split_combos

    sizes = sizes or FlowPretrainSizes()
    if threads is not None:
        torch.set_num_threads(int(threads))
    if world is None:
        from imgpref.world.store import load_world

        world = load_world()
    world_pipe, clip = world
    report = PretrainReport(seed=seed, sizes=asdict(sizes), torch_threads=torch.get_num_threads())
    t0 = t = (time.perf_counter(), time.process_time())

    def lap(name: str, t: tuple[float, float]) -> tuple[float, float]:
        now = (time.perf_counter(), time.process_time())
        report.seconds[name] = round(now[0] - t[0], 1)
        report.cpu_seconds[name] = round(now[1] - t[1], 1)
        log(f"      {name}: {report.seconds[name]} s ({report.cpu_seconds[name]} CPU s)")
        return now

    train_combos, _ = split_combos(seed)
    images, prompts = sample_dataset(sizes.scenes, seed, size=RESOLUTION, combos=train_combos)
    raw = encode_latents(world_pipe.vae, vae_pixels(images))
    vae = flow_vae(world_pipe.vae, raw)
    latents = (raw - vae.config.shift_factor) * vae.config.scaling_factor
    report.metrics.update(vae_shift_factor=float(vae.config.shift_factor),
                          vae_scaling_factor=float(vae.config.scaling_factor))
    t = lap("data", t)

    te = text_encoder_with_projection(clip)
    report.sizes["transformer"] = transformer_config(vae, te, sizes)
    transformer = build_transformer(report.sizes["transformer"], seed + 3)
    pipe = assemble_flow_pipeline(clip, vae, transformer)
    captions = sorted(set(prompts)) + [""]
    index = {c: i for i, c in enumerate(captions)}
    cond = caption_conditioning(pipe, captions, max_sequence_length=1)  # one zero row stands for all (below)
    cap = torch.tensor([index[p] for p in prompts])
    loss = FlowBatchLoss(cond, index[""], sizes.p_uncond, pipe.scheduler, sizes.logit_mean, sizes.logit_std)
    with collapsed_t5(transformer):
        hist = fit_stage(transformer, loss, (latents, cap), steps=sizes.steps, batch_size=sizes.batch, lr=sizes.lr,
                         seed=seed + 3, warmup=min(100, sizes.steps // 5 + 1), ema_decay=sizes.ema_decay,
                         progress=progress)
    report.metrics["flow_loss_first"] = float(np.mean(hist[:20]))
    report.metrics["flow_loss_last"] = float(np.mean(hist[-50:]))
    transformer.requires_grad_(False)
    lap("transformer", t)
    report.seconds["total"] = round(time.perf_counter() - t0[0], 1)
    report.cpu_seconds["total"] = round(time.process_time() - t0[1], 1)
    if out is not None:
        save_flow_world(pipe, out, report)
    return pipe, report


def save_flow_world(pipe, out: str | os.PathLike, report: Any = None) -> Path:
    """Write `out/pipeline` (diffusers `save_pretrained`) and `out/pretrain_flow.json` (a `PretrainReport`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out / "pipeline"), safe_serialization=True)
    if report is not None:
        (out / "pretrain_flow.json").write_text(json.dumps(asdict(report), indent=2))
    return out


def load_flow_pipeline(folder: str | os.PathLike):
    """A saved flow base (`out/pipeline` or `out`) as a StableDiffusion3Pipeline in float32, eval mode."""
    from diffusers import StableDiffusion3Pipeline

    folder = Path(folder)
    if (folder / "pipeline" / "model_index.json").is_file():
        folder = folder / "pipeline"
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"no saved flow base in {folder}; build one with "
                                "`imgpref world pretrain-flow --out DIR`")
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The modules whose bytes decide the flow base's weights (its own training code and what it calls: scenes,
# stage loop, flow maths, latents and tokenizer helpers); their source is part of its cache key.
TRAINING_CODE = ("imgpref.world.flow_base", "imgpref.world.pretrain_modules", "imgpref.world.pretrain_losses",
                 "imgpref.world.scenes", "imgpref.world.base_model", "imgpref.world.clip_pretrain",
                 "imgpref.align.flow", "imgpref.align.conditioning")


def flow_cache_dir(seed: int = 0, cache: str | os.PathLike | None = None) -> Path:
    """Cache folder of the default flow base: named by the world pack's digest, a digest of the default sizes and
    of the training code (`store.code_digest(TRAINING_CODE)`) and the seed, so a new pack (say, a new VAE), recipe or
    pretraining code gets a new folder (`ensure_flow_world`)."""
    from imgpref.world.store import cache_root, code_digest, pack_digest

    root = Path(cache) if cache is not None else cache_root()
    recipe = hashlib.sha256(json.dumps([asdict(FlowPretrainSizes()), SCHEDULER_SHIFT], sort_keys=True).encode())
    recipe.update(code_digest(TRAINING_CODE).encode())
    return root / f"flow-{pack_digest()}-{recipe.hexdigest()[:8]}-s{seed}"


def ensure_flow_world(seed: int = 0, cache: str | os.PathLike | None = None,
                      log: Callable[[str], None] = lambda s: None) -> Path:
    """Folder (with `pipeline/`) of the flow base pretrained with default sizes from the committed world pack,
    trained on first use and cached under `cache` (default `store.cache_root()`) per pack digest and seed."""
    from imgpref.world.store import materialise_once

    final = flow_cache_dir(seed, cache)

    def write(tmp: Path) -> None:
        log(f"pretraining the flow base once into {final} (minutes)")
        pipe, report = pretrain_flow_world(seed=seed, log=log)
        save_flow_world(pipe, tmp, report)

    return materialise_once(final, write, marker="pipeline/model_index.json")


@torch.no_grad()
def flow_sample_fidelity(pipe, prompts: Sequence[str], *, seeds: int = 2, **sample: Any) -> dict[str, np.ndarray]:
    """Gold judgement of the flow base's samples (`base_model.sample_fidelity` with `FLOW_SAMPLE_SETTINGS`),
    sampled through `fast_sampling_pipeline` when the base has no T5 (the same images, cheaper)."""
    from imgpref.world.base_model import sample_fidelity

    sampler = fast_sampling_pipeline(pipe) if pipe.text_encoder_3 is None else pipe
    return sample_fidelity(sampler, prompts, seeds=seeds, **{**FLOW_SAMPLE_SETTINGS, **sample})
