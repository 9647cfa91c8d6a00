"""Scorer-labelled pairs: pair choice (ties never oriented), reward combination, the written manifest."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from imgpref.align.pairs import choose_pairs, held_out_prompts, label_pairs
from imgpref.align.prompts import read_prompts
from imgpref.align.rewards import combine_rewards, zscore
from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo


class _MeanBackbone(Backbone):
    """Weight-free: the 'embedding' of an image is its mean value per channel."""

    key = "test-mean"
    embed_dim = 3

    def preprocess(self, image):
        raise NotImplementedError

    def pixels_to_input(self, images):
        return images

    def embed_images(self, pixels):
        return pixels.mean(dim=(2, 3))


class _Index(Head):
    def __init__(self, i: int):
        super().__init__()
        self.i = i

    def forward(self, img_emb, txt_emb=None):
        return img_emb[:, self.i]


def channel_scorer(i: int, higher_is_better: bool = True, name: str | None = None) -> Scorer:
    return Scorer(_MeanBackbone(), _Index(i), ScorerInfo(name=name or f"ch{i}", higher_is_better=higher_is_better))


def test_best_worst_picks_extremes_and_margin():
    pairs, counts = choose_pairs([0.2, 0.9, 0.1, 0.5])
    assert [(p.winner, p.loser) for p in pairs] == [(1, 2)]
    assert pairs[0].margin == pytest.approx(0.8)
    assert (counts.pairs, counts.ties, counts.below_margin) == (1, 0, 0)
    pairs, counts = choose_pairs([0.2, 0.9, 0.1, 0.5], min_margin=0.85)
    assert pairs == [] and counts.below_margin == 1


def test_ties_are_reported_never_oriented():
    pairs, counts = choose_pairs([0.3, 0.3, 0.3])
    assert counts.ties == 1 and counts.pairs == 0
    assert len(pairs) == 1 and pairs[0].tie
    pairs, counts = choose_pairs([0.5, 0.1, 0.5], mode="all")
    # (0,1): 0 wins; (0,2): tie; (1,2): 2 wins
    oriented = [(p.winner, p.loser) for p in pairs if not p.tie]
    assert oriented == [(0, 1), (2, 1)]
    assert counts.ties == 1 and counts.pairs == 2


def test_all_mode_counts_every_pair():
    _, counts = choose_pairs([1.0, 2.0, 3.0, 4.0], mode="all", min_margin=1.5)
    # differences: 1,2,3,1,2,1 -> 3 pairs >= 1.5, 3 below
    assert (counts.pairs, counts.below_margin, counts.ties) == (3, 3, 0)


def test_bad_inputs_raise_valueerror():
    with pytest.raises(ValueError, match="mode"):
        choose_pairs([1, 2], mode="best")
    with pytest.raises(ValueError, match="at least 2"):
        choose_pairs([1.0])


def test_combine_one_scorer_raw_several_zscored():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([10.0, 10.0, 40.0])
    np.testing.assert_allclose(combine_rewards({"a": a}, [5.0]), a)
    za = (a - a.mean()) / a.std()
    zb = (b - b.mean()) / b.std()
    np.testing.assert_allclose(combine_rewards({"a": a, "b": b}, [1.0, 2.0]), za + 2 * zb)
    np.testing.assert_allclose(zscore(np.ones(4)), np.zeros(4))
    with pytest.raises(ValueError, match="weights"):
        combine_rewards({"a": a, "b": b}, [1.0])


def test_held_out_prompts_are_whole_and_seeded():
    v = held_out_prompts(10, 0.3, seed=1)
    assert len(v) == 3 and v == held_out_prompts(10, 0.3, seed=1)
    assert held_out_prompts(10, 0.0) == set()


def test_read_prompts_formats(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog \n")
    assert read_prompts(tmp_path / "p.txt") == ["a cat", "a dog"]
    pd.DataFrame({"prompt": ["x", "y"], "other": [1, 2]}).to_csv(tmp_path / "p.csv", index=False)
    assert read_prompts(tmp_path / "p.csv") == ["x", "y"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "u"}\n{"prompt": "v"}\n')
    assert read_prompts(tmp_path / "p.jsonl") == ["u", "v"]
    pd.DataFrame({"text": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="prompt"):
        read_prompts(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.txt")


def test_label_pairs_writes_consistent_manifest(tiny_pipe, tmp_path):
    prompts = ["a red cat", "a blue dog", "a green car"]
    red = channel_scorer(0, name="red")
    blue_low = channel_scorer(2, higher_is_better=False, name="blue")  # lower is better -> negated reward
    rep = label_pairs(tiny_pipe, prompts, [red, blue_low], tmp_path, n=3, weights=[1.0, 0.5],
                      num_inference_steps=2, guidance_scale=1.0, val_fraction=0.34, batch_size=4)
    gen = pd.read_csv(tmp_path / "generations.csv")
    assert len(gen) == 9 and list(gen["seed"]) == list(range(9))
    # Rewards in generations.csv, recomputed by hand from the saved scores: z(red) + 0.5 * z(-blue), z over all
    # 9 images with the population standard deviation.
    red_s, blue_s = gen["score_red"].to_numpy(), gen["score_blue"].to_numpy()
    expected = [(r - red_s.mean()) / math.sqrt(((red_s - red_s.mean()) ** 2).mean())
                + 0.5 * (b - blue_s.mean()) / math.sqrt(((blue_s - blue_s.mean()) ** 2).mean())
                for r, b in zip(red_s, blue_s)]
    np.testing.assert_allclose(gen["reward"].to_numpy(), expected, rtol=1e-6, atol=1e-9)
    # score_blue is the sign-adjusted reward: minus the mean blue channel of the saved image (PNG rounding).
    from PIL import Image
    img = np.asarray(Image.open(tmp_path / gen["path"][0]), dtype=np.float64) / 255.0
    assert gen["score_blue"][0] == pytest.approx(-img[..., 2].mean(), abs=2e-3)
    man = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False)
    assert list(man.columns) == ["image_0", "image_1", "votes_0", "votes_1", "votes_tie", "prompt", "group",
                                 "annotator", "split"]
    assert len(man) == rep.n_pairs == 3 and rep.n_ties == 0
    for _, row in man.iterrows():
        r0 = gen.loc[gen["path"] == row["image_0"], "reward"].item()
        r1 = gen.loc[gen["path"] == row["image_1"], "reward"].item()
        group = gen.loc[gen["path"] == row["image_0"]]
        assert r0 == group_max(gen, group["prompt_index"].item()) and r1 < r0
        assert (row["votes_0"], row["votes_1"], row["votes_tie"]) == (1, 0, 0)
        assert (tmp_path / row["image_0"]).is_file()
    assert sorted(man["split"]) == ["train", "train", "val"]
    meta = json.loads((tmp_path / "pairs.json").read_text())
    assert meta["n_pairs"] == 3 and meta["generation"]["num_inference_steps"] == 2
    from safetensors.torch import load_file
    lat = load_file(str(tmp_path / "latents.safetensors"))
    assert set(lat) == set(gen["path"]) and lat[gen["path"][0]].shape == (4, 16, 16)


def group_max(gen: pd.DataFrame, prompt_index: int) -> float:
    return gen.loc[gen["prompt_index"] == prompt_index, "reward"].max()


def test_label_pairs_ties_dropped_or_kept(tiny_pipe, tmp_path):
    const = Scorer(_MeanBackbone(), _Const(), ScorerInfo(name="const"))
    rep = label_pairs(tiny_pipe, ["a", "b"], const, tmp_path / "drop", n=2, num_inference_steps=1, guidance_scale=1.0)
    assert rep.n_ties == 2 and rep.n_pairs == 0
    assert len(pd.read_csv(tmp_path / "drop" / "manifest.csv")) == 0
    rep = label_pairs(tiny_pipe, ["a", "b"], const, tmp_path / "keep", n=2, num_inference_steps=1, guidance_scale=1.0,
                      keep_ties=True)
    man = pd.read_csv(tmp_path / "keep" / "manifest.csv")
    assert rep.n_ties_kept == 2 and (man["votes_tie"] == 1).all() and (man["votes_0"] == 0).all()


class _Const(Head):
    def forward(self, img_emb, txt_emb=None):
        return torch.zeros(img_emb.shape[0])


def test_pairs_cli(tiny_pipe_dir, tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app

    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    res = CliRunner().invoke(app, ["align", "pairs", "--pipeline", str(tiny_pipe_dir), "--prompts",
                                   str(tmp_path / "p.txt"), "--n", "2", "--scorer", "exposure", "--steps", "1",
                                   "--guidance", "1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    man = pd.read_csv(tmp_path / "o" / "manifest.csv")
    gen = pd.read_csv(tmp_path / "o" / "generations.csv")
    assert len(gen) == 4 and "score_exposure" in gen.columns
    assert len(man) + json.loads((tmp_path / "o" / "pairs.json").read_text())["n_ties"] == 2
    res = CliRunner().invoke(app, ["align", "pairs", "--pipeline", str(tmp_path / "nope"), "--prompts",
                                   str(tmp_path / "p.txt"), "--scorer", "exposure", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2


def test_suggested_recipe_follows_the_pipeline_class(tmp_path):
    from pathlib import Path

    from imgpref.cli.align_pairs import suggested_recipe

    repo = Path(__file__).resolve().parents[2]
    expect = {"tiny": "tiny_dpo.yaml", "tiny-sd3": "tiny_dpo_sd3.yaml", "tiny-flux": "tiny_dpo_flux.yaml"}
    for cls, name in (("StableDiffusion3Pipeline", "dpo_sd35.yaml"), ("FluxPipeline", "dpo_flux.yaml"),
                      ("StableDiffusionXLPipeline", "dpo_sdxl.yaml"), ("SomethingElse", "dpo_sd15.yaml")):
        folder = tmp_path / cls
        folder.mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": cls}))
        expect[str(folder)] = name
    for pipeline, name in expect.items():
        assert suggested_recipe(pipeline) == f"configs/align/{name}"
        assert (repo / "configs" / "align" / name).is_file()
