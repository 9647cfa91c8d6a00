"""Generate K images per prompt from a diffusers pipeline with recorded, per-image seeds.

Seeds: image k of prompt i gets `seed = base_seed + i * K + k` and its own `torch.Generator`, which draws its
initial latent noise (and any scheduler noise). An image therefore depends only on (pipeline, prompt, seed,
sampler settings), not on which other images share its batch, so pairs and evaluations can be regenerated
one image at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

# Few steps: the defaults target the tiny offline pipeline and quick labelling; real runs pass their own.
from imgpref.align.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS  # noqa: F401 (re-exported)


def image_seed(base_seed: int, prompt_index: int, k: int, n: int) -> int:
    """Seed of image `k` (of `n`) for prompt number `prompt_index`."""
    return int(base_seed) + int(prompt_index) * int(n) + int(k)


def load_pipeline(pipeline: Any, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
    """A diffusers pipeline object as is, or a spec loaded offline by `imgpref.align.pipeline_io.load_pipeline`:
    a folder written by `save_pretrained`, "tiny" / "tiny-sdxl" (built in code), or a cached hub id."""
    if isinstance(pipeline, (str, Path)):
        from imgpref.align.pipeline_io import TINY_FLOW_SPECS, TINY_SPECS
        from imgpref.align.pipeline_io import load_pipeline as _load

        spec = str(pipeline)
        if spec not in TINY_SPECS and spec not in TINY_FLOW_SPECS and (Path(spec).exists() and not (Path(spec) / "model_index.json").is_file()):
            raise FileNotFoundError(
                f"pipeline folder {spec!r} has no model_index.json; pass a diffusers pipeline folder "
                "(written by save_pretrained or imgpref.align.tiny.save_tiny_pipeline) or 'tiny'"
            )
        pipeline = _load(spec, torch_dtype=dtype)
    if device is not None:
        pipeline = pipeline.to(device)
    return pipeline


def _pipeline_device(pipeline: Any) -> torch.device:
    dev = getattr(pipeline, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def denoiser_of(pipeline: Any) -> Any:
    """The pipeline's UNet, or its transformer (SD3 / FLUX)."""
    net = getattr(pipeline, "unet", None)
    return net if net is not None else pipeline.transformer


def latent_shape(pipeline: Any, height: int | None, width: int | None) -> tuple[int, int, int, int]:
    """(height, width, latent channels, vae scale factor) with the pipeline's defaults filled in.

    FLUX: the channels are the VAE's (its transformer sees them packed 2x2) and height/width must be multiples
    of twice the VAE scale factor."""
    from imgpref.align.flow import flow_kind

    scale = int(getattr(pipeline, "vae_scale_factor", 8))
    kind = flow_kind(pipeline)
    sample = getattr(denoiser_of(pipeline).config, "sample_size", None)
    if sample is None or kind == "flux":
        sample = getattr(pipeline, "default_sample_size", 128)
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    height = int(height or sample * scale)
    width = int(width or sample * scale)
    mult = scale * 2 if kind == "flux" else scale
    if height % mult or width % mult:
        raise ValueError(f"height/width ({height}x{width}) must be multiples of {mult} for this pipeline")
    if kind == "flux":
        channels = int(pipeline.vae.config.latent_channels)
    else:
        channels = int(denoiser_of(pipeline).config.in_channels)
    return height, width, channels, scale


@dataclass
class Generations:
    """Images (float [N, 3, H, W] in [0, 1], CPU) and, per image, its prompt, prompt index, k and seed."""

    images: Tensor
    prompts: list[str]
    prompt_index: list[int]
    k: list[int]
    seeds: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    latents: Tensor | None = None  # the final (scaled) latents the images were decoded from, [N, C, h, w]

    def __len__(self) -> int:
        return len(self.seeds)


@torch.no_grad()
def generate_images(
    pipeline: Any,
    prompts: Sequence[str],
    n: int = 1,
    *,
    base_seed: int = 0,
    batch_size: int = 8,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    progress: bool = False,
) -> Generations:
    """Generate `n` images per prompt; image k of prompt i uses seed `base_seed + i * n + k` (see module doc).

    Returns float images in [0, 1] on the CPU with their seeds and the final latents they were decoded from
    (training on those exact latents avoids a VAE encode round trip, which matters for VAEs that do not
    reconstruct well, such as the random tiny one); the pipeline stays on its device.
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt")
    if n < 1:
        raise ValueError(f"n (images per prompt) must be >= 1; got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    height, width, channels, scale = latent_shape(pipeline, height, width)
    device = _pipeline_device(pipeline)
    dtype = denoiser_of(pipeline).dtype
    from imgpref.align.flow import flow_kind, pack_latents, unpack_latents

    flux = flow_kind(pipeline) == "flux"

    jobs = [(i, k, image_seed(base_seed, i, k, n)) for i in range(len(prompts)) for k in range(n)]
    if hasattr(pipeline, "set_progress_bar_config"):
        pipeline.set_progress_bar_config(disable=True)
    out: list[Tensor] = []
    out_lat: list[Tensor] = []
    batches = range(0, len(jobs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    for start in batches:
        chunk = jobs[start : start + batch_size]
        # One CPU generator per image: its initial noise is drawn here from that generator alone; the same
        # generators go to the pipeline for stochastic schedulers (a list: one per batch element).
        gens = [torch.Generator("cpu").manual_seed(seed) for _, _, seed in chunk]
        latents = torch.cat(
            [torch.randn((1, channels, height // scale, width // scale), generator=g, dtype=torch.float32) for g in gens]
        ).to(device=device, dtype=dtype)
        if flux:  # FluxPipeline takes its initial latents packed 2x2
            latents = pack_latents(latents)
        kwargs: dict[str, Any] = {}
        if negative_prompt is not None:
            kwargs["negative_prompt"] = [negative_prompt] * len(chunk)
        result = pipeline(
            prompt=[prompts[i] for i, _, _ in chunk],
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=gens if len(gens) > 1 else gens[0],
            latents=latents,
            output_type="latent",
            **kwargs,
        )
        final = result.images
        if flux:  # back to [B, C, h, w]: the latents file and training use unpacked latents
            final = unpack_latents(final, height // scale, width // scale)
        out_lat.append(final.detach().float().cpu())
        out.append(decode_latents(pipeline, final).cpu())
    return Generations(
        images=torch.cat(out),
        latents=torch.cat(out_lat),
        prompts=[prompts[i] for i, _, _ in jobs],
        prompt_index=[i for i, _, _ in jobs],
        k=[k for _, k, _ in jobs],
        seeds=[s for _, _, s in jobs],
        settings={
            "n": n,
            "base_seed": base_seed,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "height": height,
            "width": width,
            "negative_prompt": negative_prompt,
        },
    )


@torch.no_grad()
def decode_latents(pipeline: Any, latents: Tensor) -> Tensor:
    """Final latents (as the pipeline returns with output_type="latent") -> float images [B, 3, H, W] in [0, 1].

    The same decode as the SD / SDXL / SD3 / FLUX pipelines: undo the VAE's latent scaling (and mean/std, or the
    shift factor, when the VAE declares them), decode (in float32 when the VAE asks to be upcast), map [-1, 1] to
    [0, 1]. FLUX latents are given unpacked ([B, C, h, w]).
    """
    vae = pipeline.vae
    dtype = vae.dtype
    if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        dtype = torch.float32
        vae = vae.to(dtype)
    z = latents.to(device=vae.device, dtype=dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        m = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        z = z * s / vae.config.scaling_factor + m
    else:
        z = z / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
    image = vae.decode(z, return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """Float [3, H, W] in [0, 1] -> RGB PIL image (rounded, not truncated)."""
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def save_images(images: Tensor, paths: Sequence[str | Path]) -> list[Path]:
    """Save float images [N, 3, H, W] in [0, 1] as PNG (lossless) at `paths`; creates parent folders."""
    if len(paths) != images.shape[0]:
        raise ValueError(f"got {len(paths)} paths for {images.shape[0]} images")
    written = []
    for img, path in zip(images, paths):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        to_pil(img).save(path)
        written.append(path)
    return written


def image_filename(prompt_index: int, k: int, seed: int) -> str:
    """File name of one generated image: prompt index, image number and seed, so a file names its recipe."""
    return f"p{prompt_index:05d}_k{k:03d}_s{seed}.png"
