"""Before/after evaluation: win-rate statistics, aligned-folder detection, the written report."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgpref.align.evaluate import (
    bootstrap_win_rate,
    comparison_outcomes,
    detect_aligned_format,
    evaluate_alignment,
)
from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo


class _MeanBackbone(Backbone):
    key = "test-mean"
    embed_dim = 3

    def preprocess(self, image):
        raise NotImplementedError

    def pixels_to_input(self, images):
        return images

    def embed_images(self, pixels):
        return pixels.mean(dim=(1, 2, 3)).unsqueeze(1)


class _First(Head):
    def forward(self, img_emb, txt_emb=None):
        return img_emb[:, 0]


def brightness() -> Scorer:
    return Scorer(_MeanBackbone(), _First(), ScorerInfo(name="brightness"))


def test_outcomes_and_bootstrap_hand_computed():
    o = comparison_outcomes(np.array([2.0, 1.0, 3.0]), np.array([1.0, 1.0, 4.0]))
    assert o.tolist() == [1.0, 0.5, 0.0]
    rate, lo, hi = bootstrap_win_rate(np.ones((5, 3)))
    assert (rate, lo, hi) == (1.0, 1.0, 1.0)
    outcomes = np.array([[1, 1], [1, 0], [0.5, 0.5], [1, 1]], dtype=float)
    rate, lo, hi = bootstrap_win_rate(outcomes, n_boot=4000, seed=0)
    assert rate == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    # Per-prompt means are {1, .5, .5, 1}: any resample mean lies in [0.5, 1].
    assert 0.5 <= lo < rate < hi <= 1.0
    # The same bootstrap done directly.
    per = outcomes.mean(1)
    idx = np.random.default_rng(0).integers(0, 4, size=(4000, 4))
    assert lo == pytest.approx(np.quantile(per[idx].mean(1), 0.025))
    with pytest.raises(ValueError):
        bootstrap_win_rate(np.ones(3))


def test_detect_aligned_format(tmp_path):
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert detect_aligned_format(tmp_path / "lora") == ("lora", tmp_path / "lora")
    (tmp_path / "run" / "aligned" / "unet").mkdir(parents=True)
    (tmp_path / "run" / "aligned" / "unet" / "config.json").write_text("{}")
    assert detect_aligned_format(tmp_path / "run") == ("unet", tmp_path / "run" / "aligned" / "unet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no aligned weights"):
        detect_aligned_format(tmp_path / "empty")


def test_evaluate_writes_metrics_grid_html(tiny_pipe, tmp_path):
    aligned = copy.deepcopy(tiny_pipe)
    with torch.no_grad():  # a visibly different model: shift the UNet output
        aligned.unet.conv_out.bias.add_(0.5)
    res = evaluate_alignment(tiny_pipe, aligned, ["a cat", "a dog", "a car"], brightness(), tmp_path, seeds=2,
                             num_inference_steps=2, guidance_scale=1.0, n_boot=500)
    m = json.loads((tmp_path / "metrics.json").read_text())
    rb = np.array([c["reward_base"] for c in m["comparisons"]])
    ra = np.array([c["reward_aligned"] for c in m["comparisons"]])
    assert len(rb) == 6 and [c["seed"] for c in m["comparisons"]] == [1_000_000 + i for i in range(6)]
    expected = np.where(ra > rb, 1.0, np.where(ra == rb, 0.5, 0.0)).mean()
    assert res.win_rate == pytest.approx(expected) and m["win_rate"] == pytest.approx(expected)
    assert res.wins + res.ties + res.losses == 6
    assert res.ci_low <= res.win_rate <= res.ci_high
    assert m["per_scorer"]["brightness"]["base_mean"] == pytest.approx(rb.mean())
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (220 + 2 * 128 + 12, 20 + 3 * 132)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 12 and "a dog" in page


def test_identical_pipelines_tie_everywhere(tiny_pipe):
    res = evaluate_alignment(tiny_pipe, copy.deepcopy(tiny_pipe), ["a cat", "a dog"], brightness(), None, seeds=1,
                             num_inference_steps=1, guidance_scale=1.0, n_boot=100)
    assert res.ties == 2 and res.win_rate == 0.5 and res.ci_low == res.ci_high == 0.5
    with pytest.raises(ValueError, match="same pipeline"):
        evaluate_alignment(tiny_pipe, tiny_pipe, ["a"], brightness(), None, seeds=1, num_inference_steps=1)
