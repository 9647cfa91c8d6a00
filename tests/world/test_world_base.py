"""The world's base text-to-image model: the committed pack loads, samples recognisable scenes with headroom,
round-trips through save_pretrained folders, and pretraining is deterministic; the CLIP loss by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imgpref.world.pretrain_losses import contrastive_loss, gaussian_kl


@pytest.fixture(scope="module")
def world():
    from imgpref.world.store import load_world

    torch.manual_seed(0)
    return load_world()


def _heldout_prompts(n: int) -> list[str]:
    from imgpref.world.reward import world_prompts

    return world_prompts(7, 0, 0, n)["test"]  # half colour x shape combos never seen in pretraining


@pytest.fixture(scope="module")
def heldout_judged(world):
    from imgpref.align.generate import generate_images
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.judge import judge

    pipe, _ = world
    prompts = _heldout_prompts(24)
    gens = generate_images(pipe, prompts, 1, base_seed=1_000_000, batch_size=32, **SAMPLE_SETTINGS)
    return gens, prompts, judge(gens.images, prompts)


def test_committed_base_samples_recognisable_scenes(world, heldout_judged):
    from imgpref.world.judge import judge

    pipe, _ = world
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    gens, prompts, j = heldout_judged
    fid = float(j["fidelity"].mean())
    # Recognisable = follows its prompt: the same images judged against another prompt's text score far lower.
    wrong = float(judge(gens.images, prompts[1:] + prompts[:1])["fidelity"].mean())
    assert fid - wrong > 0.1, (fid, wrong)
    assert float(j["colour"].mean()) > 0.5 and float(j["background"].mean()) > 0.4, j


def test_committed_base_fidelity_is_in_the_target_band(heldout_judged):
    fid = float(heldout_judged[2]["fidelity"].mean())
    # issue 8: recognisably the world, with headroom for alignment. Measured on these 24 prompts: 0.401; on the
    # benchmark's 48 held-out prompts x 2 seeds: 0.321 (benchmarks/RESULTS.md, world_align).
    assert 0.3 <= fid <= 0.8, fid


def test_save_pretrained_folders_load_as_the_same_pipeline_and_clip(world, tmp_path):
    from imgpref.align.pipeline_io import load_pipeline
    from imgpref.train.build import build_backbone
    from imgpref.world.store import world_dirs

    pipe, clip = world
    dirs = world_dirs(cache=tmp_path)
    again = load_pipeline(str(dirs["pipeline"]))
    assert type(again).__name__ == "StableDiffusionPipeline"
    for a, b in ((pipe.unet, again.unet), (pipe.vae, again.vae), (pipe.text_encoder, again.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert again.vae.config.scaling_factor == pipe.vae.config.scaling_factor != 0.18215
    # The text encoder is the CLIP's text tower; the CLIP folder is an hf_clip backbone for `imgpref train`.
    te = pipe.text_encoder.state_dict()
    assert all(torch.equal(te[k], v) for k, v in clip.text_model.state_dict().items())
    bb = build_backbone({"type": "hf_clip", "source": str(dirs["clip"])})
    assert bb.embed_dim == clip.config.projection_dim and bb.image_size == 32


def test_clip_prefers_the_true_caption(world):
    from imgpref.world.clip_pretrain import retrieval_accuracy
    from imgpref.world.scenes import COLOURS, sample_dataset

    _, clip = world
    images, prompts = sample_dataset(24, 99)
    # Candidates differing from the truth in the colour only: chance is 1/8.
    hits = []
    for img, p in zip(images, prompts):
        colour = p.split()[1]
        cands = [p.replace(f" {colour} ", f" {c} ", 1) for c in COLOURS]
        hits.append(retrieval_accuracy(clip, img[None], [p], cands))
    assert np.mean(hits) > 0.5


def test_contrastive_loss_by_hand():
    # Orthogonal unit embeddings, logit scale exp(0) = 1: logits = identity; each row's loss is
    # -log(e / (e + 1)) = log(1 + 1/e), in both directions.
    e = torch.eye(2)
    loss = contrastive_loss(e, e, torch.tensor(0.0), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # The same caption twice: targets are 0.5 / 0.5, identical embeddings give equal logits -> log 2.
    same = torch.ones(2, 2)
    assert contrastive_loss(same, same, torch.tensor(0.0), torch.tensor([3, 3])).item() == pytest.approx(math.log(2))
    # KL of N(1, 1) to N(0, 1) per element is 1/2.
    assert gaussian_kl(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(0.5)


def test_pretraining_is_deterministic_and_packs_losslessly_to_fp16(tmp_path):
    from imgpref.world.base_model import PretrainSizes, pretrain_world
    from imgpref.world.store import load_world, pack_world

    torch.set_num_threads(1)
    sizes = PretrainSizes(scenes=64, clip_steps=2, clip_batch=16, vae_steps=2, vae_batch=8, unet_steps=(2,),
                          unet_batch=8)
    p1, c1, rep = pretrain_world(tmp_path / "a", seed=3, sizes=sizes)
    p2, c2, _ = pretrain_world(None, seed=3, sizes=sizes)
    for a, b in ((p1.unet, p2.unet), (p1.vae, p2.vae), (c1, c2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "a" / "pipeline" / "model_index.json").is_file()
    assert set(rep.cpu_seconds) >= {"clip", "vae", "unet", "total"}
    pack_world(p1, c1, tmp_path / "pack")
    p3, c3 = load_world(tmp_path / "pack")
    w1, w3 = p1.unet.state_dict(), p3.unet.state_dict()
    for k in w1:  # fp16 storage: relative error <= 2^-11 per weight
        assert torch.allclose(w1[k], w3[k], rtol=2 ** -10, atol=1e-7), k
    assert p3.vae.config.scaling_factor == pytest.approx(p1.vae.config.scaling_factor)


def test_caption_noise_reaches_the_unet_only(tmp_path):
    from dataclasses import replace

    from imgpref.world.base_model import PretrainSizes, pretrain_world

    torch.set_num_threads(1)
    sizes = PretrainSizes(scenes=64, clip_steps=2, clip_batch=16, vae_steps=2, vae_batch=8, unet_steps=(2,),
                          unet_batch=8)
    clean_p, clean_c, _ = pretrain_world(None, seed=3, sizes=sizes)
    noisy_p, noisy_c, rep = pretrain_world(None, seed=3, sizes=replace(sizes, caption_noise=0.5))
    # CLIP and VAE learn from the clean scenes: bit-identical to the noise-free build
    for a, b in ((clean_c, noisy_c), (clean_p.vae, noisy_p.vae)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # the UNet sees the flawed images (same seed, same captions): its weights differ after 2 steps
    ua, ub = clean_p.unet.state_dict(), noisy_p.unet.state_dict()
    assert any(not torch.equal(ua[k], ub[k]) for k in ua)
    assert rep.sizes["caption_noise"] == 0.5 and "caption_noise" in rep.seconds
    with pytest.raises(ValueError, match=r"caption_noise must lie in \[0, 1\); got -0.1"):
        pretrain_world(tmp_path / "never", seed=3, sizes=replace(sizes, caption_noise=-0.1))
    assert not (tmp_path / "never").exists()


def test_cli_pretrain_rejects_caption_noise_out_of_range(tmp_path):
    import typer
    from typer.testing import CliRunner

    from imgpref.cli.world_pretrain import add_pretrain

    app = typer.Typer()
    add_pretrain(app)
    res = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path / "b"), "--quick", "--caption-noise", "1.5"])
    assert res.exit_code == 2 and "--caption-noise must lie in [0, 1); got 1.5" in res.output
    assert not (tmp_path / "b").exists()


def test_cli_base_writes_loadable_folders_and_pretrain_rejects_a_file(tmp_path):
    import typer
    from typer.testing import CliRunner

    from imgpref.cli.world_pretrain import add_pretrain

    app = typer.Typer()
    add_pretrain(app)
    res = CliRunner().invoke(app, ["base", "--out", str(tmp_path / "wb")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "wb" / "pipeline" / "model_index.json").is_file()
    assert (tmp_path / "wb" / "clip" / "preprocessor_config.json").is_file()
    afile = tmp_path / "afile"
    afile.write_text("")
    res = CliRunner().invoke(app, ["pretrain", "--out", str(afile)])
    assert res.exit_code == 2 and "is a file" in res.output
