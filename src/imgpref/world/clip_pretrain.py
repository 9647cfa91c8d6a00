"""The world's CLIP: a small transformers `CLIPModel` pretrained contrastively on the world's (image, caption) pairs.

It plays CLIP-H's part in the world: its text tower is the base pipeline's (frozen) text encoder, and reward
models are fine-tuned from it as an `hf_clip` backbone (`scorer.backbone: {type: hf_clip, source: DIR}`), as
PickScore is fine-tuned from CLIP-H. The folder written by `save_world_clip` holds the model (`save_pretrained`),
a `CLIPImageProcessor` (32 px, no resize) and the CLIP BPE tokenizer built offline from open_clip's merges.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from imgpref.world.pretrain_losses import contrastive_loss

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TRAIN_TOKENS = 16  # world captions are <= 12 tokens; the causal text tower's EOS state ignores later positions

WORLD_CLIP_CONFIG: dict = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu",
                    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 4, "hidden_act": "quick_gelu"},
    "projection_dim": 32,
}


def build_world_clip(seed: int = 0, config: dict | None = None):
    """A randomly initialised world CLIP (`config`, default `WORLD_CLIP_CONFIG`), deterministic from `seed`."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(**(config or WORLD_CLIP_CONFIG)))


def world_tokenizer():
    """The CLIP BPE tokenizer (transformers `CLIPTokenizer`, max length 77, pads with <|endoftext|> as SD1.5's)."""
    from imgpref.align.tiny import build_clip_tokenizer

    return build_clip_tokenizer()


def clip_pixels(images: np.ndarray) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] normalised with CLIP's mean and std (what the processor does)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def tokenize(prompts: Sequence[str], length: int = 77) -> Tensor:
    """input_ids [N, length] of the prompts (padded/truncated to the tokenizer's 77, then cut to `length`)."""
    tok = world_tokenizer()
    ids = tok(list(prompts), padding="max_length", truncation=True, max_length=77, return_tensors="pt")["input_ids"]
    return ids[:, :length]


class CLIPBatchLoss:
    """Batch (pixels, caption index) -> contrastive loss; the token table holds one row per distinct caption."""

    def __init__(self, token_table: Tensor) -> None:
        self.tokens = token_table

    def __call__(self, model, batch, generator) -> tuple[Tensor, dict[str, Tensor]]:
        pixels, cap = batch
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        txt = model.text_projection(model.text_model(input_ids=self.tokens[cap]).pooler_output)
        loss = contrastive_loss(img, txt, model.logit_scale, cap)
        return loss, {"logit_scale": model.logit_scale.detach().exp()}


def pretrain_clip(images: np.ndarray, prompts: Sequence[str], *, steps: int = 600, batch_size: int = 128,
                  lr: float = 1e-3, seed: int = 0, progress: bool = False, config: dict | None = None,
                  processes: int = 1):
    """Pretrain a world CLIP (`config`, default `WORLD_CLIP_CONFIG`) on (image, caption) pairs with Lightning;
    returns the model (eval mode). processes: data-parallel CPU ranks (`pretrain_modules.fit_stage`)."""
    from imgpref.world.pretrain_modules import fit_stage

    captions = sorted(set(prompts))
    index = {c: i for i, c in enumerate(captions)}
    cap = torch.tensor([index[p] for p in prompts])
    table = tokenize(captions, TRAIN_TOKENS)
    model = build_world_clip(seed, config)
    fit_stage(model, CLIPBatchLoss(table), (clip_pixels(images), cap), steps=steps, batch_size=batch_size, lr=lr,
              seed=seed, warmup=min(50, steps // 5 + 1), weight_decay=0.1, progress=progress, processes=processes)
    return model.eval()


@torch.no_grad()
def retrieval_accuracy(model, images: np.ndarray, prompts: Sequence[str], candidates: Sequence[str]) -> float:
    """Share of images whose best-matching caption among `candidates` is their own prompt."""
    cands = list(candidates)
    img = model.visual_projection(model.vision_model(pixel_values=clip_pixels(images)).pooler_output)
    txt = model.text_projection(model.text_model(input_ids=tokenize(cands, TRAIN_TOKENS)).pooler_output)
    best = (torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()).argmax(1)
    return float(np.mean([cands[int(b)] == p for b, p in zip(best, prompts)]))


def save_world_clip(model, folder: str | os.PathLike) -> Path:
    """Write model + processor + tokenizer to `folder` (an `hf_clip` backbone source for `imgpref train`)."""
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    size = int(model.config.vision_config.image_size)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                       image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)).save_pretrained(str(folder))
    world_tokenizer().save_pretrained(str(folder))
    return folder


def text_encoder_from_clip(model):
    """The CLIP's text tower as a standalone `CLIPTextModel` (same weights), for the diffusers pipeline."""
    from transformers import CLIPTextModel

    te = CLIPTextModel(model.config.text_config)
    te.load_state_dict(model.text_model.state_dict())
    return te.eval().requires_grad_(False)
