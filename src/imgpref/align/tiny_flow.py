"""Tiny flow-matching pipelines built in code: SD3-style (`StableDiffusion3Pipeline`) and FLUX-style (`FluxPipeline`).

The real classes (SD3Transformer2DModel / FluxTransformer2DModel, AutoencoderKL with scaling and shift factors,
CLIPTextModelWithProjection / CLIPTextModel, T5EncoderModel, FlowMatchEulerDiscreteScheduler), at tiny width
with random weights (sizes follow diffusers' own dummy test configs). Nothing is downloaded: the CLIP tokenizer
is rebuilt from open_clip's BPE file (`imgpref.align.tiny`), the T5 tokenizer is a Unigram model over a fixed
small vocabulary (transformers 5 `T5Tokenizer(vocab=[(piece, score), ...])`).
"""
from __future__ import annotations

import os
import string
from pathlib import Path

import torch

from imgpref.align.tiny import TINY_RESOLUTION, _tiny_text_encoder, build_clip_tokenizer

T5_DIM = 32
_WORDS = ("a an the of in on with and photo picture image painting drawing render red green blue yellow orange "
          "purple black white bright dark light sky sun moon sea tree house city street cat dog bird car person "
          "portrait landscape night day small large old new").split()


def build_t5_tokenizer():
    """A T5 (Unigram) tokenizer needing no files: specials, whole words, then single characters as fallback."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces += [("\u2581", -8.0)] + [(c, -10.0) for c in chars] + [("\u2581" + c, -9.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _tiny_t5(seed: int, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab_size, d_model=T5_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, is_encoder_decoder=False, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval()


def _tiny_flow_vae(seed: int, latent_channels: int, scaling_factor: float, shift_factor: float):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=8, sample_size=TINY_RESOLUTION,
        scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def _tiny_flow_scheduler(shift: float):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def build_tiny_sd3_pipeline(seed: int = 0, t5: bool = True):
    """A tiny `StableDiffusion3Pipeline`: two CLIP encoders with projection (16 + 16 wide, pooled 32), an
    optional T5 encoder (d_model 32; `t5=False` leaves `text_encoder_3` out, as SD3 allows), a 4-channel VAE
    and a one-layer SD3 transformer; images are `TINY_RESOLUTION` (32) px, latents 16x16."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    clip_dim = T5_DIM // 2  # SD3 concatenates the two CLIP states (16 + 16) and pads them to the T5 width
    te1 = _tiny_text_encoder(seed + 2, with_projection=True, hidden=clip_dim)
    te2 = _tiny_text_encoder(seed + 3, with_projection=True, hidden=clip_dim)
    tok3 = build_t5_tokenizer() if t5 else None
    te3 = _tiny_t5(seed + 4, len(tok3)) if t5 else None
    vae = _tiny_flow_vae(seed + 1, 4, 1.5305, 0.0609)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=TINY_RESOLUTION // 2, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=T5_DIM, pooled_projection_dim=2 * clip_dim,
        out_channels=4, pos_embed_max_size=TINY_RESOLUTION // 2,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=_tiny_flow_scheduler(3.0), vae=vae, text_encoder=te1,
        tokenizer=build_clip_tokenizer(), text_encoder_2=te2, tokenizer_2=build_clip_tokenizer(),
        text_encoder_3=te3, tokenizer_3=tok3,
    )


def build_tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True):
    """A tiny `FluxPipeline`: a CLIP text encoder (pooled 32), a T5 encoder (d_model 32), a 1-channel VAE
    (packed 2x2 to 4 transformer channels) and a FLUX transformer with one double and one single block and
    (by default) a guidance embedding, as FLUX.1-dev; images are `TINY_RESOLUTION` (32) px."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    te1 = _tiny_text_encoder(seed + 2, hidden=32)
    tok2 = build_t5_tokenizer()
    te2 = _tiny_t5(seed + 4, len(tok2))
    vae = _tiny_flow_vae(seed + 1, 1, 0.3611, 0.1159)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8),
    )
    pipe = FluxPipeline(scheduler=_tiny_flow_scheduler(1.0), vae=vae, text_encoder=te1, tokenizer=build_clip_tokenizer(),
                        text_encoder_2=te2, tokenizer_2=tok2, transformer=transformer)
    pipe.default_sample_size = TINY_RESOLUTION // pipe.vae_scale_factor  # 32 px by default, not 256
    return pipe


def build_tiny_flow_pipeline(kind: str = "sd3", seed: int = 0, **kwargs):
    """`build_tiny_sd3_pipeline` (kind "sd3") or `build_tiny_flux_pipeline` (kind "flux")."""
    if kind == "sd3":
        return build_tiny_sd3_pipeline(seed=seed, **kwargs)
    if kind == "flux":
        return build_tiny_flux_pipeline(seed=seed, **kwargs)
    raise ValueError(f"kind must be 'sd3' or 'flux'; got {kind!r}")


def save_tiny_flow_pipeline(directory: str | os.PathLike, kind: str = "sd3", seed: int = 0, **kwargs) -> Path:
    """Build a tiny flow pipeline and `save_pretrained` it to `directory` (loadable offline). Returns the folder.

    A FLUX folder loads with FluxPipeline's own default size (256 px): pass --height/--width 32 when generating."""
    pipe = build_tiny_flow_pipeline(kind, seed=seed, **kwargs)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
