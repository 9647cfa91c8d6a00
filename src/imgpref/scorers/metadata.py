"""Metadata of every built-in preset: licence of the weights, backbone, size, input, score range, and the
accuracy its authors (or the HPSv3 paper) published per benchmark, with the source.

One table for all presets (`PRESET_METADATA`, filled in by `metadata_for`); `imgpref scorers` prints it and
`imgpref bench` puts the published numbers beside its own. The same numbers, with their sources, are in
`data_cards/published_accuracy.md`. Loading a checkpoint whose licence is non-commercial or copyleft logs its
licence once per process (`notice_licence`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("imgpref.licence")

# benchmark key -> (what it is, the protocol `imgpref eval` / `imgpref bench` applies)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "imagereward_test": ("ImageReward test (THUDM data/test.json, 466 rankings)", "imagereward"),
    "pickapic_test": ("Pick-a-Pic v2 test", "pickapic"),
    "hpdv2_test": ("HPD v2 test (400 prompts x 9 images)", "hpd"),
    "hpdv3_test": ("HPD v3 test pairs", "imagereward"),
    "pickapic_test_unique": ("Pick-a-Pic v2 test_unique (500 pairs)", "pickapic"),
}
HPSV3_TABLE = "HPSv3 README benchmark table (github.com/MizzenAI/HPSv3; HPSv3 paper, ICCV 2025)"


@dataclass(frozen=True)
class Published:
    """One published accuracy (%), where it comes from and the split it was measured on."""

    accuracy: float
    source: str
    split: str = ""
    note: str = ""


@dataclass(frozen=True)
class ScorerMeta:
    """What a user needs to choose a scorer: licence, size, input, score range and published accuracy."""

    licence: str
    licence_source: str
    backbone: str
    params: str  # approximate number of parameters of everything the score runs through
    input_size: str
    score_range: str
    higher_is_better: bool = True
    restriction: str = ""  # "non-commercial" / "copyleft" when the weights' licence restricts use
    weights: str = ""  # where the published weights are
    published: dict[str, Published] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (`imgpref scorers --json`)."""
        return asdict(self)


def _hpsv3(acc: dict[str, float], note: str = "") -> dict[str, Published]:
    return {k: Published(v, HPSV3_TABLE, BENCHMARKS[k][0], note) for k, v in acc.items()}


_CLIP_H = _hpsv3({"imagereward_test": 57.1, "pickapic_test": 60.8, "hpdv2_test": 65.1, "hpdv3_test": 48.6},
                 "'CLIP ViT-H/14' row: cosine of the caption alone (no prefix); CLIPScore's clamp only adds ties")
_OPENAI_MIT = "MIT (OpenAI CLIP weights)"
_OPENAI_SRC = "github.com/openai/CLIP LICENSE"
_LAION_H = "MIT (LAION CLIP ViT-H-14 laion2B-s32B-b79K, model card)"

_BASE: dict[str, ScorerMeta] = {
    "pickscore": ScorerMeta(
        licence="MIT (per the author's demo Space; the weights' model card declares none)",
        licence_source="huggingface.co/yuvalkirstain/PickScore_v1 (main, a4e4367: no license tag in the model card); "
                       "huggingface.co/spaces/yuvalkirstain/PickScore README (license: mit), the author's demo running "
                       "these weights; github.com/yuvalkirstain/PickScore",
        backbone="CLIP ViT-H/14 (transformers), fine-tuned", params="986M", input_size="224 (short side, centre crop)",
        score_range="logit_scale.exp() * cos, ~18-23", weights="hf: yuvalkirstain/PickScore_v1",
        published={**_hpsv3({"imagereward_test": 61.6, "pickapic_test": 70.5, "hpdv2_test": 79.8,
                             "hpdv3_test": 65.6}),
                   "pickapic_test_unique": Published(80.2, "imscore re-measurement (github.com/RE-N-Y/imscore)",
                                                     "Pick-a-Pic v2 test_unique (500 pairs)")}),
    "hpsv2": ScorerMeta(
        licence="Apache-2.0", licence_source="github.com/tgxs002/HPSv2 (PyPI hpsv2: Apache-2.0)",
        backbone="open_clip ViT-H-14, fine-tuned", params="986M", input_size="224 (long side, zero padding)",
        score_range="100 * cos, typically 20-35", weights="hf: xswu/HPSv2 HPS_v2_compressed.pt",
        published=_hpsv3({"imagereward_test": 65.7, "pickapic_test": 63.8, "hpdv2_test": 83.3, "hpdv3_test": 65.3})),
    "hpsv2.1": ScorerMeta(
        licence="Apache-2.0", licence_source="github.com/tgxs002/HPSv2 (PyPI hpsv2: Apache-2.0)",
        backbone="open_clip ViT-H-14, fine-tuned", params="986M", input_size="224 (long side, zero padding)",
        score_range="100 * cos, typically 20-35", weights="hf: xswu/HPSv2 HPS_v2.1_compressed.pt"),
    "laion-aesthetic": ScorerMeta(
        licence="Apache-2.0 (head); MIT (OpenAI CLIP ViT-L/14)",
        licence_source="christophschuhmann/improved-aesthetic-predictor (HF mirrors: apache-2.0); the LAION v1 "
                       "heads (LAION-AI/aesthetic-predictor) are MIT",
        backbone="CLIP ViT-L/14 (OpenAI) image tower + MLP 768-1024-128-64-16-1", params="304M",
        input_size="224 (short side, centre crop)", score_range="~1-10", higher_is_better=True,
        weights="sac+logos+ava1-l14-linearMSE.pth (github.com/christophschuhmann/improved-aesthetic-predictor)",
        published=_hpsv3({"imagereward_test": 57.4, "pickapic_test": 56.8, "hpdv2_test": 76.8, "hpdv3_test": 59.9})),
    "imagereward": ScorerMeta(
        licence="Apache-2.0", licence_source="huggingface.co/THUDM/ImageReward model card (license: apache-2.0)",
        backbone="BLIP ViT-L/16 + BERT-base with cross-attention + MLP 768-1024-128-64-16-1", params="447M",
        input_size="224 (short side, centre crop)", score_range="standardised: (r - 0.16717) / 1.03334, ~-2..2",
        weights="hf: THUDM/ImageReward (ImageReward.pt, med_config.json) + bert-base-uncased tokenizer",
        published={**_hpsv3({"imagereward_test": 65.1, "pickapic_test": 61.1, "hpdv2_test": 74.0,
                             "hpdv3_test": 58.6})}),
    "aesthetic-v2.5": ScorerMeta(
        licence="AGPL-3.0", licence_source="github.com/discus0434/aesthetic-predictor-v2-5 (head weights and code)",
        restriction="copyleft",
        backbone="SigLIP so400m-patch14-384 vision tower + MLP 1152-1024-128-64-16-1 on the L2-normalised pooled "
                 "embedding", params="430M", input_size="384 (resized, no crop)", score_range="~1-10 (5.5+ is great)",
        weights="google/siglip-so400m-patch14-384 + aesthetic_predictor_v2_5.pth"),
    "hpsv3": ScorerMeta(
        licence="Apache-2.0 (weights, HF model card); MIT (code)",
        licence_source="huggingface.co/MizzenAI/HPSv3 model card (license: apache-2.0); github.com/MizzenAI/HPSv3 "
                       "pyproject (MIT); base Qwen/Qwen2-VL-7B-Instruct: Apache-2.0",
        backbone="Qwen2-VL-7B-Instruct (ViT 675M + Qwen2-7B LM), fine-tuned; rm_head MLP 3584-1024-16-2 on the "
                 "<|Reward|> token", params="8.3B",
        input_size="~448 x 448: area 256 * 28 * 28 px, aspect kept, sides multiples of 28 (256 image tokens)",
        score_range="mu, unbounded; sigma = exp(log sigma) as an extra output",
        weights="hf: MizzenAI/HPSv3 HPSv3.safetensors + Qwen/Qwen2-VL-7B-Instruct config/tokenizer files",
        published=_hpsv3({"imagereward_test": 66.8, "pickapic_test": 72.8, "hpdv2_test": 85.4, "hpdv3_test": 76.9},
                         "'HPSv3' row (Qwen2-VL-7B)")),
    "clip-iqa": ScorerMeta(
        licence=_OPENAI_MIT, licence_source=_OPENAI_SRC + " (the method's reference code, IceClear/CLIP-IQA and "
                                                       "pyiqa, is non-commercial; none of it is used here)",
        backbone="CLIP RN50 (OpenAI), zero-shot", params="102M", input_size="224 (short side, centre crop)",
        score_range="P('Good photo.') in [0, 1]", weights="open_clip RN50 'openai'"),
    "clip-iqa-vit-l-14": ScorerMeta(
        licence=_OPENAI_MIT, licence_source=_OPENAI_SRC, backbone="CLIP ViT-L/14 (OpenAI), zero-shot", params="428M",
        input_size="224 (short side, centre crop)", score_range="P('Good photo.') in [0, 1]",
        weights="open_clip ViT-L-14 'openai'"),
}
_MEASURE_META = {
    "colorfulness": "0-~150", "contrast": "0-0.5", "exposure": "0-1", "sharpness": ">= 0", "noise": ">= 0",
}
_CLIPSCORE = {  # arch -> (backbone, params, licence)
    "ViT-B-32": ("CLIP ViT-B/32 (OpenAI)", "151M", _OPENAI_MIT),
    "ViT-B-16": ("CLIP ViT-B/16 (OpenAI)", "150M", _OPENAI_MIT),
    "ViT-L-14": ("CLIP ViT-L/14 (OpenAI)", "428M", _OPENAI_MIT),
    "ViT-H-14": ("open_clip ViT-H-14 laion2B-s32B-b79K", "986M", _LAION_H),
}


def metadata_for(name: str) -> ScorerMeta | None:
    """The metadata of built-in preset `name`, or None for presets registered by others (plugins, training)."""
    if name in _BASE:
        return _BASE[name]
    if name in _MEASURE_META:
        return ScorerMeta(licence="n/a (weight-free)", licence_source="imgpref", backbone="none (pixel statistics)",
                          params="0", input_size="256 (short side, centre crop)", score_range=_MEASURE_META[name],
                          higher_is_better=name != "noise")
    if name.startswith("clipscore"):
        from imgpref.scorers.presets import CLIPSCORE_BACKBONES, NOPREFIX_SUFFIX

        base = name[: -len(NOPREFIX_SUFFIX)] if name.endswith(NOPREFIX_SUFFIX) else name
        if base not in CLIPSCORE_BACKBONES:
            return None
        arch, tag = CLIPSCORE_BACKBONES[base]
        backbone, params, licence = _CLIPSCORE[arch]
        src = _OPENAI_SRC if tag == "openai" else "huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
        published = _CLIP_H if base == "clipscore-vit-h-14" and name.endswith(NOPREFIX_SUFFIX) else {}
        return ScorerMeta(licence=licence, licence_source=src, backbone=backbone + ", zero-shot", params=params,
                          input_size="224 (short side, centre crop)", score_range="2.5 * max(cos, 0) in [0, 2.5]",
                          weights=f"open_clip {arch} '{tag}'", published=dict(published))
    return None


def all_metadata() -> dict[str, ScorerMeta | None]:
    """{preset name: metadata or None} for every registered preset, sorted by name."""
    from imgpref.scorers.registry import list_scorers

    return {n: metadata_for(n) for n in list_scorers()}


_NOTICED: set[str] = set()


def notice_licence(name: str) -> None:
    """Log the licence of preset `name` once per process when its weights restrict use (non-commercial,
    copyleft): the user should know before they ship anything scored or trained with it."""
    meta = metadata_for(name)
    if meta is None or not meta.restriction or name in _NOTICED:
        return
    _NOTICED.add(name)
    log.warning("%s: the weights are %s (%s; %s); check that your use complies", name, meta.licence,
                meta.restriction, meta.licence_source)
