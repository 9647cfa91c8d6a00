"""ImageReward equals its reference computation (THUDM/ImageReward ImageReward.py + BLIP's vit.py / med.py),
written here independently in plain torch from the raw state dict of a tiny checkpoint in the published layout."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from imgpref.scorers.registry import load_scorer
from imgpref.scorers.weights import WeightsNotFoundError

ATOL = 1e-4
# the constants of ImageReward.py (not imgpref's)
REF_MEAN, REF_STD = 0.16717362830052426, 1.0333394966054072


@pytest.fixture(scope="module")
def ir_folder(tmp_path_factory):
    from imgpref.scorers.tiny_checkpoints import write_tiny_imagereward

    return write_tiny_imagereward(tmp_path_factory.mktemp("ir") / "ImageReward", seed=7)


def _ln(x, sd, p, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)


def _lin(x, sd, p):
    return x @ sd[p + ".weight"].T + sd[p + ".bias"]


def _mha(q, k, v, heads, add_mask=None):
    b, nq, c = q.shape
    hd = c // heads
    q, k, v = (t.reshape(b, t.shape[1], heads, hd).transpose(1, 2) for t in (q, k, v))
    att = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if add_mask is not None:
        att = att + add_mask
    return (att.softmax(-1) @ v).transpose(1, 2).reshape(b, nq, c)


def reference_vit(sd, x, heads):
    """BLIP's VisionTransformer.forward: patches + cls + pos, pre-norm blocks (LN eps 1e-6), final norm."""
    p = "blip.visual_encoder"
    w = sd[f"{p}.patch_embed.proj.weight"]
    x = F.conv2d(x, w, sd[f"{p}.patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{p}.cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[f"{p}.pos_embed"]
    i = 0
    while f"{p}.blocks.{i}.norm1.weight" in sd:
        b = f"{p}.blocks.{i}"
        h = _ln(x, sd, f"{b}.norm1", 1e-6)
        qkv = _lin(h, sd, f"{b}.attn.qkv").reshape(x.shape[0], x.shape[1], 3, -1)
        x = x + _lin(_mha(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], heads), sd, f"{b}.attn.proj")
        h = _ln(x, sd, f"{b}.norm2", 1e-6)
        x = x + _lin(F.gelu(_lin(h, sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
        i += 1
    return _ln(x, sd, f"{p}.norm", 1e-6)


def reference_bert(sd, ids, mask, image_embeds, heads, eps=1e-12):
    """BLIP med.py BertModel (mode multimodal): embeddings, then per layer self-attention (padding mask
    (1 - mask) * -10000), cross-attention to all image tokens, feed-forward; post-LN residuals."""
    e = "blip.text_encoder"
    x = sd[f"{e}.embeddings.word_embeddings.weight"][ids] + sd[f"{e}.embeddings.position_embeddings.weight"][
        : ids.shape[1]]
    x = _ln(x, sd, f"{e}.embeddings.LayerNorm", eps)
    add = ((1.0 - mask[:, None, None, :].float()) * -10000.0)
    i = 0
    while f"{e}.encoder.layer.{i}.attention.self.query.weight" in sd:
        p = f"{e}.encoder.layer.{i}"
        a = _mha(_lin(x, sd, f"{p}.attention.self.query"), _lin(x, sd, f"{p}.attention.self.key"),
                 _lin(x, sd, f"{p}.attention.self.value"), heads, add)
        x = _ln(_lin(a, sd, f"{p}.attention.output.dense") + x, sd, f"{p}.attention.output.LayerNorm", eps)
        c = _mha(_lin(x, sd, f"{p}.crossattention.self.query"), _lin(image_embeds, sd, f"{p}.crossattention.self.key"),
                 _lin(image_embeds, sd, f"{p}.crossattention.self.value"), heads)
        x = _ln(_lin(c, sd, f"{p}.crossattention.output.dense") + x, sd, f"{p}.crossattention.output.LayerNorm", eps)
        f = _lin(F.gelu(_lin(x, sd, f"{p}.intermediate.dense")), sd, f"{p}.output.dense")
        x = _ln(f + x, sd, f"{p}.output.LayerNorm", eps)
        i += 1
    return x


@torch.no_grad()
def imagereward_reference(folder, images, prompts):
    """ImageReward.score: tokenizer (max_length 35), _transform(224), ViT, BERT on the prompt with the image
    tokens, [CLS] -> mlp -> (r - mean) / std."""
    import json

    from transformers import BertTokenizer

    sd = torch.load(folder / "ImageReward.pt", map_location="cpu", weights_only=True)
    med = json.loads((folder / "med_config.json").read_text())
    tok = BertTokenizer(str(folder / "vocab.txt"))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    size = int(round(math.sqrt(sd["blip.visual_encoder.pos_embed"].shape[1] - 1))) * \
        sd["blip.visual_encoder.patch_embed.proj.weight"].shape[-1]
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                    lambda im: im.convert("RGB"), T.ToTensor(),
                    T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    vit_heads = sd["blip.visual_encoder.cls_token"].shape[-1] // 64
    out = []
    for im, pr in zip(images, prompts):
        t = tok(pr, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        img = reference_vit(sd, tf(im)[None], vit_heads)
        cls = reference_bert(sd, t.input_ids, t.attention_mask, img, med["num_attention_heads"])[:, 0, :]
        r = cls
        for idx in (0, 2, 4, 6, 7):
            r = _lin(r, sd, f"mlp.layers.{idx}")
        out.append(((r - REF_MEAN) / REF_STD).reshape(()))
    return torch.stack(out)


def test_imagereward_equals_reference(ir_folder, images, prompts):
    scorer = load_scorer("imagereward", weights=ir_folder)
    got = scorer.score(images, prompts)
    want = imagereward_reference(ir_folder, images, prompts)
    assert want.std() > 0.05  # the images are told apart, so a wrong mapping would show
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_imagereward_missing_weights_is_one_line(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        load_scorer("imagereward", weights=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "ImageReward.pt" in msg and "med_config.json" in msg and "THUDM/ImageReward" in msg
    with pytest.raises(WeightsNotFoundError, match="THUDM/ImageReward"):
        load_scorer("imagereward")  # offline, empty HF cache


def test_imagereward_rejects_a_checkpoint_of_another_layout(tmp_path):
    torch.save({"layers.0.weight": torch.zeros(1, 2)}, str(tmp_path / "ImageReward.pt"))
    (tmp_path / "med_config.json").write_text("{}")
    with pytest.raises(ValueError, match="not an ImageReward checkpoint"):
        load_scorer("imagereward", weights=tmp_path)


def test_imagereward_files_through_the_engine_equal_the_reference(ir_folder, images, prompts, tmp_path):
    """`imgpref score`'s engine (batched, with the embedding cache) on JPEG files = the reference on the files."""
    from PIL import Image

    from imgpref.scorers.score_paths import score_paths

    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"im{i}.jpg")
        im.save(paths[-1], quality=95)
    scorer = load_scorer("imagereward", weights=ir_folder)
    mapping = {str(p): pr for p, pr in zip(paths, prompts)}
    for _ in range(2):  # the second pass takes the image embeddings from the cache
        table = score_paths([str(p) for p in paths], [scorer], prompts=mapping, num_workers=0, progress=False,
                            cache=tmp_path / "cache")
        got = torch.tensor([float(table.set_index("path").loc[str(p), "score"]) for p in paths])
        want = imagereward_reference(ir_folder, [Image.open(p) for p in paths], prompts)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
