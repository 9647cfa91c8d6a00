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
    # positional: transformers 4.x names these vocab_file/merges_file, 5.x vocab/merges
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token,
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


# --- ImageReward -------------------------------------------------------------------------------------------------
TINY_IMAGEREWARD = {"vision_width": 128, "vision_depth": 2, "vision_mlp": 64, "image_size": 32, "patch": 16,
                    "text_hidden": 32, "text_layers": 2, "text_heads": 2, "text_intermediate": 64,
                    "max_position_embeddings": 40}
TINY_BERT_WORDS = ("a", "an", "the", "of", "on", "in", "with", "and", "photo", "cat", "dog", "ginger", "white",
                   "suit", "astronaut", "cup", "coffee", "table", "red", "car", "##s", "##ing", ".", ",")


def write_tiny_bert_vocab(folder: str | Path) -> Path:
    """A tiny BERT vocab.txt ([PAD]=0, [UNK], [CLS], [SEP], [MASK], a few words): BertTokenizer reads it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_BERT_WORDS]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder / "vocab.txt"


def write_tiny_imagereward(folder: str | Path, seed: int = 0) -> Path:
    """A folder laid out like huggingface.co/THUDM/ImageReward: `ImageReward.pt` (a state dict with the published
    key names: `blip.visual_encoder.*` timm ViT, `blip.text_encoder.*` BLIP med BERT with cross-attention,
    `mlp.layers.*`, plus BLIP's unused projections) and `med_config.json`, and a tiny `vocab.txt`."""
    c = TINY_IMAGEREWARD
    folder = Path(folder)
    n_vocab = len(TINY_BERT_WORDS) + 5 + 2  # + [DEC], [ENC] as BLIP's tokenizer adds them
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def norm(prefix: str, width: int) -> dict:
        return {f"{prefix}.weight": 1 + rnd(width, scale=0.1), f"{prefix}.bias": rnd(width, scale=0.1)}

    def linear(prefix: str, n_out: int, n_in: int) -> dict:
        return {f"{prefix}.weight": rnd(n_out, n_in, scale=1 / n_in ** 0.5), f"{prefix}.bias": rnd(n_out, scale=0.1)}

    w, t, h = c["vision_width"], (c["image_size"] // c["patch"]) ** 2 + 1, c["text_hidden"]
    sd: dict[str, torch.Tensor] = {"blip.visual_encoder.cls_token": rnd(1, 1, w),
                                   "blip.visual_encoder.pos_embed": rnd(1, t, w),
                                   "blip.visual_encoder.patch_embed.proj.weight": rnd(w, 3, c["patch"], c["patch"],
                                                                                      scale=0.05),
                                   "blip.visual_encoder.patch_embed.proj.bias": rnd(w, scale=0.1)}
    for i in range(c["vision_depth"]):
        p = f"blip.visual_encoder.blocks.{i}"
        sd.update({**norm(f"{p}.norm1", w), **linear(f"{p}.attn.qkv", 3 * w, w), **linear(f"{p}.attn.proj", w, w),
                   **norm(f"{p}.norm2", w), **linear(f"{p}.mlp.fc1", c["vision_mlp"], w),
                   **linear(f"{p}.mlp.fc2", w, c["vision_mlp"])})
    sd.update(norm("blip.visual_encoder.norm", w))
    e = "blip.text_encoder"
    sd.update({f"{e}.embeddings.word_embeddings.weight": rnd(n_vocab, h, scale=0.5),
               f"{e}.embeddings.position_embeddings.weight": rnd(c["max_position_embeddings"], h, scale=0.5),
               f"{e}.embeddings.position_ids": torch.arange(c["max_position_embeddings"])[None],
               **norm(f"{e}.embeddings.LayerNorm", h)})
    for i in range(c["text_layers"]):
        p = f"{e}.encoder.layer.{i}"
        for att, kv_in in (("attention", h), ("crossattention", w)):
            sd.update({**linear(f"{p}.{att}.self.query", h, h), **linear(f"{p}.{att}.self.key", h, kv_in),
                       **linear(f"{p}.{att}.self.value", h, kv_in), **linear(f"{p}.{att}.output.dense", h, h),
                       **norm(f"{p}.{att}.output.LayerNorm", h)})
        sd.update({**linear(f"{p}.intermediate.dense", c["text_intermediate"], h),
                   **linear(f"{p}.output.dense", h, c["text_intermediate"]), **norm(f"{p}.output.LayerNorm", h)})
    widths = [h, 1024, 128, 64, 16, 1]
    for idx, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        sd.update(linear(f"mlp.layers.{idx}", n_out, n_in))
    sd.update({**linear("blip.vision_proj", 16, w), **linear("blip.text_proj", 16, h)})  # unused by the score
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, str(folder / "ImageReward.pt"))
    med = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
           "hidden_dropout_prob": 0.1, "hidden_size": h, "initializer_range": 0.02,
           "intermediate_size": c["text_intermediate"], "layer_norm_eps": 1e-12,
           "max_position_embeddings": c["max_position_embeddings"], "model_type": "bert",
           "num_attention_heads": c["text_heads"], "num_hidden_layers": c["text_layers"], "pad_token_id": 0,
           "type_vocab_size": 2, "vocab_size": n_vocab, "encoder_width": w, "add_cross_attention": True}
    (folder / "med_config.json").write_text(json.dumps(med, indent=2))
    write_tiny_bert_vocab(folder)
    return folder


__all__ += ["TINY_IMAGEREWARD", "write_tiny_bert_vocab", "write_tiny_imagereward"]


# --- Aesthetic Predictor V2.5 (SigLIP) ---------------------------------------------------------------------------
TINY_SIGLIP_CONFIG: dict = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 1,
                    "eos_token_id": 2, "pad_token_id": 0},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
}


def write_tiny_aesthetic_v25(folder: str | Path, seed: int = 0) -> Path:
    """A folder with a tiny full `SiglipModel` laid out like google/siglip-so400m-patch14-384 (save_pretrained +
    `SiglipImageProcessor` at 32 pixels) and `aesthetic_predictor_v2_5.pth` (the `scoring_head.N.*` state dict)."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from imgpref.scorers.siglip_aesthetic import HEAD_FILE, AestheticV25Head

    folder = Path(folder)
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig(**TINY_SIGLIP_CONFIG)).eval().save_pretrained(str(folder))
    size = TINY_SIGLIP_CONFIG["vision_config"]["image_size"]
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(str(folder))
    head = AestheticV25Head(TINY_SIGLIP_CONFIG["vision_config"]["hidden_size"])
    with torch.no_grad():  # a spread of scores the test can see
        for p in head.parameters():
            p.mul_(3.0)
    torch.save(head.state_dict(), str(folder / HEAD_FILE))
    return folder


__all__ += ["TINY_SIGLIP_CONFIG", "write_tiny_aesthetic_v25"]
