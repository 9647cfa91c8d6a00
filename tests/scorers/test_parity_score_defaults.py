"""`imgpref score` runs each published scorer in its reference's precision on CUDA by default; `--fast` (bf16,
drafted JPEGs) and an explicit `--precision` are opt-in. The policy is checked without a GPU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from imgpref.scorers.fidelity import reference_dtype
from imgpref.scorers.registry import get_preset

CUDA, CPU = torch.device("cuda"), torch.device("cpu")

# what each reference ran in on CUDA (see the preset's "reference" entry):
# PickScore README: AutoModel in float32; HPSv2 img_score.py: precision="amp" (float16 autocast);
# improved-aesthetic-predictor and jmhessel/clipscore: OpenAI clip.load, float16 weights on CUDA.
EXPECTED = {"pickscore": torch.float32, "hpsv2": torch.float16, "hpsv2.1": torch.float16,
            "laion-aesthetic": torch.float16, "clipscore": torch.float16, "clipscore-noprefix": torch.float16,
            "clipscore-vit-l-14": torch.float16, "clipscore-vit-h-14": torch.float32, "colorfulness": torch.float32}


def _scorer(name: str) -> SimpleNamespace:
    return SimpleNamespace(info=get_preset(name).info)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_precision_per_preset(name):
    assert reference_dtype([_scorer(name)], CUDA) == EXPECTED[name]
    assert reference_dtype([_scorer(name)], CPU) == torch.float32


def test_shared_backbone_members_that_disagree_run_in_fp32():
    assert reference_dtype([_scorer("laion-aesthetic"), _scorer("clipscore-vit-l-14")], CUDA) == torch.float16
    assert reference_dtype([_scorer("hpsv2"), _scorer("pickscore")], CUDA) == torch.float32


def test_groups_default_full_decode_and_reference_dtype_fast_drafts(ckpts):
    """The engine's groups: no draft and the reference dtype by default; `fast` drafts JPEGs and runs bf16, and
    its embeddings live in another cache namespace."""
    from imgpref.scorers.registry import load_scorer
    from imgpref.scorers.score_paths import _groups

    scorer = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch="imgpref-tiny-vit")
    (ref,) = _groups([scorer], None, CUDA)
    assert ref.draft is None and ref.dtype == torch.float16
    (fast,) = _groups([scorer], torch.bfloat16, CUDA, fast=True)
    assert fast.draft == 64 and fast.dtype == torch.bfloat16  # 2x the tiny model's 32-pixel input
    (cpu,) = _groups([scorer], None, CPU)
    assert cpu.draft is None and cpu.dtype == torch.float32
    assert len({ref.cache_ns, fast.cache_ns, cpu.cache_ns}) == 3
