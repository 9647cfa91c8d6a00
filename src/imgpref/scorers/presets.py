"""The built-in presets. Importing this module registers them (registry._ensure_presets does it lazily)."""
from __future__ import annotations

from imgpref.scorers.base import ScorerInfo
from imgpref.scorers.pixels import MEASURES, IndexHead, PixelStatsBackbone
from imgpref.scorers.registry import LoadOptions, Preset, register_preset

# --- weight-free measures ------------------------------------------------------------------------------------
_MEASURE_INFO = {
    "colorfulness": (True, (0.0, None), "Hasler & Suesstrunk (2003) M3 colourfulness on 0-255 RGB"),
    "contrast": (True, (0.0, 0.5), "RMS contrast: std of luminance in [0, 1]"),
    "exposure": (True, (0.0, 1.0), "mean Mertens well-exposedness of luminance, exp(-(L-0.5)^2/0.08)"),
    "sharpness": (True, (0.0, None), "variance of the Laplacian of luminance (skimage.filters.laplace)"),
    "noise": (False, (0.0, None), "skimage.restoration.estimate_sigma of luminance (lower is better)"),
}


def _pixel_size(opts: LoadOptions) -> int:
    if opts.weights is not None:
        raise ValueError(f"the pixel measures are weight-free; drop weights={opts.weights}")
    return int(opts.extra.get("size", 256))


def _measure_preset(index: int, name: str) -> Preset:
    hib, rng, desc = _MEASURE_INFO[name]
    # score_range holds finite bounds only; an unbounded measure declares None
    score_range = rng if rng[1] is not None else None
    return Preset(
        info=ScorerInfo(name=name, higher_is_better=hib, score_range=score_range, needs_prompt=False,
                        description=desc + "; short side resized to 256 and centre-cropped"),
        backbone_key=lambda o: f"pixels-{_pixel_size(o)}",
        build_backbone=lambda o: PixelStatsBackbone(_pixel_size(o)),
        build_head=lambda b, o, i=index: IndexHead(i),
        weights_help="weight-free",
    )


for _i, _name in enumerate(MEASURES):
    register_preset(_measure_preset(_i, _name))


# --- published CLIP scorers ----------------------------------------------------------------------------------
from imgpref.scorers import published as _pub  # noqa: E402
from imgpref.scorers.heads import CosineHead, LaionAestheticHead  # noqa: E402


def _pickscore_head(backbone, opts: LoadOptions) -> CosineHead:
    head = CosineHead(scale="learned")
    with __import__("torch").no_grad():
        head.logit_scale.copy_(backbone.model.logit_scale.detach().float().reshape(()))
    return head


register_preset(Preset(
    info=ScorerInfo(name="pickscore", higher_is_better=True, score_range=None, needs_prompt=True,
                    description="PickScore v1: CLIP ViT-H/14 (transformers) fine-tuned on Pick-a-Pic; "
                                "logit_scale.exp() * cos(text, image), ~ 18-23 for typical images",
                    extra={"reference": "github.com/yuvalkirstain/PickScore README (CLIPImageProcessor, fp32)",
                           "reference_precision": "fp32"}),
    backbone_key=_pub.pickscore_key,
    build_backbone=_pub.pickscore_backbone,
    build_head=_pickscore_head,
    weights_help=f"folder with {_pub.PICKSCORE_REPO} (config.json, model.safetensors) + processor/tokenizer "
                 f"files of {_pub.PICKSCORE_PROCESSOR_REPO}, or both repos in the HF cache",
))

for _v in ("hpsv2", "hpsv2.1"):
    register_preset(Preset(
        info=ScorerInfo(name=_v, higher_is_better=True, score_range=(-100.0, 100.0), needs_prompt=True,
                        description=f"HPS {_v[3:]}: open_clip ViT-H-14 + {_pub.HPS_FILES[_v]}; 100 * cos(text, image) "
                                    "(typically 20-35; hpsv2.score() returns cos); to tensor, long side to 224, "
                                    "zero padding",
                        extra={"reference": "github.com/tgxs002/HPSv2 img_score.py (amp: fp16 autocast)",
                               "reference_precision": "fp16"}),
        backbone_key=lambda o, v=_v: _pub.hps_key(v, o),
        build_backbone=lambda o, v=_v: _pub.hps_backbone(v, o),
        build_head=lambda b, o: CosineHead(scale=100.0),
        weights_help=f"{_pub.HPS_FILES[_v]} (file or its folder), or repo {_pub.HPS_REPO} in the HF cache",
    ))


def _laion_head(backbone, opts: LoadOptions) -> LaionAestheticHead:
    sd = _pub.read_laion_head_state(_pub.laion_head_file(opts))
    head = LaionAestheticHead(int(sd["layers.0.weight"].shape[1]))
    if head.input_dim != backbone.embed_dim:
        raise ValueError(f"LAION head expects {head.input_dim}-d embeddings but the backbone gives "
                         f"{backbone.embed_dim}-d (the published head needs ViT-L/14)")
    head.load_state_dict(sd, strict=True)
    return head


register_preset(Preset(
    info=ScorerInfo(name="laion-aesthetic", higher_is_better=True, score_range=None, needs_prompt=False,
                    description="LAION aesthetic predictor v2: MLP on the L2-normalised CLIP ViT-L/14 (OpenAI) "
                                "image embedding; ~1-10",
                    extra={"reference": "github.com/christophschuhmann/improved-aesthetic-predictor "
                                        "simple_inference.py (OpenAI clip.load: fp16 on CUDA)",
                           "reference_precision": "fp16"}),
    backbone_key=lambda o: _pub.open_clip_pretrained_key("ViT-L-14", "openai", o),
    build_backbone=lambda o: _pub.open_clip_pretrained_backbone("laion-aesthetic", "ViT-L-14", "openai", o),
    build_head=_laion_head,
    weights_help=f"{_pub.LAION_HEAD_FILE} (file, or a folder also holding open_clip_pytorch_model.bin of "
                 "ViT-L-14 openai, or OpenAI's TorchScript ViT-L-14.pt); the backbone otherwise comes from the "
                 "open_clip/HF cache",
))

# CLIPScore (Hessel et al. 2021) used OpenAI ViT-B/32; the variants name other open_clip backbones.
CLIPSCORE_BACKBONES = {
    "clipscore": ("ViT-B-32", "openai"),
    "clipscore-vit-b-32": ("ViT-B-32", "openai"),
    "clipscore-vit-b-16": ("ViT-B-16", "openai"),
    "clipscore-vit-l-14": ("ViT-L-14", "openai"),
    "clipscore-vit-h-14": ("ViT-H-14", "laion2b_s32b_b79k"),
}
# jmhessel/clipscore embeds "A photo depicts " + caption (its CLIPCapDataset prefix); `<name>-noprefix` embeds the
# caption alone. Python: `scorer.info.extra["caption_prefix"]` holds it (saved in scorer folders).
CLIPSCORE_PREFIX = "A photo depicts "
NOPREFIX_SUFFIX = "-noprefix"
_CLIPSCORE_REF = {True: "github.com/jmhessel/clipscore clipscore.py (OpenAI clip.load: fp16 on CUDA)",
                  False: "jmhessel/clipscore's prefix and formula on open_clip weights (no reference code; fp32)"}


def _clipscore_preset(name: str, arch: str, tag: str, prefix: str) -> Preset:
    what = f'"{prefix}" + caption' if prefix else "the caption alone (no prefix)"
    return Preset(
        info=ScorerInfo(name=name, higher_is_better=True, score_range=(0.0, 2.5), needs_prompt=True,
                        description=f"CLIPScore: 2.5 * max(cos(text, image), 0) with open_clip {arch} ({tag}); "
                                    f"text = {what}",
                        extra={"caption_prefix": prefix, "reference": _CLIPSCORE_REF[tag == "openai"],
                               # OpenAI's clip.load keeps fp16 weights on CUDA; open_clip's laion weights: fp32
                               "reference_precision": "fp16" if tag == "openai" else "fp32"}),
        backbone_key=lambda o, a=arch, t=tag: _pub.open_clip_pretrained_key(a, t, o),
        build_backbone=lambda o, n=name, a=arch, t=tag: _pub.open_clip_pretrained_backbone(n, a, t, o),
        build_head=lambda b, o: CosineHead(scale=1.0, clamp_min=0.0, weight=float(o.extra.get("w", 2.5))),
        weights_help=f"open_clip {arch} '{tag}' weights file (open_clip_pytorch_model.bin, or OpenAI's "
                     f"TorchScript {arch}.pt), or the open_clip cache",
    )


for _n, (_arch, _tag) in CLIPSCORE_BACKBONES.items():
    register_preset(_clipscore_preset(_n, _arch, _tag, CLIPSCORE_PREFIX))
    register_preset(_clipscore_preset(_n + NOPREFIX_SUFFIX, _arch, _tag, ""))


# --- ImageReward (BLIP) -------------------------------------------------------------------------------------------
from imgpref.scorers import imagereward as _ir  # noqa: E402

register_preset(Preset(
    info=ScorerInfo(name="imagereward", higher_is_better=True, score_range=None, needs_prompt=True,
                    description="ImageReward: BLIP ViT-L + BERT cross-attention + MLP; standardised reward "
                                f"(r - {_ir.MEAN:.5f}) / {_ir.STD:.5f}",
                    extra={"reference": "github.com/THUDM/ImageReward ImageReward/ImageReward.py (fp32 on CUDA "
                                        "unless the caller casts)",
                           "reference_precision": "fp32"}),
    backbone_key=_ir.imagereward_key,
    build_backbone=_ir.imagereward_backbone,
    build_head=_ir.imagereward_head,
    weights_help=f"folder with {_ir.CKPT_FILE}, {_ir.MED_CONFIG} (repo {_ir.REPO}) and vocab.txt of "
                 f"{_ir.TOKENIZER_REPO}, or those repos in the HF cache",
))


# --- CLIP-IQA (zero-shot antonym prompts) -------------------------------------------------------------------------
from imgpref.scorers.clip_iqa import DEFAULT_PAIRS, clip_iqa_head  # noqa: E402

CLIP_IQA_BACKBONES = {"clip-iqa": ("RN50", "openai"), "clip-iqa-vit-l-14": ("ViT-L-14", "openai")}


def _clip_iqa_preset(name: str, arch: str, tag: str) -> Preset:
    return Preset(
        info=ScorerInfo(name=name, higher_is_better=True, score_range=(0.0, 1.0), needs_prompt=False,
                        description=f"CLIP-IQA zero-shot on open_clip {arch} ({tag}): softmax(100 * cos) over "
                                    f"{DEFAULT_PAIRS[0]}, P(positive)",
                        extra={"reference": "CLIP-IQA paper (AAAI 2023) single pair; not pyiqa's 3-pair full-size "
                                            "variant", "reference_precision": "fp32"}),
        backbone_key=lambda o, a=arch, t=tag: _pub.open_clip_pretrained_key(a, t, o),
        build_backbone=lambda o, n=name, a=arch, t=tag: _pub.open_clip_pretrained_backbone(n, a, t, o),
        build_head=lambda b, o: clip_iqa_head(b, o.extra.get("pairs"), o.extra.get("logit_scale")),
        weights_help=f"open_clip {arch} '{tag}' weights file (open_clip_pytorch_model.bin, or OpenAI's TorchScript "
                     f"{arch}.pt), or the open_clip cache",
    )


for _n, (_arch, _tag) in CLIP_IQA_BACKBONES.items():
    register_preset(_clip_iqa_preset(_n, _arch, _tag))


# --- Aesthetic Predictor V2.5 (SigLIP; AGPL-3.0) ------------------------------------------------------------------
from imgpref.scorers import siglip_aesthetic as _sa  # noqa: E402

register_preset(Preset(
    info=ScorerInfo(name="aesthetic-v2.5", higher_is_better=True, score_range=None, needs_prompt=False,
                    description="Aesthetic Predictor V2.5: MLP on the L2-normalised SigLIP so400m-patch14-384 pooled "
                                "embedding; ~1-10 (5.5+ great); weights AGPL-3.0",
                    extra={"reference": "github.com/discus0434/aesthetic-predictor-v2-5 siglip_v2_5.py (fp32 unless "
                                        "the caller casts; its README casts to bf16)",
                           "reference_precision": "fp32", "licence": "AGPL-3.0"}),
    backbone_key=_sa.siglip_key,
    build_backbone=_sa.siglip_backbone,
    build_head=_sa.aesthetic_v25_head,
    weights_help=f"folder with {_sa.HEAD_FILE} (and optionally the {_sa.SIGLIP_REPO} files; else that repo from "
                 "the HF cache)",
))


# --- HPSv3 (Qwen2-VL-7B + reward head; mu is the score, sigma an extra output) ------------------------------------
from imgpref.scorers import hpsv3 as _h3  # noqa: E402

register_preset(Preset(
    info=ScorerInfo(name="hpsv3", higher_is_better=True, score_range=None, needs_prompt=True,
                    description="HPSv3: Qwen2-VL-7B-Instruct + rm_head on the <|Reward|> token's hidden state; score "
                                "= mu, sigma = exp(log sigma) via Scorer.score_with_extras",
                    extra={"reference": "github.com/MizzenAI/HPSv3 hpsv3/inference.py (bf16 weights, rm_head fp32)",
                           "reference_precision": "bf16", "extra_outputs": ["sigma"]}),
    backbone_key=_h3.hpsv3_key,
    build_backbone=_h3.hpsv3_backbone,
    build_head=_h3.hpsv3_head,
    weights_help=f"{_h3.CKPT_FILE} (repo {_h3.REPO}) with the config/tokenizer files of {_h3.BASE_REPO} in the same "
                 "folder, or both repos in the HF cache",
))
