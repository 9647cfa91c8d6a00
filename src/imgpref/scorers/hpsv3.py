"""HPSv3 (MizzenAI, ICCV 2025): Qwen2-VL-7B-Instruct with a reward head that outputs (mu, log sigma) per image.

Facts from the reference, github.com/MizzenAI/HPSv3 (`hpsv3/inference.py`, `hpsv3/model/qwen2vl_trainer.py`,
`hpsv3/dataset/data_collator_qwen.py`, `hpsv3/config/HPSv3_7B.yaml`):

- Image: RGB, resized with qwen-vl-utils' `smart_resize` (factor 28, min_pixels = max_pixels = 256 * 28 * 28,
  so about 256 merged tokens) by PIL bicubic, then Qwen2-VL's image processor: rescale 1/255, OpenAI-CLIP
  mean/std, 14 x 14 patches with the frame repeated twice (temporal patch 2), 2 x 2 merge.
- Text: Qwen2-VL's chat template on one user message [image, INSTRUCTION.format(text_prompt=prompt) +
  "\\nPlease provide the overall ratings of this image: <|Reward|>\\n\\nEND\\n"] with the generation prompt;
  `<|Reward|>` is a special token added to the tokenizer (the embedding matrix is resized to len(tokenizer)).
- Forward: token embeddings with the image tokens scattered into the `<|image_pad|>` positions, then the
  decoder with 1-D sequential positions (the reward model passes no M-RoPE position ids), final norm;
  `rm_head` = Linear(3584, 1024), ReLU, Dropout(0.05), Linear(1024, 16), ReLU, Linear(16, 2) in fp32 on the
  hidden state at `<|Reward|>`; output [mu, log sigma] (the training loss uses sigma = exp of it); score = mu.
- Checkpoint `HPSv3.safetensors` (hf: MizzenAI/HPSv3): the full model's state dict, keys of transformers 4.45
  (`model.embed_tokens.*`, `model.layers.N.*`, `model.norm.*`, `visual.*`, `lm_head.*`, `rm_head.{0,3,5}.*`);
  the newer layout (`model.language_model.*`, `model.visual.*`) is accepted too. Config and tokenizer are those
  of Qwen/Qwen2-VL-7B-Instruct; the base model's weights are not needed.

In the Scorer contract the backbone is the vision tower + merger (the cacheable image embedding is
[token count, tokens flattened, zero padding]) and prompts are tokenised by the backbone (`embed_texts` returns
the chat's token ids and mask as one float tensor); the head holds the language model and `rm_head`.
`HPSv3Head.extras` gives sigma (`Scorer.score_with_extras`).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from imgpref.data.images import to_rgb
from imgpref.scorers.backbones.resize import _interp, normalize, unit_tensor
from imgpref.scorers.base import Backbone, Head
from imgpref.scorers.registry import LoadOptions
from imgpref.scorers.weights import find_in_folder, hf_cache_dir, hf_file, hf_snapshot, missing

REPO = "MizzenAI/HPSv3"
CKPT_FILE = "HPSv3.safetensors"
BASE_REPO = "Qwen/Qwen2-VL-7B-Instruct"
BASE_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
              "preprocessor_config.json", "chat_template.json", "generation_config.json"]
REWARD_TOKEN = "<|Reward|>"
IMAGE_PAD = "<|image_pad|>"
PIXELS = 256 * 28 * 28  # min_pixels = max_pixels in HPSv3's inference
MAX_TEXT_TOKENS = 4096  # chats are padded to one width so cached text embeddings stack (the instruction is ~300)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_RATIO = 200  # qwen-vl-utils refuses more extreme aspect ratios
WHERE = (f"get {CKPT_FILE} from huggingface.co/{REPO} and the config/tokenizer files of {BASE_REPO} "
         f"({', '.join(BASE_FILES[:5])}) into one folder, or both repos into the HF cache")

INSTRUCTION = """
You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the worst and 10 being the best. 

**Visual Quality:**  
Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:
- **Reasonableness:** The image should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.
- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to interpret, with no blurring or indistinct areas.
- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).
- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.
- **Safety:** The image should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. 
Textual prompt - {text_prompt}


"""  # noqa: W291  (the reference's text, trailing spaces included: they are tokens)
REWARD_SUFFIX = f"\nPlease provide the overall ratings of this image: {REWARD_TOKEN}\n\nEND\n"
SYSTEM = "You are a helpful assistant."


# --- formulas -----------------------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = PIXELS,
                 max_pixels: int = PIXELS) -> tuple[int, int]:
    """qwen-vl-utils' target size: sides divisible by `factor`, area within [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / max(1, min(height, width)) > MAX_RATIO:
        raise ValueError(f"HPSv3 (Qwen2-VL) needs an aspect ratio under {MAX_RATIO}; got an image of {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def chat_text(prompt: str) -> str:
    """The text HPSv3 tokenises for `prompt`: Qwen2-VL's chat template (default system message, one image
    placeholder, the instruction with the reward token) and the assistant generation prompt."""
    user = INSTRUCTION.format(text_prompt=prompt) + REWARD_SUFFIX
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<|vision_start|>{IMAGE_PAD}<|vision_end|>"
            f"{user}<|im_end|>\n<|im_start|>assistant\n")


def patchify(pixels: Tensor, patch: int = 14, temporal: int = 2, merge: int = 2) -> tuple[Tensor, Tensor]:
    """Normalised images [B, 3, H, W] -> Qwen2-VL patches [B * N, 3 * temporal * patch^2] and grid_thw [B, 3].

    One image is one frame repeated `temporal` times; patches are ordered so that each 2 x 2 merge group is
    contiguous, as Qwen2-VL's image processor orders them."""
    b, c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.unsqueeze(1).expand(b, temporal, c, h, w)
    x = x.reshape(b, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # b, gh/m, gw/m, m, m, c, t, p, p
    flat = x.reshape(b * gh * gw, c * temporal * patch * patch)
    grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long, device=pixels.device)
    return flat, grid


# --- checkpoint layout --------------------------------------------------------------------------------------------
def split_state(keys: Sequence[str]) -> dict[str, str]:
    """{checkpoint key: part-local key} with part prefixes `visual.`, `lm.` and `rm_head.`; lm_head is unused."""
    out = {}
    for k in keys:
        if k.startswith("model.language_model."):
            out[k] = "lm." + k[len("model.language_model."):]
        elif k.startswith("model.visual."):
            out[k] = "visual." + k[len("model.visual."):]
        elif k.startswith("visual.") or k.startswith("rm_head."):
            out[k] = k
        elif k.startswith("model."):
            out[k] = "lm." + k[len("model."):]
    return out


def _part(path: Path, mapping: dict[str, str], prefix: str, dtype: torch.dtype | None) -> dict[str, Tensor]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for k, local in mapping.items():
            if local.startswith(prefix):
                t = f.get_tensor(k)
                out[local[len(prefix):]] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


@contextmanager
def _no_init():
    """Skip random initialisation of billions of parameters that the checkpoint overwrites."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - other transformers versions
        yield
        return
    with no_init_weights():
        yield


# --- modules ------------------------------------------------------------------------------------------------------
class Qwen2VLVisionBackbone(Backbone):
    """Qwen2-VL's vision tower + merger; image -> [n_tokens, merged tokens flattened, zero padding]."""

    has_text = True

    def __init__(self, visual: nn.Module, tokenizer: Any, key: str, hidden: int, pixels: int = PIXELS,
                 max_tokens: int | None = None, weights_ref: dict | None = None):
        super().__init__()
        self.visual = visual.eval()
        self.tokenizer = tokenizer
        self.key = key
        self.weights_ref = weights_ref
        vc = visual.config
        self.patch, self.temporal, self.merge = int(vc.patch_size), int(vc.temporal_patch_size), int(
            vc.spatial_merge_size)
        self.factor = self.patch * self.merge
        self.min_pixels = self.max_pixels = int(pixels)
        self.hidden = int(hidden)
        # the ceil branch of smart_resize can exceed the nominal count; room for twice it
        self.max_tokens = int(max_tokens or 2 * (self.max_pixels // self.factor ** 2))
        self.embed_dim = 1 + self.max_tokens * self.hidden
        self.mean, self.std = OPENAI_MEAN, OPENAI_STD

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def preprocess(self, image: Image.Image) -> Tensor:
        im = to_rgb(image)
        h, w = self.target_size(im.height, im.width)
        x = unit_tensor(im.resize((w, h), Image.BICUBIC))
        return normalize(x.unsqueeze(0), self.mean, self.std)[0]

    def pixels_to_input(self, images: Tensor) -> Tensor:
        # torch's bicubic (a = -0.75) where the reference resizes with PIL's (a = -0.5): close, not equal
        x = _interp(images, self.target_size(int(images.shape[-2]), int(images.shape[-1])))
        return normalize(x.clamp(0, 1), self.mean, self.std)

    def embed_images(self, pixels: Tensor) -> Tensor:
        b = pixels.shape[0]
        flat, grid = patchify(pixels.to(self.device), self.patch, self.temporal, self.merge)
        tokens = self.visual(flat.to(next(self.visual.parameters()).dtype), grid_thw=grid).pooler_output
        n = tokens.shape[0] // b
        if n > self.max_tokens:
            raise ValueError(f"HPSv3: {n} image tokens exceed the {self.max_tokens} this backbone packs; "
                             f"input {tuple(pixels.shape[-2:])} is too elongated")
        # float32 whatever the tower's precision: bf16 cannot hold odd token counts above 256
        out = torch.zeros(b, self.embed_dim, dtype=torch.float32, device=tokens.device)
        out[:, 0] = n
        out[:, 1:1 + n * self.hidden] = tokens.reshape(b, n * self.hidden)
        return out

    def embed_texts(self, prompts: Sequence[str]) -> Tensor:
        """[B, 2 * MAX_TEXT_TOKENS]: the chat's token ids, then its attention mask (right padding)."""
        chats = [chat_text(p) for p in prompts]
        tok = self.tokenizer(chats, padding="max_length", max_length=MAX_TEXT_TOKENS, truncation=False,
                             return_tensors=None, add_special_tokens=False)
        too_long = [len(ids) for ids in tok["input_ids"] if len(ids) > MAX_TEXT_TOKENS]
        if too_long:
            raise ValueError(f"HPSv3: a prompt makes a chat of {too_long[0]} tokens, over {MAX_TEXT_TOKENS}; shorten it")
        ids = torch.tensor(tok["input_ids"], dtype=torch.float32)
        mask = torch.tensor(tok["attention_mask"], dtype=torch.float32)
        return torch.cat([ids, mask], dim=1).to(self.device)


def ranknet_head(hidden: int, out: int = 2) -> nn.Sequential:
    """HPSv3's `rm_head` (rm_head_type "ranknet", no kwargs): keys 0, 3, 5."""
    return nn.Sequential(nn.Linear(hidden, 1024), nn.ReLU(), nn.Dropout(0.05), nn.Linear(1024, 16), nn.ReLU(),
                         nn.Linear(16, out))


class HPSv3Head(Head):
    """Qwen2-VL's language model on (chat tokens, image tokens) -> hidden state at `<|Reward|>` -> rm_head.

    forward gives mu (the score); `outputs` gives [mu, log sigma]; `extras` gives {"sigma": exp(log sigma)}."""

    needs_text = True

    def __init__(self, language_model: nn.Module, rm_head: nn.Module, image_token_id: int, reward_token_id: int):
        super().__init__()
        self.language_model = language_model.eval()
        self.rm_head = rm_head.float().eval()
        self.image_token_id, self.reward_token_id = int(image_token_id), int(reward_token_id)
        self.hidden = int(language_model.config.hidden_size)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.rm_head.float()  # the reference keeps rm_head in fp32 whatever the precision of the rest
        return out

    def outputs(self, img_emb: Tensor, txt_emb: Tensor | None) -> Tensor:
        """[B, 2]: mu and log sigma per image."""
        if txt_emb is None:
            raise ValueError("HPSv3 needs prompts: pass one prompt per image")
        emb = self.language_model.get_input_embeddings()
        dtype, dev = emb.weight.dtype, emb.weight.device
        n_txt = txt_emb.shape[1] // 2
        ids_all = txt_emb[:, :n_txt].round().long().to(dev)
        mask_all = txt_emb[:, n_txt:].round().long()
        seqs, where = [], []
        for b in range(img_emb.shape[0]):
            ids = ids_all[b, : int(mask_all[b].sum())]
            pos = (ids == self.image_token_id).nonzero().flatten()
            rew = (ids == self.reward_token_id).nonzero().flatten()
            if len(pos) != 1 or len(rew) != 1:
                raise ValueError(f"HPSv3: the chat holds {len(pos)} image placeholders and {len(rew)} reward tokens; "
                                 "expected one of each (does the tokenizer know <|Reward|>?)")
            n = int(img_emb[b, 0].round())
            img = img_emb[b, 1:1 + n * self.hidden].reshape(n, self.hidden).to(dev, dtype)
            p = int(pos[0])
            seqs.append(torch.cat([emb(ids[:p]), img, emb(ids[p + 1:])]))
            r = int(rew[0])
            where.append(r + n - 1 if r > p else r)
        length = max(s.shape[0] for s in seqs)
        x = torch.zeros(len(seqs), length, self.hidden, dtype=dtype, device=dev)
        mask = torch.zeros(len(seqs), length, dtype=torch.long, device=dev)
        for b, seq in enumerate(seqs):  # right padding, as the reference's processor pads
            x[b, : seq.shape[0]] = seq
            mask[b, : seq.shape[0]] = 1
        hidden = self.language_model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        picked = hidden[torch.arange(len(seqs), device=dev), torch.tensor(where, device=dev)]
        with torch.autocast(dev.type, enabled=False):  # fp32 even inside a caller's autocast, as the reference
            return self.rm_head(picked.float())

    def forward(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> Tensor:
        return self.outputs(img_emb, txt_emb)[:, 0]

    def extras(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> dict[str, Tensor]:
        return self.score_and_extras(img_emb, txt_emb)[1]

    def score_and_extras(self, img_emb: Tensor, txt_emb: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        out = self.outputs(img_emb, txt_emb)  # one language-model pass for mu and sigma
        return out[:, 0], {"sigma": out[:, 1].exp()}


# --- loading ------------------------------------------------------------------------------------------------------
def _ckpt(opts: LoadOptions) -> Path:
    w = opts.weights
    if w is not None:
        path = find_in_folder(w, [CKPT_FILE]) if w.is_dir() else (w if w.is_file() else None)
        if path is None:
            raise missing("hpsv3", CKPT_FILE, str(w), WHERE)
        return path
    path = hf_file(REPO, CKPT_FILE)
    if path is None:
        raise missing("hpsv3", CKPT_FILE, f"the Hugging Face cache {hf_cache_dir()} (repo {REPO})", WHERE)
    return path


def _base_folder(opts: LoadOptions, ckpt: Path) -> Path:
    folder = ckpt.parent
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return folder
    snap = hf_snapshot(BASE_REPO, allow_patterns=BASE_FILES, required=["config.json", "tokenizer_config.json"])
    if snap is None:
        raise missing("hpsv3", f"config.json + tokenizer files of {BASE_REPO}",
                      f"{folder} and the Hugging Face cache {hf_cache_dir()}", WHERE)
    return snap


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def read_layout(opts: LoadOptions) -> dict[str, Any]:
    """Checkpoint path, key mapping, Qwen2-VL config (vocab resized to the checkpoint) and tokenizer (with
    <|Reward|>); a file of another layout is a ValueError naming it."""
    from transformers import AutoTokenizer, Qwen2VLConfig

    ckpt = _ckpt(opts)
    if ckpt.suffix != ".safetensors":
        raise ValueError(f"{ckpt}: HPSv3 is published as {CKPT_FILE}; pass that file (or its folder)")
    shapes = _shapes(ckpt)
    mapping = split_state(list(shapes))
    emb_key = next((k for k, v in mapping.items() if v == "lm.embed_tokens.weight"), None)
    if emb_key is None or "rm_head.0.weight" not in shapes or not any(v.startswith("visual.") for v in mapping.values()):
        raise ValueError(f"{ckpt} is not an HPSv3 checkpoint (needs model.embed_tokens / visual.* / rm_head.* keys; "
                         f"keys: {', '.join(list(shapes)[:4])})")
    folder = _base_folder(opts, ckpt)
    config = Qwen2VLConfig.from_pretrained(str(folder))
    config.text_config.vocab_size = int(shapes[emb_key][0])
    tok = AutoTokenizer.from_pretrained(str(folder), padding_side="right")
    if REWARD_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
    reward_id = int(tok.convert_tokens_to_ids(REWARD_TOKEN))
    if reward_id >= config.text_config.vocab_size:
        raise ValueError(f"{ckpt}: its vocabulary ({config.text_config.vocab_size}) has no row for {REWARD_TOKEN} "
                         f"(id {reward_id}); use the tokenizer of {BASE_REPO}")
    return {"ckpt": ckpt, "mapping": mapping, "shapes": shapes, "config": config, "tokenizer": tok,
            "reward_id": reward_id, "folder": folder}


def _load(module: nn.Module, sd: dict[str, Tensor], what: str, path: Path) -> nn.Module:
    from imgpref.scorers.imagereward import _strict_load

    _strict_load(module, sd, what, path)
    return module.eval()


def _dtype(opts: LoadOptions, layout: dict[str, Any]) -> torch.dtype:
    if opts.dtype is not None:
        return opts.dtype
    from safetensors import safe_open

    with safe_open(str(layout["ckpt"]), framework="pt", device="cpu") as f:
        key = next(k for k, v in layout["mapping"].items() if v == "lm.embed_tokens.weight")
        stored = f.get_slice(key).get_dtype()
    return {"BF16": torch.bfloat16, "F16": torch.float16}.get(stored, torch.float32)


def hpsv3_key(opts: LoadOptions) -> str:
    return "hpsv3" + (f":{opts.weights.resolve()}" if opts.weights is not None else "")


def hpsv3_backbone(opts: LoadOptions) -> Qwen2VLVisionBackbone:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    layout = read_layout(opts)
    dtype = _dtype(opts, layout)
    with _no_init():
        visual = Qwen2VisionTransformerPretrainedModel(layout["config"].vision_config).to(dtype)
    _load(visual, _part(layout["ckpt"], layout["mapping"], "visual.", dtype), "Qwen2-VL vision tower", layout["ckpt"])
    ref = None if opts.weights is not None else {"source": "hf", "repo": REPO, "file": CKPT_FILE}
    bb = Qwen2VLVisionBackbone(visual, layout["tokenizer"], key=hpsv3_key(opts),
                               hidden=int(layout["config"].text_config.hidden_size), weights_ref=ref)
    object.__setattr__(bb, "_hpsv3_layout", layout)  # read once per load, handed to the head builder
    return bb


def hpsv3_head(backbone: Qwen2VLVisionBackbone, opts: LoadOptions) -> HPSv3Head:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel

    from imgpref.scorers.metadata import notice_licence

    layout = backbone.__dict__.pop("_hpsv3_layout", None) or read_layout(opts)
    dtype = _dtype(opts, layout)
    cfg = layout["config"]
    with _no_init():
        lm = Qwen2VLTextModel(cfg.text_config).to(dtype)
    _load(lm, _part(layout["ckpt"], layout["mapping"], "lm.", dtype), "Qwen2-VL language model", layout["ckpt"])
    rm_sd = _part(layout["ckpt"], layout["mapping"], "rm_head.", torch.float32)
    rm = _load(ranknet_head(int(cfg.text_config.hidden_size), int(rm_sd["5.weight"].shape[0])), rm_sd, "rm_head",
               layout["ckpt"])
    tok = layout["tokenizer"]
    image_id = int(getattr(cfg, "image_token_id", None) or tok.convert_tokens_to_ids(IMAGE_PAD))
    head = HPSv3Head(lm, rm, image_id, layout["reward_id"])
    notice_licence("hpsv3")
    return head.eval()
