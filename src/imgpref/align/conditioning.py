"""Conditioning for training: prompt embeddings (SD1.5 / SDXL / SD3 / FLUX) and SDXL micro-conditioning time ids."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def sdxl_time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> Tensor:
    """SDXL add_time_ids for one image: (orig_h, orig_w, crop_top, crop_left, target_h, target_w), float32 [6].

    original_size is the image's true size before any resize; crop_top_left is the crop offset in the resized
    image (as the SDXL training scripts compute it); target_size is the training resolution.
    """
    vals = (*original_size, *crop_top_left, *target_size)
    if len(vals) != 6 or any(int(v) != v or v < 0 for v in vals):
        raise ValueError(f"SDXL time ids need 3 (h, w) pairs of non-negative ints; got {vals}")
    return torch.tensor(vals, dtype=torch.float32)


@torch.no_grad()
def encode_prompts(pipe, prompts: Sequence[str], device: torch.device, *,
                   max_sequence_length: int | None = None) -> dict[str, Tensor]:
    """Prompt embeddings exactly as the pipeline computes them at inference (no classifier-free guidance).

    SD1.5: {"encoder_hidden_states": [B, 77, D]}; SDXL adds {"text_embeds": [B, D2]} (pooled).
    SD3 / SD3.5 (two CLIP encoders + optional T5): {"encoder_hidden_states" [B, 77 + L, D], "pooled_projections"}.
    FLUX (CLIP pooled + T5): {"encoder_hidden_states" [B, L, D], "pooled_projections", "txt_ids" [L, 3]}.
    max_sequence_length: T5 tokens L for SD3 / FLUX (None: the pipeline's own default, as `__call__` uses).
    """
    from imgpref.align.flow import flow_kind

    prompts = list(prompts)
    kind = flow_kind(pipe)
    msl = {} if max_sequence_length is None else {"max_sequence_length": int(max_sequence_length)}
    if kind == "sd3":
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, **msl,
        )
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}
    if kind == "flux":
        embeds, pooled, txt_ids = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                     num_images_per_prompt=1, **msl)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled, "txt_ids": txt_ids}
    if hasattr(pipe, "text_encoder_2") and getattr(pipe, "text_encoder_2", None) is not None:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return {"encoder_hidden_states": embeds}


# Conditioning entries shared by the whole batch (not per sample), never repeated.
_SHARED = ("txt_ids",)


def repeat_conditioning(cond: dict[str, Tensor], n: int, *, interleave: bool) -> dict[str, Tensor]:
    """Repeat per-sample conditioning for n images per prompt: [B, ...] -> [n B, ...].

    interleave=False: the whole batch n times (pairs: winners then losers); True: each row n times in a row
    (lists: the K images of one prompt are adjacent). Batch-wide entries (FLUX `txt_ids`) are left as they are.
    """
    out = {}
    for k, v in cond.items():
        if k in _SHARED:
            out[k] = v
        else:
            out[k] = v.repeat_interleave(n, 0) if interleave else torch.cat([v] * n)
    return out
