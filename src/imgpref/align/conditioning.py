"""UNet conditioning for training: prompt embeddings (SD1.5 / SDXL) and SDXL micro-conditioning time ids."""
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
def encode_prompts(pipe, prompts: Sequence[str], device: torch.device) -> dict[str, Tensor]:
    """Prompt embeddings exactly as the pipeline computes them at inference (no classifier-free guidance).

    Returns {"encoder_hidden_states": [B, 77, D]} and, for SDXL, also {"text_embeds": [B, D2]} (pooled).
    """
    prompts = list(prompts)
    if hasattr(pipe, "text_encoder_2") and getattr(pipe, "text_encoder_2", None) is not None:
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return {"encoder_hidden_states": embeds, "text_embeds": pooled}
    embeds, _ = pipe.encode_prompt(prompts, device, 1, False)
    return {"encoder_hidden_states": embeds}
