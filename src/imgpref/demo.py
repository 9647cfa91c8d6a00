"""The offline demo: every product of the toolkit end to end on bundled data, nothing downloaded.

1. score bundled photos (scikit-image / scikit-learn sample images, plus a corrupt file) with the weight-free
   scorers, write scores + an HTML report;
2. synthesise a DEAR-style rendering-preference set, train the tiny recipe on it, evaluate on the test split,
   score the test renderings with the trained scorer, HTML report;
3. build a tiny diffusers pipeline, label on-policy pairs with a scorer as the reward, align it with
   Diffusion-DPO (LoRA, reference = adapters off), and compare before/after on held-out prompts with the same seeds (grid PNG + HTML).

The tiny parts run the same classes and code paths as the real recipes, only smaller.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

@dataclass
class DemoSizes:
    """Knobs of the demo; `quick` shrinks everything for tests."""

    scenes: int = 60
    train_overrides: tuple[str, ...] = ()
    train_prompts: int = 48
    heldout_prompts: int = 16
    pairs_per_prompt: int = 4
    align_steps: int | None = None  # None: the recipe's own max_steps
    eval_seeds: int = 4


def config_path(*parts: str) -> Path:
    """A recipe shipped in the repository's configs/ folder."""
    path = CONFIGS.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found: run the demo from a checkout of imgpref (pip install -e .)")
    return path


def bundled_photos(folder: Path) -> list[Path]:
    """Write the sample photos that ship with scikit-image and scikit-learn, plus one corrupt file."""
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(skdata, name)() for name in ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    sample = load_sample_images()
    for path, arr in zip(sample.filenames, sample.images):
        arrays[Path(path).stem] = arr
    written = []
    for name, arr in arrays.items():
        path = folder / f"{name}.jpg"
        Image.fromarray(np.asarray(arr)).convert("RGB").save(path, quality=92)
        written.append(path)
    # A truncated JPEG: the run reports it with its reason and goes on.
    bad = folder / "truncated.jpg"
    bad.write_bytes(written[0].read_bytes()[:2000])
    return written + [bad]


def run_demo(out: str | Path = "demo_out", *, quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run the three parts; returns (and writes to out/demo_summary.json) the key numbers."""
    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.pairs import label_pairs
    from imgpref.align.prompts import demo_prompts
    from imgpref.align.tiny import save_tiny_pipeline
    from imgpref.align.train import align
    from imgpref.data.synth import make_rendering_dataset
    from imgpref.eval.evaluate import evaluate
    from imgpref.eval.report import write_report
    from imgpref.scorers.score_paths import score_paths
    from imgpref.train.run import train

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars would bury the demo's own lines
    sizes = DemoSizes()
    if quick:
        sizes = DemoSizes(scenes=16, train_overrides=("trainer.max_epochs=3",), train_prompts=12,
                          heldout_prompts=4, pairs_per_prompt=3, align_steps=8, eval_seeds=2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    t0 = time.time()

    # 1. score a folder ---------------------------------------------------------------------------------------
    log("[1/3] scoring bundled photos with the weight-free scorers")
    photos = bundled_photos(out / "photos")
    measures = ["colorfulness", "contrast", "exposure", "sharpness", "noise"]
    table = score_paths(out / "photos", measures, out=out / "scores.csv", num_workers=0, progress=False)
    write_report(table, out / "scores.html", title="imgpref demo: bundled photos")
    failed = table[table["error"].fillna("") != ""]
    summary["score"] = {"images": len(photos), "rows": len(table), "failed_images": int(failed["path"].nunique()),
                        "report": str(out / "scores.html")}
    log(f"      {len(photos)} files, {summary['score']['failed_images']} unreadable (listed in the report)")

    # 2. train and evaluate a reward model --------------------------------------------------------------------
    log(f"[2/3] synthesising {sizes.scenes} rendering scenes and training the tiny recipe")
    synth = make_rendering_dataset(out / "rendering", scenes=sizes.scenes, seed=0)
    manifest = out / "rendering" / "manifest.csv"
    result = train(config_path("train", "tiny_rendering.yaml"), manifest, out / "reward_model",
                   overrides=list(sizes.train_overrides), progress=False)
    metrics = evaluate(result.scorer_dir, manifest, split="test", protocol="votes", out=out / "eval" / "metrics.json")
    oracle = synth["splits"]["test"]["oracle_accuracy"]
    test_images = sorted({p for p in (out / "rendering" / "images").rglob("*.png")})
    test_scenes = {Path(p).parent.name for p in _split_images(manifest, "test")}
    test_images = [p for p in test_images if p.parent.name in test_scenes]
    scored = score_paths(test_images, [str(result.scorer_dir)], out=out / "reward_model_scores.csv",
                         num_workers=0, progress=False)
    write_report(scored, out / "reward_model_scores.html", title="imgpref demo: trained rendering scorer")
    summary["train"] = {
        "scorer": str(result.scorer_dir), "seconds": round(result.seconds, 1),
        "test_accuracy": metrics["accuracy"], "accuracy_ci": metrics["accuracy_ci"],
        "oracle_accuracy": oracle, "ratio_to_oracle": metrics["accuracy"] / oracle if oracle else None,
        "ece": metrics["ece"], "human_ceiling": metrics["human_ceiling"],
    }
    log(f"      test accuracy {metrics['accuracy']:.3f} (oracle {oracle:.3f}), ECE {metrics['ece']:.3f}")

    # 3. align a diffusion model with a scorer as the reward --------------------------------------------------
    log("[3/3] labelling pairs for a tiny diffusion pipeline and aligning it with Diffusion-DPO")
    # Sampling settings of benchmarks/align_reward.py (DDIM 8 steps, no guidance): the tiny UNet is random, so
    # what matters is that pairs, training and evaluation sample the same way.
    sample = dict(num_inference_steps=8, guidance_scale=1.0, batch_size=16)
    pipe_dir = save_tiny_pipeline(out / "tiny_pipeline")
    train_prompts = demo_prompts(sizes.train_prompts)
    heldout = demo_prompts(sizes.heldout_prompts, offset=sizes.train_prompts)  # disjoint from training
    pairs = label_pairs(str(pipe_dir), train_prompts, "exposure", out / "pairs", n=sizes.pairs_per_prompt, **sample)
    steps = {} if sizes.align_steps is None else {"trainer.max_steps": sizes.align_steps}
    aligned = align(config_path("align", "tiny_dpo.yaml"), pairs.manifest, out / "aligned",
                    pipeline=str(pipe_dir), **steps)
    ev = evaluate_alignment(str(pipe_dir), aligned.export_dir, heldout, "exposure", out / "align_eval",
                            seeds=sizes.eval_seeds, **sample)
    summary["align"] = {"pairs": pairs.n_pairs, "ties_dropped": pairs.n_ties, "steps": aligned.steps,
                        "win_rate": ev.win_rate, "win_rate_ci": [ev.ci_low, ev.ci_high],
                        "mean_exposure_before": ev.mean_reward_base, "mean_exposure_after": ev.mean_reward_aligned,
                        "files": ev.files}
    log(f"      win rate of aligned over base on held-out prompts: {ev.win_rate:.2f} "
        f"[{ev.ci_low:.2f}, {ev.ci_high:.2f}]")

    summary["seconds"] = round(time.time() - t0, 1)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log(f"done in {summary['seconds']} s; open {out / 'scores.html'}, {out / 'reward_model_scores.html'} "
        f"and the files in {out / 'align_eval'}")
    return summary


def _split_images(manifest: Path, split: str) -> set[str]:
    import pandas as pd

    df = pd.read_csv(manifest)
    df = df[df["split"] == split]
    return set(df["image_0"]) | set(df["image_1"])
