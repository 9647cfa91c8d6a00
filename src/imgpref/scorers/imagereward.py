"""ImageReward (Xu et al. 2023) on transformers' BLIP classes, reading `ImageReward.pt` in its published layout.

Reference: THUDM/ImageReward `ImageReward/ImageReward.py`. The prompt is tokenised by BLIP's BERT tokenizer
(bert-base-uncased + `[DEC]` / `[ENC]`; padding to max_length 35, truncation); the BLIP ViT-L/16 encodes the image
(OpenAI-CLIP transform: PIL bicubic short side 224, centre crop, CLIP mean/std) into its token sequence; BERT with
cross-attention runs on the prompt with the image tokens as `encoder_hidden_states`; the [CLS] output goes
through the MLP 768-1024-128-64-16-1 (no activations) and the reward is standardised, `(r - mean) / std`, with
the constants of the reference code (mean 0.16717362830052426, std 1.0333394966054072).

Mapping onto transformers 5: `blip.visual_encoder.*` (timm-style ViT) -> `BlipVisionModel` (LayerNorm eps 1e-6,
exact GELU; `last_hidden_state` is post-LayerNormed, as BLIP's `norm`), `blip.text_encoder.*` (BLIP's `med.py`
BertModel without pooler) -> `BlipTextModel(add_pooling_layer=False)` built with `is_decoder=True` (that is what
creates its cross-attention layers) and run with `is_decoder=False` (bidirectional self-attention, as BLIP's
"multimodal" mode). `mlp.layers.*` load as they are.

In the Scorer contract the backbone is the ViT (its cacheable image embedding is the flattened token sequence,
[B, tokens * width]); the text side is tokenised by the backbone (`embed_texts` returns input ids and attention
mask as one float tensor [B, 2 * 35]) and the head holds the BERT cross-encoder and the MLP.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from imgpref.data.images import to_rgb
from imgpref.scorers.backbones.resize import pixels_to_clip_input
from imgpref.scorers.base import Backbone, Head
from imgpref.scorers.registry import LoadOptions
from imgpref.scorers.weights import find_in_folder, hf_cache_dir, hf_file, hf_snapshot, load_torch_state_dict, missing

REPO = "THUDM/ImageReward"
CKPT_FILE = "ImageReward.pt"
MED_CONFIG = "med_config.json"
TOKENIZER_REPO = "google-bert/bert-base-uncased"
MEAN = 0.16717362830052426
STD = 1.0333394966054072
MAX_LENGTH = 35
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WHERE = (f"get {CKPT_FILE} and {MED_CONFIG} from huggingface.co/{REPO} (huggingface-cli download {REPO} "
         f"{CKPT_FILE} {MED_CONFIG}) and vocab.txt of {TOKENIZER_REPO} into one folder")

_VIT_BLOCK = {"norm1": "layer_norm1", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
              "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


# --- key mapping ------------------------------------------------------------------------------------------------
def vision_state(sd: dict[str, Tensor], prefix: str = "blip.visual_encoder.") -> dict[str, Tensor]:
    """BLIP's timm-style ViT keys -> `BlipVisionModel` keys."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix):]
        if k == "cls_token":
            out["embeddings.class_embedding"] = v
        elif k == "pos_embed":
            out["embeddings.position_embedding"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embedding." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("norm."):
            out["post_layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            sub, leaf = rest.rsplit(".", 1)
            if sub not in _VIT_BLOCK:
                raise ValueError(f"unexpected ViT key {prefix}{k} in the ImageReward checkpoint")
            out[f"encoder.layers.{i}.{_VIT_BLOCK[sub]}.{leaf}"] = v
    return out


def text_state(sd: dict[str, Tensor], prefix: str = "blip.text_encoder.") -> dict[str, Tensor]:
    """BLIP's med.py BertModel keys -> `BlipTextModel` keys (the same names; buffers dropped)."""
    return {k[len(prefix):]: v for k, v in sd.items()
            if k.startswith(prefix) and not k.endswith("position_ids")}


def vision_config(vs: dict[str, Tensor]):
    """A `BlipVisionConfig` read off the ViT's tensor shapes (ViT-L/16 at 224 for the published file)."""
    from transformers import BlipVisionConfig

    width = int(vs["embeddings.class_embedding"].shape[-1])
    patch = int(vs["embeddings.patch_embedding.weight"].shape[-1])
    n_pos = int(vs["embeddings.position_embedding"].shape[1]) - 1
    depth = 1 + max(int(k.split(".")[2]) for k in vs if k.startswith("encoder.layers."))
    return BlipVisionConfig(hidden_size=width, intermediate_size=int(vs["encoder.layers.0.mlp.fc1.weight"].shape[0]),
                            num_hidden_layers=depth, num_attention_heads=max(1, width // 64),
                            image_size=patch * int(round(math.sqrt(n_pos))), patch_size=patch,
                            layer_norm_eps=1e-6, hidden_act="gelu")


def text_config(med: dict[str, Any], vision_width: int):
    """A `BlipTextConfig` from BLIP's med_config.json; `encoder_width` is the ViT's width (as BLIP sets it)."""
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]),
        intermediate_size=int(med["intermediate_size"]), num_hidden_layers=int(med["num_hidden_layers"]),
        num_attention_heads=int(med["num_attention_heads"]),
        max_position_embeddings=int(med.get("max_position_embeddings", 512)),
        layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)), hidden_act=str(med.get("hidden_act", "gelu")),
        pad_token_id=int(med.get("pad_token_id", 0)), encoder_hidden_size=int(vision_width), is_decoder=True,
        hidden_dropout_prob=float(med.get("hidden_dropout_prob", 0.1)),
        attention_probs_dropout_prob=float(med.get("attention_probs_dropout_prob", 0.1)),
        bos_token_id=None, eos_token_id=None, sep_token_id=None,  # generation ids: unused by the encoder
    )


# --- modules ------------------------------------------------------------------------------------------------------
class BlipVitBackbone(Backbone):
    """BLIP's ViT as a Backbone: image -> flattened token sequence [B, tokens * width]; prompts -> token ids."""

    has_text = True

    def __init__(self, vision: nn.Module, tokenizer: Any, key: str, max_length: int = MAX_LENGTH,
                 weights_ref: dict | None = None):
        super().__init__()
        import open_clip

        self.vision = vision.eval()
        self.tokenizer = tokenizer
        self.key = key
        self.max_length = int(max_length)
        self.weights_ref = weights_ref
        self.image_size = int(vision.config.image_size)
        self.width = int(vision.config.hidden_size)
        self.tokens = (self.image_size // int(vision.config.patch_size)) ** 2 + 1
        self.embed_dim = self.tokens * self.width
        self.mean, self.std = OPENAI_MEAN, OPENAI_STD
        self.resize_mode = "center_crop"
        # ImageReward's _transform: Resize(224, bicubic) on the PIL image, CenterCrop, ToTensor, Normalize
        self._transform = open_clip.image_transform(self.image_size, is_train=False, mean=self.mean, std=self.std,
                                                    resize_mode="shortest", interpolation="bicubic")

    def preprocess(self, image: Image.Image) -> Tensor:
        return self._transform(to_rgb(image))

    def pixels_to_input(self, images: Tensor) -> Tensor:
        return pixels_to_clip_input(images, self.image_size, self.mean, self.std, "center_crop")

    def embed_images(self, pixels: Tensor) -> Tensor:
        out = self.vision(pixel_values=pixels.to(self.device)).last_hidden_state
        return out.reshape(out.shape[0], -1)

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return torch.cat([tok["input_ids"], tok["attention_mask"]], dim=1).to(self.device, torch.float32)


class ImageRewardHead(Head):
    """BERT with cross-attention on (prompt tokens, image tokens) -> [CLS] -> MLP -> (r - mean) / std."""

    needs_text = True

    def __init__(self, text_model: nn.Module, vision_width: int, mlp_in: int = 768,
                 mean: float = MEAN, std: float = STD):
        super().__init__()
        from imgpref.scorers.heads import LaionAestheticHead

        self.text_model = text_model.eval()
        self.vision_width = int(vision_width)
        # the same Linear/Dropout stack (and key names, `layers.N`) as the LAION aesthetic MLP
        self.mlp = nn.Module()
        self.mlp.layers = LaionAestheticHead(mlp_in).layers
        self.mean, self.std = float(mean), float(std)

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        if txt_emb is None:
            raise ValueError("ImageReward needs prompts: pass one prompt per image")
        b = img_emb.shape[0]
        img = img_emb.reshape(b, -1, self.vision_width)
        n = txt_emb.shape[1] // 2
        ids, mask = txt_emb[:, :n].round().long(), txt_emb[:, n:].round().long()
        dtype = next(self.text_model.parameters()).dtype
        out = self.text_model(input_ids=ids, attention_mask=mask, encoder_hidden_states=img.to(dtype),
                              encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long, device=img.device),
                              is_decoder=False).last_hidden_state[:, 0, :]
        r = self.mlp.layers(out.float()).squeeze(-1)
        return (r - self.mean) / self.std


# --- loading -------------------------------------------------------------------------------------------------------
def _files(opts: LoadOptions) -> tuple[Path, Path]:
    if opts.weights is not None:
        w = opts.weights
        folder = w if w.is_dir() else w.parent
        ckpt = find_in_folder(w, [CKPT_FILE]) if w.is_dir() else (w if w.is_file() else None)
        med = find_in_folder(folder, [MED_CONFIG])
        if ckpt is None or med is None:
            raise missing("imagereward", f"{CKPT_FILE} + {MED_CONFIG}", str(w), WHERE)
        return ckpt, med
    ckpt, med = hf_file(REPO, CKPT_FILE), hf_file(REPO, MED_CONFIG)
    if ckpt is None or med is None:
        raise missing("imagereward", f"{CKPT_FILE} + {MED_CONFIG}", f"the Hugging Face cache {hf_cache_dir()} "
                      f"(repo {REPO})", WHERE)
    return ckpt, med


def load_tokenizer(folder: Path | None) -> Any:
    """BLIP's tokenizer: bert-base-uncased (vocab.txt beside the checkpoint, else the HF cache) + [DEC], [ENC]."""
    from transformers import BertTokenizer

    src = folder if folder is not None and (folder / "vocab.txt").is_file() else None
    if src is None:
        src = hf_snapshot(TOKENIZER_REPO, allow_patterns=["vocab.txt", "tokenizer_config.json"],
                          required=["vocab.txt"])
    if src is None:
        raise missing("imagereward", f"vocab.txt of {TOKENIZER_REPO} (BLIP's tokenizer)",
                      f"{folder} and the Hugging Face cache {hf_cache_dir()}", WHERE)
    tok = BertTokenizer(str(Path(src) / "vocab.txt"), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def read_checkpoint(opts: LoadOptions) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
    """(state dict, med_config, checkpoint path); a file of another layout is a ValueError naming it."""
    ckpt, med = _files(opts)
    sd = load_torch_state_dict(ckpt)
    if not any(k.startswith("blip.visual_encoder.") for k in sd) or "mlp.layers.0.weight" not in sd:
        raise ValueError(f"{ckpt} is not an ImageReward checkpoint (no blip.visual_encoder.* / mlp.layers.* keys; "
                         f"keys: {', '.join(list(sd)[:4])})")
    return sd, json.loads(Path(med).read_text()), ckpt


def _strict_load(module: nn.Module, sd: dict[str, Tensor], what: str, path: Path) -> None:
    try:
        res = module.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path}: the {what} does not match its config: {str(e).splitlines()[0][:200]}") from e
    extra = [k for k in res.unexpected_keys if not k.endswith("position_ids")]
    miss = [k for k in res.missing_keys if not k.endswith("position_ids")]
    if miss or extra:
        raise ValueError(f"{path}: the {what} has missing keys {miss[:4]} / unexpected keys {extra[:4]}")


def imagereward_key(opts: LoadOptions) -> str:
    return "imagereward" + (f":{opts.weights.resolve()}" if opts.weights is not None else "")


def imagereward_backbone(opts: LoadOptions) -> BlipVitBackbone:
    from transformers import BlipVisionModel

    sd, med, ckpt = read_checkpoint(opts)
    vs = vision_state(sd)
    vision = BlipVisionModel(vision_config(vs))
    _strict_load(vision, vs, "BLIP ViT", ckpt)
    folder = opts.weights if opts.weights is not None and opts.weights.is_dir() else ckpt.parent
    ref = None if opts.weights is not None else {"source": "hf", "repo": REPO, "file": CKPT_FILE}
    bb = BlipVitBackbone(vision, load_tokenizer(folder), key=imagereward_key(opts), weights_ref=ref)
    # handed to the head builder so the 1.8 GB file is read once per load
    object.__setattr__(bb, "_imagereward_rest", (sd, med, ckpt))
    return bb


def imagereward_head(backbone: BlipVitBackbone, opts: LoadOptions) -> ImageRewardHead:
    from transformers import BlipTextModel

    rest = backbone.__dict__.pop("_imagereward_rest", None)
    sd, med, ckpt = rest if rest is not None else read_checkpoint(opts)
    text = BlipTextModel(text_config(med, backbone.width), add_pooling_layer=False)
    _strict_load(text, text_state(sd), "BERT text encoder", ckpt)
    head = ImageRewardHead(text, backbone.width, int(sd["mlp.layers.0.weight"].shape[1]))
    _strict_load(head.mlp, {k[len("mlp."):]: v for k, v in sd.items() if k.startswith("mlp.")}, "MLP", ckpt)
    return head.eval()
