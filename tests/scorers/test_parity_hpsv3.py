"""HPSv3 equals its reference computation (MizzenAI/HPSv3 inference.py + Qwen2VLRewardModelBT.forward), run here
the reference's way on a tiny Qwen2-VL whose state dict is saved in the published layout of HPSv3.safetensors.

The reference side uses transformers' own Qwen2-VL classes and Qwen2VLImageProcessor (what HPSv3 runs), the
chat template of Qwen2-VL-7B-Instruct through `apply_chat_template`, qwen-vl-utils' resize rule written out
below, and the token-level forward of Qwen2VLRewardModelBT (embeddings, image features scattered into the
<|image_pad|> positions, decoder with default positions, rm_head on the <|Reward|> position)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.weights import WeightsNotFoundError

ATOL = 1e-4
FACTOR, PIXELS = 28, 256 * 28 * 28  # HPSv3 inference: min_pixels = max_pixels = 256 * 28 * 28
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL-7B-Instruct's chat template (chat_template.json)
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == "
    "'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def _tokenizer():
    """A byte-level Qwen2 tokenizer (no merges) with Qwen2-VL's special tokens; <|Reward|> is NOT in it (HPSv3
    adds it at load time)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


def _randomise(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith("norm.weight") or "norm1" in name or "norm2" in name or "ln_q" in name \
                or "layernorm" in name else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder with HPSv3.safetensors + config/tokenizer files, reference model, rm_head, tokenizer with reward)."""
    from safetensors.torch import save_file
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hpsv3") / "HPSv3"
    folder.mkdir()
    tok = _tokenizer()
    tok.save_pretrained(str(folder))
    ids = tok.convert_tokens_to_ids(SPECIALS)
    rows = len(tok) + 1  # + <|Reward|>: HPSv3 resizes the embeddings to len(tokenizer)
    text = dict(vocab_size=rows, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [1, 1, 2]},
                pad_token_id=tok.pad_token_id)
    vision = dict(depth=2, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2)
    cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids[4], video_token_id=ids[5],
                        vision_start_token_id=ids[2], vision_end_token_id=ids[3], tie_word_embeddings=False)
    ref = Qwen2VLForConditionalGeneration(cfg).eval()
    _randomise(ref, 1)
    rm_head = torch.nn.Sequential(torch.nn.Linear(32, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.05),
                                  torch.nn.Linear(1024, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    _randomise(rm_head, 2)
    # HPSv3.safetensors: keys of transformers 4.45 (`model.layers.*`, `visual.*`), as MizzenAI/HPSv3 #15 shows
    sd = {}
    for k, v in ref.state_dict().items():
        if k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            k = k[len("model."):]
        sd[k] = v.contiguous()
    sd.update({f"rm_head.{k}": v.contiguous() for k, v in rm_head.state_dict().items()})
    for key in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "visual.merger.mlp.2.weight",
                "visual.blocks.0.attn.qkv.weight", "lm_head.weight", "rm_head.5.bias"):
        assert key in sd, key
    save_file(sd, str(folder / "HPSv3.safetensors"))
    # the base model's config as published declares a larger (padded) vocabulary than the checkpoint's rows
    cfg.text_config.vocab_size = rows + 13
    cfg.save_pretrained(str(folder))
    ref_tok = _tokenizer()
    ref_tok.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
    return folder, ref, rm_head, ref_tok


def ref_smart_resize(height: int, width: int) -> tuple[int, int]:
    """qwen-vl-utils smart_resize with factor 28 and min_pixels = max_pixels = 256 * 28 * 28."""
    h, w = max(FACTOR, round(height / FACTOR) * FACTOR), max(FACTOR, round(width / FACTOR) * FACTOR)
    if h * w > PIXELS:
        beta = math.sqrt(height * width / PIXELS)
        return math.floor(height / beta / FACTOR) * FACTOR, math.floor(width / beta / FACTOR) * FACTOR
    if h * w < PIXELS:
        beta = math.sqrt(PIXELS / (height * width))
        return math.ceil(height * beta / FACTOR) * FACTOR, math.ceil(width * beta / FACTOR) * FACTOR
    return h, w


@torch.no_grad()
def reference_rewards(ref, rm_head, tok, image: Image.Image, prompt: str) -> torch.Tensor:
    """[mu, log sigma] the way HPSv3RewardInferencer.reward computes it."""
    from transformers import Qwen2VLImageProcessor

    from imgpref.scorers.hpsv3 import INSTRUCTION

    im = image.convert("RGB")  # HPSv3's fetch_image
    h, w = ref_smart_resize(im.height, im.width)
    im = im.resize((w, h), Image.BICUBIC)
    proc = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)  # Qwen2-VL-7B-Instruct's processor config
    enc = proc(images=[im], return_tensors="pt")
    pv, grid = enc["pixel_values"], enc["image_grid_thw"]
    text = INSTRUCTION.format(text_prompt=prompt) + "\nPlease provide the overall ratings of this image: <|Reward|>\n\nEND\n"
    messages = [{"role": "user", "content": [{"type": "image", "image": im, "min_pixels": PIXELS,
                                              "max_pixels": PIXELS}, {"type": "text", "text": text}]}]
    chat = tok.apply_chat_template(messages, chat_template=QWEN2VL_TEMPLATE, tokenize=False,
                                   add_generation_prompt=True)
    n = int(grid.prod()) // 4  # the processor expands <|image_pad|> to one token per merged 2 x 2 patch group
    chat = chat.replace("<|image_pad|>", "<|image_pad|>" * n)
    ids = tok(chat, return_tensors="pt")["input_ids"]
    emb = ref.get_input_embeddings()(ids)
    feats = ref.model.visual(pv, grid_thw=grid).pooler_output
    emb = emb.masked_scatter((ids == ref.config.image_token_id).unsqueeze(-1).expand_as(emb), feats.to(emb.dtype))
    hidden = ref.model.language_model(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).last_hidden_state
    logits = rm_head(hidden.float())
    return logits[ids == tok.convert_tokens_to_ids("<|Reward|>")][0]


def _images():
    from skimage import data

    return [Image.fromarray(data.astronaut()).resize((300, 200)), Image.fromarray(data.coffee()).resize((150, 260))]


PROMPTS = ["an astronaut with a flag", "a cup of coffee, top view"]


def test_hpsv3_matches_reference(tiny):
    folder, ref, rm_head, tok = tiny
    torch.set_num_threads(1)
    scorer = load_scorer("hpsv3", weights=folder)
    images = _images()
    out = scorer.score_with_extras(images, PROMPTS)  # two aspect ratios: different token counts in one batch
    expected = torch.stack([reference_rewards(ref, rm_head, tok, im, p) for im, p in zip(images, PROMPTS)])
    assert expected[:, 0].std() > 1e-2  # the tiny model tells the two images apart
    assert torch.allclose(out["score"], expected[:, 0], atol=ATOL), (out["score"], expected[:, 0])
    assert torch.allclose(out["sigma"], expected[:, 1].exp(), atol=ATOL), (out["sigma"], expected[:, 1].exp())
    assert torch.allclose(scorer.score(images, PROMPTS), out["score"], atol=1e-6)


def test_hpsv3_scores_a_folder_through_the_pipeline(tiny, tmp_path):
    """`imgpref score`'s pipeline: images of two aspect ratios, prompts of different lengths (cached text
    embeddings must stack), the same mu as the reference."""
    from imgpref.scorers.score_paths import score_paths

    folder, ref, rm_head, tok = tiny
    torch.set_num_threads(1)
    images = _images()
    for i, im in enumerate(images):
        im.save(tmp_path / f"{i}.png")
    prompts = {str(tmp_path / f"{i}.png"): p for i, p in enumerate([PROMPTS[0], PROMPTS[1] + ", " * 40])}
    scorer = load_scorer("hpsv3", weights=folder)
    df = score_paths(tmp_path, [scorer], prompts=prompts, num_workers=0, batch_size=2, progress=False)
    got = dict(zip(df["path"].map(lambda p: Path(p).name), df["score"]))
    for i, im in enumerate(images):
        expected = reference_rewards(ref, rm_head, tok, im, prompts[str(tmp_path / f"{i}.png")])[0]
        assert abs(got[f"{i}.png"] - float(expected)) < ATOL, (i, got, float(expected))


def test_hpsv3_differentiable_path(tiny):
    folder = tiny[0]
    torch.set_num_threads(1)
    scorer = load_scorer("hpsv3", weights=folder)
    im = _images()[0].resize((224, 224))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    x = x.unsqueeze(0).requires_grad_(True)
    r = scorer.as_differentiable_reward()(x, PROMPTS[:1])
    r.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.allclose(r.detach(), scorer.score(x.detach(), PROMPTS[:1]), atol=1e-5)
    # up to 448 x 448 by torch's bicubic instead of PIL's: 1e-3 apart on this tiny model
    assert torch.allclose(r.detach(), scorer.score([im], PROMPTS[:1]), atol=1e-2)


def test_hpsv3_rm_head_stays_fp32_in_bf16(tiny):
    """As the reference (`model.to(bf16)`, then `rm_head.to(float32)`): the head's MLP keeps float32."""
    torch.set_num_threads(1)
    scorer = load_scorer("hpsv3", weights=tiny[0], dtype="bf16")
    assert next(scorer.head.language_model.parameters()).dtype == torch.bfloat16
    assert next(scorer.backbone.visual.parameters()).dtype == torch.bfloat16
    assert next(scorer.head.rm_head.parameters()).dtype == torch.float32
    out = scorer.score_with_extras(_images(), PROMPTS)
    assert torch.isfinite(out["score"]).all() and (out["sigma"] > 0).all()
    # 240 x 150 -> 364 x 588 pixels -> 13 x 21 = 273 merged tokens, a count bf16 cannot hold (it rounds to 272)
    im = _images()[0].resize((240, 150))
    emb = scorer.backbone.embed_images(scorer.preprocess(im).unsqueeze(0).to(torch.bfloat16))
    assert emb.dtype == torch.float32 and emb[0, 0].item() == 273


def test_hpsv3_missing_weights_one_line(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError) as e:
        load_scorer("hpsv3", weights=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "HPSv3.safetensors" in msg and "MizzenAI/HPSv3" in msg and str(tmp_path) in msg
    _own_hf_cache(monkeypatch, tmp_path / "cache")
    with pytest.raises(WeightsNotFoundError) as e:
        load_scorer("hpsv3")
    msg = str(e.value)
    assert "\n" not in msg and "HPSv3.safetensors" in msg and str(tmp_path / "cache") in msg


def _own_hf_cache(monkeypatch, cache) -> None:
    """An HF cache of this test's own (the shared offline cache of conftest stays untouched)."""
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))


def _cache_repo(cache, repo: str, files) -> None:
    import shutil

    d = cache / ("models--" + repo.replace("/", "--"))
    snap = d / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in files:
        shutil.copy(f, snap / f.name)
    (d / "refs").mkdir()
    (d / "refs" / "main").write_text("0" * 40)


def test_hpsv3_loads_from_hf_cache(tiny, tmp_path, monkeypatch):
    folder = tiny[0]
    _own_hf_cache(monkeypatch, tmp_path / "cache")
    _cache_repo(tmp_path / "cache", "MizzenAI/HPSv3", [folder / "HPSv3.safetensors"])
    base = [p for p in folder.iterdir() if p.name != "HPSv3.safetensors"]
    _cache_repo(tmp_path / "cache", "Qwen/Qwen2-VL-7B-Instruct", base)
    torch.set_num_threads(1)
    images = _images()[:1]
    cached = load_scorer("hpsv3").score(images, PROMPTS[:1])
    local = load_scorer("hpsv3", weights=folder).score(images, PROMPTS[:1])
    assert torch.allclose(cached, local, atol=1e-6)


def test_contract_without_extras_gives_the_score_alone(images):
    scorer = load_scorer("contrast")
    out = scorer.score_with_extras(images)
    assert list(out) == ["score"] and torch.equal(out["score"], scorer.score(images))


def test_hpsv3_missing_base_files_one_line(tiny, tmp_path, monkeypatch):
    """The checkpoint alone (no config/tokenizer of Qwen2-VL-7B-Instruct beside it, none cached): one line."""
    import shutil

    _own_hf_cache(monkeypatch, tmp_path / "cache")
    shutil.copy(tiny[0] / "HPSv3.safetensors", tmp_path / "HPSv3.safetensors")
    with pytest.raises(WeightsNotFoundError) as e:
        load_scorer("hpsv3", weights=tmp_path / "HPSv3.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and "Qwen/Qwen2-VL-7B-Instruct" in msg and "config.json" in msg
