"""One pass through every third-party integration, fast: the subset the lowest-versions CI job runs.

`scripts/test_lowest.sh` installs every direct dependency at its declared floor (pyproject.toml) and runs
`pytest -m lowest`; the main suite runs these too (on the newest versions). Each test crosses the libraries a
user's environment may hold at their floors: transformers (CLIPModel, CLIPImageProcessor, CLIPTokenizer),
open_clip, Lightning (Trainer, checkpoints, EMA), diffusers + peft (LoRA export, plain `load_lora_weights`),
typer/click (the CLI), pandas/pyarrow (tables), scipy/scikit-learn (metrics), matplotlib (reliability diagram).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

from imgpref.cli import app
from tiny_recipe import small_overrides  # tests/tiny_recipe.py

pytestmark = pytest.mark.lowest
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield
    torch.set_num_threads(n)


def _photos(folder: Path) -> list[Path]:
    """Three PNG photos of different shapes (PNG: decoded exactly alike by every path)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, size in (("astronaut", (96, 64)), ("chelsea", (50, 80)), ("coffee", (70, 66))):
        p = folder / f"{name}.png"
        Image.fromarray(getattr(skdata, name)()).resize(size).save(p)
        out.append(p)
    return out


def _unwrap(features) -> torch.Tensor:
    # transformers 4.x returns the projected features as a tensor, 5.x a ModelOutput holding them in pooler_output
    return features if torch.is_tensor(features) else features.pooler_output


def test_pickscore_cli_matches_transformers(tmp_path):
    """`imgpref score --scorer pickscore` on a tiny PickScore-layout folder == transformers' own computation."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from imgpref.scorers.tiny_checkpoints import write_tiny_pickscore

    folder = write_tiny_pickscore(tmp_path / "pickscore", seed=1)
    paths = _photos(tmp_path / "imgs")
    prompt = "a photo of a cat"
    res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", "pickscore", "--weights", str(folder),
                                   "--prompt", prompt, "--out", str(tmp_path / "s.csv"), "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    got = pd.read_csv(tmp_path / "s.csv").set_index("path")["score"]

    model = CLIPModel.from_pretrained(str(folder)).eval()
    proc = CLIPImageProcessor.from_pretrained(str(folder))
    tok = CLIPTokenizer.from_pretrained(str(folder))
    with torch.no_grad():
        img = _unwrap(model.get_image_features(**proc(images=[Image.open(p) for p in paths], return_tensors="pt")))
        txt = _unwrap(model.get_text_features(**tok([prompt], padding="max_length", max_length=77,
                                                    truncation=True, return_tensors="pt")))
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        want = (model.logit_scale.exp() * img @ txt.T)[:, 0]
    np.testing.assert_allclose([got[str(p.resolve())] for p in paths], want.numpy(), rtol=1e-5, atol=1e-5)


def test_train_one_epoch_evaluate_reload_and_score(tmp_path):
    """Lightning trains the tiny recipe (with EMA); eval writes metrics + a reliability PNG; the saved folder
    reloads, and the CLI's scores equal load_scorer's."""
    from imgpref.data.synth import make_rendering_dataset
    from imgpref.scorers.registry import load_scorer

    make_rendering_dataset(tmp_path / "synth", scenes=6, seed=3, size=32)
    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "train" / "tiny_rendering.yaml"),
            "--data", str(tmp_path / "synth" / "manifest.csv"), "--out", str(run), "--no-progress"]
    for o in small_overrides("imgpref-tiny-rendering-lowest", "trainer.max_epochs=1", "trainer.early_stopping=null",
                             "trainer.ema={decay: 0.9}"):
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] > 0

    res = CliRunner().invoke(app, ["eval", "--scorer", str(run), "--data", str(tmp_path / "synth" / "manifest.csv"),
                                   "--split", "test", "--protocol", "votes", "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_pairs"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["ece"])
    assert (tmp_path / "m_reliability.png").stat().st_size > 1000

    paths = _photos(tmp_path / "imgs")
    res = CliRunner().invoke(app, ["score", str(tmp_path / "imgs"), "--scorer", str(run), "--out",
                                   str(tmp_path / "s.parquet"), "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    got = pd.read_parquet(tmp_path / "s.parquet").set_index("path")["score"]
    want = load_scorer(run).score([Image.open(p).convert("RGB") for p in paths])
    np.testing.assert_allclose([got[str(p.resolve())] for p in paths], want.numpy(), rtol=1e-5, atol=1e-5)


def test_align_one_step_lora_export_reloads_in_plain_diffusers(tmp_path, light_dark_pairs):
    """One Lightning step of Diffusion-DPO with LoRA (peft), exported; plain diffusers `load_lora_weights` and
    `load_aligned_pipeline` give the same images, which differ from the base pipeline's."""
    from imgpref.align.export import load_aligned_pipeline
    from imgpref.align.tiny import build_tiny_pipeline
    from imgpref.align.train import align

    manifest = light_dark_pairs(tmp_path / "pairs", n=2, tie=False)
    # lr high and alpha != rank so one step visibly moves the images and the LoRA scale must survive the export
    res = align(ROOT / "configs" / "align" / "tiny_dpo.yaml", manifest, tmp_path / "run",
                pipe=build_tiny_pipeline(seed=0), **{"trainer.max_steps": 1, "data.latents": None,
                                                     "data.batch_size": 2, "model.lr": 5e-2, "model.lora_rank": 4,
                                                     "model.lora_alpha": 8, "export.use_ema": False})
    assert res.steps == 1

    def generate(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe(["photo 0", "a red cat"], num_inference_steps=3, guidance_scale=5.0, output_type="pt",
                    generator=torch.Generator().manual_seed(7)).images

    plain = build_tiny_pipeline(seed=0)
    base = generate(plain)
    # weight_name: diffusers 0.34 refuses a bare folder under HF_HUB_OFFLINE (the suite's default)
    plain.load_lora_weights(str(res.export_dir), weight_name="pytorch_lora_weights.safetensors")
    theirs = generate(plain)
    ours = generate(load_aligned_pipeline(tmp_path / "run"))
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert (theirs - base).abs().max() > 1e-3
