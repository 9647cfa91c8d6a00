"""Tiny checkpoints in each published layout (random weights), for tests, the offline demo and benchmarks.

- `write_clip_tokenizer(dir)`: vocab.json + merges.txt converted from open_clip's shipped BPE
  (`bpe_simple_vocab_16e6.txt.gz`), so a transformers `CLIPTokenizer` tokenises exactly like open_clip.
- `write_tiny_pickscore(dir)`: a folder laid out like `yuvalkirstain/PickScore_v1` (config.json +
  model.safetensors via `save_pretrained`) plus the processor files of `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`
  (preprocessor_config.json + tokenizer files).
- `write_tiny_hps_checkpoint(path)`: a tiny open_clip state dict saved with torch.save, as `HPS_v2_compressed.pt`.
- `write_tiny_open_clip_weights(path)`: an open_clip state dict file (as `open_clip_pytorch_model.bin`).
- `write_tiny_laion_head(path, input_dim)`: the LAION aesthetic MLP state dict (`layers.N.weight/bias`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from imgpref.scorers.tiny import TINY_OPEN_CLIP, tiny_open_clip_model

TINY_HF_CLIP_CONFIG: dict = {
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "max_position_embeddings": 77, "vocab_size": 49408,
                    "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    "projection_dim": 32,
}


def write_clip_tokenizer(folder: str | Path, pad_token: str = "!") -> Path:
    """Write a transformers CLIPTokenizer (vocab.json, merges.txt, ...) converted from open_clip's BPE.

    pad_token "!" (id 0) is what open_clip pads with, and what the laion ViT-H-14 tokenizer declares.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    st = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in st.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), pad_token=pad_token,
                        model_max_length=77)
    tok.save_pretrained(str(folder))
    return folder


def tiny_hf_clip(seed: int = 0, config: dict | None = None):
    """A randomly initialised tiny transformers CLIPModel (eval mode)."""
    from transformers import CLIPConfig, CLIPModel

    cfg = dict(config or TINY_HF_CLIP_CONFIG)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**cfg))
    # a logit_scale other than the init value, so tests notice if it is ignored
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    return model.eval()


def write_tiny_pickscore(folder: str | Path, seed: int = 0) -> Path:
    """A tiny PickScore-layout folder: model (save_pretrained) + CLIP processor + tokenizer files."""
    from transformers import CLIPImageProcessor

    folder = Path(folder)
    model = tiny_hf_clip(seed)
    model.save_pretrained(str(folder))
    size = TINY_HF_CLIP_CONFIG["vision_config"]["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        str(folder))
    write_clip_tokenizer(folder)
    return folder


def write_tiny_hps_checkpoint(path: str | Path, seed: int = 0, wrapped: bool = True) -> Path:
    """Save a tiny open_clip (`imgpref-tiny-vit`) state dict as HPS does: {"state_dict": sd} or the raw sd."""
    model, _ = tiny_open_clip_model(seed)
    sd = model.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd} if wrapped else sd, str(path))
    return path


def write_tiny_open_clip_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny open_clip state dict file (the layout of `open_clip_pytorch_model.bin`)."""
    model, _ = tiny_open_clip_model(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), str(path))
    return path


def write_tiny_laion_head(path: str | Path, input_dim: int = 32, seed: int = 0) -> Path:
    """Save a LAION-aesthetic-layout MLP state dict with a tiny input width."""
    from imgpref.scorers.heads import LaionAestheticHead

    torch.manual_seed(seed)
    head = LaionAestheticHead(input_dim)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(head.state_dict(), str(path))
    return path


__all__ = ["TINY_OPEN_CLIP", "TINY_HF_CLIP_CONFIG", "write_clip_tokenizer", "tiny_hf_clip", "write_tiny_pickscore",
           "write_tiny_hps_checkpoint", "write_tiny_open_clip_weights", "write_tiny_laion_head"]
