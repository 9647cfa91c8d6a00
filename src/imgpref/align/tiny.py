"""Tiny diffusers pipelines built from components in code (tests, demo, notebook, tiny recipes).

Same classes as the real SD1.5 / SDXL pipelines (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, the CLIP
BPE tokenizer, a DDIM scheduler), only narrow and with random weights. Nothing is downloaded: the tokenizer is
built from the BPE merges that ship inside open_clip, so it tokenizes exactly like open_clip's CLIP tokenizer.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import torch

TINY_RESOLUTION = 32  # pixels; the VAE halves it, so the UNet works on 16x16 latents
_MAX_LEN = 77


@lru_cache(maxsize=1)
def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The CLIP BPE vocabulary and merges, rebuilt from open_clip's `bpe_simple_vocab_16e6.txt.gz`.

    Same construction as open_clip's SimpleTokenizer (bytes, bytes + '</w>', merges, then the two special
    tokens), with the special tokens spelt as transformers spells them, so the ids coincide (49406, 49407).
    """
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not bpe.is_file():
        raise FileNotFoundError(f"open_clip's BPE file is missing: {bpe} (reinstall open_clip_torch)")
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _bytes_to_unicode() -> dict[int, str]:
    # The GPT-2/CLIP reversible byte -> printable unicode map (a published table, restated here).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def tokenizer_files(directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write CLIP `vocab.json` and `merges.txt` (from open_clip's BPE file) into `directory`; return both paths.

    `directory` defaults to `$IMGPREF_CACHE/clip_tokenizer` (or `~/.cache/imgpref/clip_tokenizer`).
    """
    import json

    if directory is None:
        root = os.environ.get("IMGPREF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "imgpref")
        directory = os.path.join(root, "clip_tokenizer")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges()
    vocab_file, merges_file = d / "vocab.json", d / "merges.txt"
    if not vocab_file.is_file() or not merges_file.is_file():
        # Write to temporaries and rename, so a concurrent reader never sees half a file.
        tmp_v, tmp_m = d / f".vocab.{os.getpid()}.tmp", d / f".merges.{os.getpid()}.tmp"
        tmp_v.write_text(json.dumps(vocab), encoding="utf-8")
        tmp_m.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        os.replace(tmp_v, vocab_file)
        os.replace(tmp_m, merges_file)
    return vocab_file, merges_file


def build_clip_tokenizer(directory: str | os.PathLike | None = None):
    """A transformers `CLIPTokenizer` (max length 77) that tokenizes like `open_clip.get_tokenizer('ViT-B-32')`."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = tokenizer_files(directory)
    # positional: transformers 4.x names these vocab_file/merges_file, 5.x vocab/merges
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=_MAX_LEN)


def _tiny_text_encoder(seed: int, with_projection: bool = False, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_LEN,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,  # pooling reads the first EOS position, as in the real CLIP text models
        pad_token_id=49407,
        hidden_act="quick_gelu",
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _tiny_vae(seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
    ).eval()


def _tiny_scheduler(prediction_type: str):
    from diffusers import DDIMScheduler

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction'; got {prediction_type!r}")
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def build_tiny_pipeline(seed: int = 0, kind: str = "sd15", prediction_type: str = "epsilon"):
    """A tiny, randomly initialised diffusers pipeline of the real architecture; nothing is downloaded.

    kind: "sd15" -> `StableDiffusionPipeline` (one CLIP text encoder, cross-attention dim 32);
          "sdxl" -> `StableDiffusionXLPipeline` (two text encoders, pooled embeddings and add_time_ids).
    Images are `TINY_RESOLUTION` (32) px; the same `seed` always gives the same weights.
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer = build_clip_tokenizer()
    vae = _tiny_vae(seed + 1)
    scheduler = _tiny_scheduler(prediction_type)
    common_unet = dict(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    if kind == "sd15":
        text_encoder = _tiny_text_encoder(seed + 2)
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(cross_attention_dim=32, **common_unet)
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if kind == "sdxl":
        text_encoder = _tiny_text_encoder(seed + 2)
        text_encoder_2 = _tiny_text_encoder(seed + 3, with_projection=True)
        torch.manual_seed(seed)
        time_dim = 8
        unet = UNet2DConditionModel(
            cross_attention_dim=64,  # hidden states of both encoders, concatenated (32 + 32)
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + 32,  # 6 time ids + pooled text_embeds
            transformer_layers_per_block=1,
            **common_unet,
        )
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=build_clip_tokenizer(),
            unet=unet,
            scheduler=scheduler,
            add_watermarker=False,
        )
    raise ValueError(f"kind must be 'sd15' or 'sdxl'; got {kind!r}")


def save_tiny_pipeline(directory: str | os.PathLike, seed: int = 0, kind: str = "sd15", **kwargs) -> Path:
    """Build a tiny pipeline and `save_pretrained` it to `directory`, loadable offline by
    `DiffusionPipeline.from_pretrained(directory)`. Returns the directory."""
    pipe = build_tiny_pipeline(seed=seed, kind=kind, **kwargs)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out
