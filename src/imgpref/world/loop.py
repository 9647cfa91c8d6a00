"""The whole world loop (issue 8): base samples -> simulated votes -> reward model -> scorer-labelled pairs ->
Diffusion-DPO / MaPO -> evaluation against the gold judge and the proxy, with the over-optimisation curve.

`run_loop(out, base=BASE_DIR, seed=S, quick=False)` writes under `out/`:

    rm_data/        K base samples per prompt (PNG), manifest.csv (simulated votes), gold.csv (eval only)
    rm/             the reward model (`imgpref train`, configs/train/world_reward.yaml, from the world CLIP)
    rm_eval.json    its votes-protocol accuracy on held-out prompts vs the gold oracle's (`imgpref eval`)
    pairs/          `imgpref align pairs` on the base, labelled by the trained reward model
    align_<m>/      `imgpref align` runs (m = dpo, mapo), resumed step by step for the curve; each step is
                    compared with the base on held-out prompts (`imgpref.world.align_world.compare_to_base`:
                    same seeds, gold and proxy win rates, gold fidelity before/after)
    eval_<m>/       `imgpref align eval` of the final model on held-out prompts (grid.png, report.html)
    curve.csv, overoptimisation.png   gold and proxy win rate of aligned over base vs training steps
    loop_summary.json               everything above in one place, with seconds per stage

The loop only ever shows the reward model votes; gold scores are used for evaluation. The base is
BASE_DIR/pipeline + BASE_DIR/clip (what `imgpref world pretrain/base --out BASE_DIR` write); by default the
committed base (`imgpref.world.store`), see `ensure_base`.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from imgpref.atomic import atomic_write
from imgpref.world.annotators import AnnotatorConfig

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "align"
METHODS = ("dpo", "mapo")


@dataclass(frozen=True)
class LoopConfig:
    """Sizes and settings of one loop run (defaults: the full loop; `quick()` for tests and smoke runs)."""

    seed: int = 0
    k_votes: int = 6                  # base samples per prompt for the reward model's data (all 15 pairs voted;
                                      # 6 rather than 4: 2.5x the pairs for 1.5x the samples, RM ratio 0.77 -> 0.79)
    n_train_prompts: int = 120
    n_val_prompts: int = 24
    n_test_prompts: int = 48          # held-out prompts; half of them held-out colour x shape combinations
    annotators: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    rm_overrides: tuple[str, ...] = ()
    rm_clip: str = "base"             # CLIP the reward model is fine-tuned from (reward.rm_clip_dir): "reward" = the
                                      # larger reward CLIP (pretrained once, cached), "base" = BASE_DIR/clip;
                                      # measured within noise of each other (0.74-0.79 of the gold oracle)
    n_pair_prompts: int = 400         # prompts for `align pairs` (any combo, never an evaluation prompt)
    k_pairs: int = 8                  # images per prompt for `align pairs` (best vs worst by the reward model)
    methods: tuple[str, ...] = METHODS
    curve_steps: tuple[int, ...] = (200, 400, 800)  # align is resumed to each of these; the last is final
    align_overrides: dict[str, Any] = field(default_factory=dict)
    n_eval_prompts: int = 48          # held-out prompts for `align eval` (the RM test prompts)
    eval_seeds: int = 4

    @staticmethod
    def quick(seed: int = 0) -> "LoopConfig":
        """A shortened loop (minutes on 2 cores; numbers are noisier)."""
        return LoopConfig(seed=seed, k_votes=4, n_train_prompts=40, n_val_prompts=10, n_test_prompts=20,
                          rm_overrides=("trainer.max_epochs=8",), n_pair_prompts=40, k_pairs=4,
                          curve_steps=(20, 40), n_eval_prompts=20, eval_seeds=2)


def _lap(timings: dict[str, float], name: str, t0: float) -> float:
    now = time.time()
    timings[name] = round(now - t0, 1)
    log.info("world loop: %s done in %.1f s", name, timings[name])
    return now


def ensure_base(base: str | Path | None = None, seed: int = 0, progress: bool = False) -> Path:
    """A folder with pipeline/ and clip/ for the loop.

    None: the committed base (`imgpref.world.store.world_dirs`, materialised once in the cache). A folder that
    already holds both is used as is; a missing one gets the committed base when the package ships it, else
    a base pretrained once (`pretrain_world`) and reused afterwards.
    """
    from imgpref.world import store

    has_pack = (store.PACK_DIR / store.PACK_WEIGHTS).is_file()
    if base is None:
        if not has_pack:
            raise FileNotFoundError(f"no committed world base in {store.PACK_DIR}; pass --base DIR (pretrained "
                                    "there once) or run `imgpref world pretrain --out DIR`")
        return store.world_dirs()["pipeline"].parent
    base = Path(base)
    if (base / "pipeline" / "model_index.json").is_file() and (base / "clip" / "config.json").is_file():
        return base
    if has_pack:
        from imgpref.world.base_model import save_world

        save_world(*store.load_world(), base)
        return base
    from imgpref.world.base_model import pretrain_world

    log.info("world loop: no base model in %s; pretraining it once (cached there afterwards)", base)
    pretrain_world(out=base, seed=seed, progress=progress)
    return base


def pipeline_generator(pipe: Any, **sample: Any) -> Callable[[Sequence[str], int, int], np.ndarray]:
    """A `reward.Generator` sampling `pipe` with the world's sample settings: uint8 [len * k, H, W, 3]."""
    from imgpref.align.generate import generate_images
    from imgpref.world.base_model import SAMPLE_SETTINGS

    settings = {**SAMPLE_SETTINGS, "batch_size": 64, **sample}

    def generate(prompts: Sequence[str], k: int, seed: int) -> np.ndarray:
        gens = generate_images(pipe, list(prompts), k, base_seed=seed, **settings)
        x = gens.images.clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    return generate


def align_recipe(method: str) -> Path:
    """configs/align/world_<method>.yaml when it exists, else the tiny recipe of that method."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r}; choose from {METHODS}")
    world = CONFIGS / f"world_{method}.yaml"
    return world if world.is_file() else CONFIGS / f"tiny_{method}.yaml"


def overoptimisation_plot(curve: list[dict[str, Any]], path: Path) -> Path:
    """Gold and proxy win rate of aligned over base against training steps, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for i, method in enumerate(sorted({r["method"] for r in curve})):
        rows = sorted((r for r in curve if r["method"] == method), key=lambda r: r["steps"])
        steps = [0] + [r["steps"] for r in rows]
        colour = f"C{i}"
        ax.plot(steps, [0.5] + [r["gold_win"] for r in rows], "-o", color=colour, label=f"{method} gold")
        ax.plot(steps, [0.5] + [r["proxy_win"] for r in rows], "--s", color=colour, label=f"{method} proxy (RM)")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_xlabel("alignment steps")
    ax.set_ylabel("win rate of aligned over base")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("world: gold vs proxy win rate (held-out prompts)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def run_loop(out: str | Path, *, base: str | Path | None = None, config: LoopConfig | None = None, progress: bool = False,
             echo: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the whole loop into `out` (module docstring); returns the summary (also loop_summary.json)."""
    import torch

    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.generate import load_pipeline
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.align_world import BaseSamples, alignment_prompts, compare_to_base
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.reward import (evaluate_vs_gold, generation_set, rm_clip_dir, train_reward_model,
                                       vote_manifest, world_prompts)

    cfg = config or LoopConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    register_world_scorers()
    timings: dict[str, float] = {}
    t_all = t = time.time()
    base = ensure_base(base, seed=0, progress=progress)
    pipe_dir = base / "pipeline"
    t = _lap(timings, "base", t)

    prompts = world_prompts(cfg.seed, cfg.n_train_prompts, cfg.n_val_prompts, cfg.n_test_prompts)
    pipe = load_pipeline(str(pipe_dir))
    items, images = generation_set(out / "rm_data", prompts, cfg.k_votes, cfg.seed, pipeline_generator(pipe))
    manifest, gold = vote_manifest(out / "rm_data", items, images, cfg.annotators, cfg.seed)
    base_gold = {s: float(gold.loc[gold.split == s, "fidelity"].mean()) for s in ("train", "test")}
    echo(f"rm data: {len(items)} base samples, mean gold fidelity train {base_gold['train']:.3f} "
         f"test {base_gold['test']:.3f}")
    t = _lap(timings, "rm_data", t)

    rm_clip = rm_clip_dir(cfg.rm_clip, base / "clip", progress=progress)   # first use pretrains it (cached)
    t = _lap(timings, "rm_clip", t)
    rm = train_reward_model(manifest, out / "rm", rm_clip, overrides=cfg.rm_overrides, progress=progress)
    t = _lap(timings, "rm_train", t)
    rm_eval = evaluate_vs_gold(rm.scorer, manifest, out=out / "rm_eval.json")
    echo(f"reward model: test accuracy {rm_eval['accuracy']:.3f} vs gold oracle {rm_eval['oracle_accuracy']:.3f} "
         f"(ratio {rm_eval['ratio']:.3f})")
    t = _lap(timings, "rm_eval", t)

    pair_prompts = alignment_prompts(cfg.seed + 1, cfg.n_pair_prompts, prompts["test"])
    rm_dir = str(rm.scorer_dir)
    pairs = label_pairs(str(pipe_dir), pair_prompts, [rm_dir], out / "pairs", n=cfg.k_pairs,
                        base_seed=cfg.seed * 1_000_003, batch_size=64, progress=progress,
                        num_inference_steps=SAMPLE_SETTINGS["num_inference_steps"],
                        guidance_scale=SAMPLE_SETTINGS["guidance_scale"])
    t = _lap(timings, "pairs", t)

    eval_prompts = prompts["test"][: cfg.n_eval_prompts]
    rm_scorer = load_scorer(rm_dir)
    # base images of the held-out prompts once; every checkpoint is compared with them (same seeds, sampler)
    base_samples = BaseSamples(pipe, eval_prompts, seeds=cfg.eval_seeds)
    echo(f"base on {len(eval_prompts)} held-out prompts x {cfg.eval_seeds} seeds: gold fidelity "
         f"{base_samples.gold['fidelity'].mean():.3f}")
    curve: list[dict[str, Any]] = []
    finals: dict[str, Any] = {}
    for method in cfg.methods:
        run_dir = out / f"align_{method}"
        for steps in cfg.curve_steps:
            t_step = time.time()
            res = align(align_recipe(method), out / "pairs" / "manifest.csv", run_dir,
                        **{"pipeline": str(pipe_dir), "seed": cfg.seed, "trainer.max_steps": int(steps),
                           "resume": True,  # each curve point continues the previous one
                           **cfg.align_overrides})
            cmp = compare_to_base(base_samples, res.export_dir, rm_scorer)
            row = {"method": method, "steps": int(res.steps), "gold_win": cmp["gold_win"], "gold_ci": cmp["gold_ci"],
                   "proxy_win": cmp["proxy_win"], "fidelity_base": cmp["fidelity_base"],
                   "fidelity_aligned": cmp["fidelity_aligned"], "utility_base": cmp["utility_base"],
                   "utility_aligned": cmp["utility_aligned"], "seconds": round(time.time() - t_step, 1)}
            curve.append(row)
            lo, hi = row["gold_ci"]
            echo(f"{method} step {row['steps']}: gold win {row['gold_win']:.3f} [{lo:.3f}, {hi:.3f}], proxy win "
                 f"{row['proxy_win']:.3f}, fidelity {row['fidelity_base']:.3f} -> {row['fidelity_aligned']:.3f}")
        finals[method] = dict(curve[-1])
        # `imgpref align eval` of the final model: grid, HTML report, win rate by gold (proxy per scorer)
        ev = evaluate_alignment(str(pipe_dir), run_dir / "aligned", eval_prompts,
                                [load_scorer("world-gold"), rm_scorer], out / f"eval_{method}",
                                weights=[1.0, 0.0], seeds=cfg.eval_seeds, batch_size=64, progress=progress,
                                num_inference_steps=SAMPLE_SETTINGS["num_inference_steps"],
                                guidance_scale=SAMPLE_SETTINGS["guidance_scale"])
        finals[method]["align_eval"] = {"gold_win": ev.win_rate, "gold_ci": [ev.ci_low, ev.ci_high],
                                        "per_scorer": ev.per_scorer, "files": ev.files}
        t = _lap(timings, f"align_{method}", t)
    if curve:
        import pandas as pd

        with atomic_write(out / "curve.csv") as tmp:
            pd.DataFrame([{**r, "gold_ci": f"{r['gold_ci'][0]:.4f}..{r['gold_ci'][1]:.4f}"} for r in curve]).to_csv(
                tmp, index=False)
        overoptimisation_plot(curve, out / "overoptimisation.png")
    timings["total"] = round(time.time() - t_all, 1)
    summary = {
        "config": {**asdict(cfg), "annotators": asdict(cfg.annotators)}, "base": str(base),
        "torch_threads": torch.get_num_threads(), "base_fidelity": base_gold,
        "rm_eval": rm_eval, "pairs": asdict(pairs) if hasattr(pairs, "__dataclass_fields__") else str(pairs),
        "final": finals, "curve": curve, "seconds": timings,
    }
    with atomic_write(out / "loop_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


__all__ = ["LoopConfig", "run_loop", "ensure_base", "pipeline_generator", "align_recipe", "overoptimisation_plot"]
