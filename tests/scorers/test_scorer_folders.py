"""save_scorer / load_scorer(folder) / hf-hub: round trips give identical scores; clear errors otherwise."""
from __future__ import annotations


import pytest
import torch
import yaml

from imgpref.scorers.base import Scorer, ScorerInfo
from imgpref.scorers.folder import CONFIG_NAME, save_scorer
from imgpref.scorers.heads import LinearHead, MLPHead, build_head, register_head
from imgpref.scorers.registry import load_scorer, load_scorers
from imgpref.scorers.weights import WeightsNotFoundError

TINY = "imgpref-tiny-vit"


def score_tolerance(reference: torch.Tensor) -> dict:
    """assert_close tolerances for fp32 scores: rtol 1e-5 relative to the scores' magnitude (a 100 * cos score
    differs by ~1e-5 between batched and single passes; an absolute 1e-6 would only hold for scores near 1)."""
    scale = max(1.0, float(reference.detach().abs().max())) if reference.numel() else 1.0
    return {"rtol": 1e-5, "atol": 1e-5 * scale}


def _tiny_open_clip_scorer(head, name="mine", needs_prompt=False, seed=0):
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.tiny import tiny_open_clip_model

    model, mname = tiny_open_clip_model(seed)
    bb = OpenClipBackbone.from_model(model, mname, key=f"tiny-seed{seed}")
    return Scorer(bb, head.eval(), ScorerInfo(name=name, needs_prompt=needs_prompt, score_range=None,
                                       description="a test head", extra={"trained_on": "nothing"}))


def test_tiny_open_clip_folder_roundtrip_without_registration(tmp_path, images, prompts, monkeypatch):
    torch.manual_seed(0)
    head = MLPHead(32, hidden=[16], prompt="concat")
    scorer = _tiny_open_clip_scorer(head, needs_prompt=True)
    want = scorer.score(images, prompts)
    folder = save_scorer(scorer, tmp_path / "s")
    doc = yaml.safe_load((folder / CONFIG_NAME).read_text())
    assert doc["backbone"]["model_config"]["embed_dim"] == 32 and doc["backbone"]["weights"] == "folder"
    assert doc["head"] == {"type": "mlp", "input_dim": 32, "hidden": [16], "dropout": 0.1, "normalize": True,
                           "prompt": "concat"}
    # a fresh process would not know the tiny architecture: forget it, loading must not need it
    import open_clip.factory as f

    monkeypatch.setattr(f, "_MODEL_CONFIGS", {k: v for k, v in f._MODEL_CONFIGS.items() if k != TINY})
    import imgpref.scorers.tiny as tiny

    monkeypatch.setattr(tiny, "_registered", set())
    loaded = load_scorer(folder)
    torch.testing.assert_close(loaded.score(images, prompts), want, **score_tolerance(want))
    assert loaded.needs_prompt and loaded.info.extra == {"trained_on": "nothing"}
    # the key carries a digest of the stored weights (tests/scorers/test_identity_backbones.py checks its value)
    assert loaded.backbone.key.startswith("tiny-seed0#w") and loaded.backbone.key == doc["backbone"]["key"]
    # scorer.yaml itself is accepted too
    assert load_scorer(folder / CONFIG_NAME).name == "mine"


def test_pickscore_folder_roundtrip(tmp_path, ckpts, images, prompts):
    ps = load_scorer("pickscore", weights=ckpts["pickscore"])
    want = ps.score(images, prompts)
    folder = save_scorer(ps, tmp_path / "ps")  # weights given by path: no published reference, stored
    assert (folder / "hf_processor" / "preprocessor_config.json").is_file()
    loaded = load_scorer(folder)
    torch.testing.assert_close(loaded.score(images, prompts), want, **score_tolerance(want))


def test_published_reference_not_copied_and_resolved_via_weights(tmp_path, ckpts, images, prompts):
    hps = load_scorer("hpsv2", weights=ckpts["hpsv2"], arch=TINY)
    want = hps.score(images, prompts)
    hps.backbone.weights_ref = {"source": "hf", "repo": "xswu/HPSv2", "file": "HPS_v2_compressed.pt"}
    folder = save_scorer(hps, tmp_path / "hps")
    assert not any(k.startswith("backbone.") for k in _keys(folder))
    with pytest.raises(WeightsNotFoundError, match="HPS_v2_compressed.pt"):
        load_scorer(folder)  # offline, empty cache
    loaded = load_scorer(folder, weights=ckpts["hpsv2"])
    torch.testing.assert_close(loaded.score(images, prompts), want, **score_tolerance(want))
    # fine-tuned: include the backbone; the key gains the weights' digest so caches never mix the two
    ft = save_scorer(hps, tmp_path / "ft", include_backbone=True)
    loaded = load_scorer(ft)
    assert loaded.backbone.key.startswith("hpsv2:imgpref-tiny-vit#w")
    torch.testing.assert_close(loaded.score(images, prompts), want, **score_tolerance(want))


def _keys(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_pixel_measure_folder(tmp_path, images):
    s = load_scorer("noise")
    folder = save_scorer(s, tmp_path / "noise")
    loaded = load_scorer(folder)
    assert loaded.higher_is_better is False
    torch.testing.assert_close(loaded.score(images), s.score(images))


def test_hf_hub_from_cache_and_offline_error(tmp_path, offline_hf, images):
    s = load_scorer("contrast")
    # lay a scorer folder out as a cached hub snapshot: models--org--repo/snapshots/<rev>/ + refs/main
    repo_dir = offline_hf / "models--acme--contrast-scorer"
    snap = repo_dir / "snapshots" / ("0" * 40)
    save_scorer(s, snap)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text("0" * 40)
    loaded = load_scorer("hf-hub:acme/contrast-scorer")
    torch.testing.assert_close(loaded.score(images), s.score(images))
    with pytest.raises(WeightsNotFoundError) as ei:
        load_scorer("hf-hub:acme/not-there")
    msg = str(ei.value)
    assert "\n" not in msg and "acme/not-there" in msg and str(offline_hf) in msg and "scorer.yaml" in msg


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scorer(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="scorer.yaml"):
        load_scorer(tmp_path / "empty")


def test_custom_head_type_roundtrip(tmp_path, images):
    @register_head("test_scaled_sum")
    class ScaledSum(LinearHead):
        def __init__(self, input_dim: int, factor: float = 2.0):
            super().__init__(input_dim)
            self.factor = factor

        def forward(self, img_emb, txt_emb=None):
            return self.factor * super().forward(img_emb)

        def describe(self):
            return {"type": "test_scaled_sum", "input_dim": self.input_dim, "factor": self.factor}

    s = _tiny_open_clip_scorer(ScaledSum(32, 3.0), name="scaled")
    folder = save_scorer(s, tmp_path / "c")
    loaded = load_scorer(folder)
    assert isinstance(loaded.head, ScaledSum) and loaded.head.factor == 3.0
    torch.testing.assert_close(loaded.score(images), s.score(images), **score_tolerance(s.score(images)))
    with pytest.raises(ValueError, match="unknown head type 'nope'"):
        build_head({"type": "nope"})


def test_load_scorers_shares_folder_backbones(tmp_path, images):
    a = save_scorer(_tiny_open_clip_scorer(LinearHead(32), name="a", seed=7), tmp_path / "a")
    b = save_scorer(_tiny_open_clip_scorer(MLPHead(32), name="b", seed=7), tmp_path / "b")
    sa, sb = load_scorers([a, b])
    assert sa.backbone is sb.backbone


def test_open_clip_reference_resolved_from_weights_folder(tmp_path, ckpts, images, prompts):
    cs = load_scorer("clipscore", weights=ckpts["open_clip"], arch=TINY)
    want = cs.score(images, prompts)
    cs.backbone.weights_ref = {"source": "open_clip", "model_name": TINY, "pretrained": "tiny", "quick_gelu": False}
    folder = save_scorer(cs, tmp_path / "cs")
    assert not any(k.startswith("backbone.") for k in _keys(folder))
    with pytest.raises(WeightsNotFoundError, match="--weights PATH"):
        load_scorer(folder)
    loaded = load_scorer(folder, weights=ckpts["open_clip"].parent)
    torch.testing.assert_close(loaded.score(images, prompts), want, **score_tolerance(want))
    assert loaded.head.describe() == {"type": "cosine", "scale": 1.0, "clamp_min": 0.0, "weight": 2.5}
