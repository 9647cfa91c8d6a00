"""The offline demo: every product of the toolkit end to end on bundled data, nothing downloaded.

1. score bundled photos (scikit-image / scikit-learn sample images, plus a corrupt file) with the weight-free
   scorers, write scores + an HTML report;
2. synthesise a DEAR-style rendering-preference set, train the tiny recipe on it, evaluate on the test split,
   score the test renderings with the trained scorer, HTML report;
3. load the procedural world's pretrained text-to-image model (`imgpref.world`: a StableDiffusionPipeline with
   the world CLIP's text tower, committed weights), label on-policy pairs with the world CLIP as a zero-shot proxy
   reward, align it with Diffusion-DPO (`configs/align/world_dpo.yaml`: LoRA, reference = adapters off), and
   compare before/after on held-out prompts (half of them unseen colour x shape combinations) with the same seeds,
   judged by the world's gold judge: metrics.json, report.html and grid.png (base | aligned, gold and proxy
   scores under each image).

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
    align_steps: int | None = 200  # the recipe runs 800; 200 keeps the demo within minutes (None: the recipe)
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
    from imgpref.data.synth import make_rendering_dataset
    from imgpref.eval.evaluate import evaluate
    from imgpref.eval.report import write_report
    from imgpref.scorers.score_paths import score_paths
    from imgpref.train.run import train

    from diffusers.utils import logging as diffusers_logging

    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # "Loading pipeline components" bars would bury the demo's own lines
    transformers_logging.disable_progress_bar()  # and so would "Writing model shards" / "Loading weights"
    sizes = DemoSizes()
    if quick:
        sizes = DemoSizes(scenes=24, train_overrides=("trainer.max_epochs=25", "optimizer.warmup_steps=5"), train_prompts=12,
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

    # 3. align the world's pretrained text-to-image model, judged by the gold judge ------------------------------
    log("[3/3] aligning the world's pretrained text-to-image model with Diffusion-DPO (gold judge + proxy)")
    summary["align"] = world_alignment(out, sizes, log)

    summary["seconds"] = round(time.time() - t0, 1)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log(f"done in {summary['seconds']} s; open {out / 'scores.html'}, {out / 'reward_model_scores.html'} "
        f"and the files in {out / 'align_eval'}")
    return summary


def world_alignment(out: Path, sizes: DemoSizes, log: Callable[[str], None] = print) -> dict:
    """Step 3: pairs labelled by the proxy on the world base -> DPO -> gold + proxy evaluation on held-out prompts."""
    import copy

    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.align_world import BaseSamples, compare_to_base, scored_grid, world_clip_scorer
    from imgpref.world.base_model import SAMPLE_SETTINGS, save_world
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import load_world

    register_world_scorers()
    sample = {**SAMPLE_SETTINGS, "batch_size": 64}
    pipe, clip = load_world()  # the committed pretrained base (seconds; `imgpref world pretrain` rebuilds it)
    base_dir = save_world(pipe, clip, out / "world_base")
    proxy, gold = world_clip_scorer(base_dir / "clip"), load_scorer("world-gold")
    train_prompts = world_prompts(1, sizes.train_prompts, 0, 0)["train"]
    heldout = world_prompts(0, 0, 0, sizes.heldout_prompts)["test"]  # half unseen colour x shape combos
    pairs = label_pairs(pipe, train_prompts, [proxy], out / "pairs", n=sizes.pairs_per_prompt, **sample)
    steps = {} if sizes.align_steps is None else {"trainer.max_steps": sizes.align_steps}
    aligned = align(config_path("align", "world_dpo.yaml"), pairs.manifest, out / "aligned",
                    pipe=copy.deepcopy(pipe), pipeline=str(base_dir / "pipeline"), **steps)
    # Win rate on the gold utility (the proxy rides along at weight 0, so metrics.json has its win rate too).
    ev = evaluate_alignment(pipe, aligned.export_dir, heldout, [gold, proxy], out / "align_eval", weights=[1.0, 0.0],
                            seeds=sizes.eval_seeds, **sample)
    base = BaseSamples(pipe, heldout[:8], seeds=1)
    cmp = compare_to_base(base, aligned.export_dir, proxy)
    scored_grid(base.gens.images, cmp["images"], base.prompts,
                [("gold", base.gold["utility"], cmp["gold"]["utility"]),
                 ("proxy", base.proxy(proxy), cmp["proxy_values"])]).save(out / "align_eval" / "grid.png")
    fid = ev.per_scorer
    names = list(fid)
    result = {"pairs": pairs.n_pairs, "ties_dropped": pairs.n_ties, "steps": aligned.steps, "labeller": "world-clip",
              "win_rate": ev.win_rate, "win_rate_ci": [ev.ci_low, ev.ci_high],
              "proxy_win_rate": fid[names[1]]["win_rate"],
              "gold_utility_before": fid[names[0]]["base_mean"], "gold_utility_after": fid[names[0]]["aligned_mean"],
              "grid_gold_fidelity_before": float(base.gold["fidelity"].mean()),
              "grid_gold_fidelity_after": float(cmp["gold"]["fidelity"].mean()), "files": ev.files}
    log(f"      gold win rate of aligned over base on held-out prompts: {ev.win_rate:.2f} "
        f"[{ev.ci_low:.2f}, {ev.ci_high:.2f}] (proxy: {result['proxy_win_rate']:.2f}); gold utility "
        f"{result['gold_utility_before']:.3f} -> {result['gold_utility_after']:.3f}")
    return result


def _split_images(manifest: Path, split: str) -> set[str]:
    import pandas as pd

    df = pd.read_csv(manifest)
    df = df[df["split"] == split]
    return set(df["image_0"]) | set(df["image_1"])
