"""Does alignment raise what the world's annotators prefer? DPO and MaPO on the pretrained world base, judged by gold.

On the committed world base (`imgpref.world.store.load_world`): simulated votes on base samples -> a reward model
trained on them (`imgpref train`, configs/train/world_reward.yaml, from the world CLIP) -> `imgpref align pairs`
labelled by that reward model (the proxy; `--proxy gold` labels with the gold utility instead) -> for every
training seed and method, `imgpref align` with configs/align/world_{dpo,mapo}.yaml, resumed to each step count
of `--curve` -> base vs aligned on held-out prompts (half of them colour x shape combinations never seen in
pretraining), same seeds: gold win rate on the gold utility with its 95% bootstrap interval over prompts, proxy
win rate, mean gold fidelity before/after. Prints the table (markdown) and writes the over-optimisation plot
(gold and proxy win rate against training steps).

Target (issue 8): for both methods on 3 of 3 seeds, gold win >= 0.65, CI low > 0.55, fidelity +0.1 absolute.

  python benchmarks/world_align.py [--seeds 0,1,2] [--methods dpo,mapo] [--curve 100,200,300] [--proxy rm|gold]
      [--rm DIR] [--set [METHOD:]KEY=VALUE ...] [--out DIR] [--plot benchmarks/world_align_overopt.png]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from align_reward import parse_sets  # noqa: E402  one parser for --set [METHOD:]KEY=VALUE


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def proxy_scorer(args, pipe, dirs: dict, root: Path):
    """The reward model that labels the pairs (trained here on simulated votes, or --rm), or the gold judge."""
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.gold_scorer import register_world_scorers

    register_world_scorers()
    if args.proxy == "gold":
        return load_scorer("world-gold"), {"proxy": "world-gold"}
    if args.rm:
        return load_scorer(args.rm), {"proxy": args.rm}
    from imgpref.world.annotators import AnnotatorConfig
    from imgpref.world.loop import pipeline_generator
    from imgpref.world.loop import LoopConfig
    from imgpref.world.reward import (evaluate_vs_gold, generation_set, rm_clip_dir, train_reward_model,
                                      vote_manifest, world_prompts)

    prompts = world_prompts(0, args.rm_prompts, args.rm_prompts // 5, args.test_prompts)
    items, images = generation_set(root / "rm_data", prompts, LoopConfig().k_votes, 0, pipeline_generator(pipe))
    manifest, _ = vote_manifest(root / "rm_data", items, images, AnnotatorConfig(), 0)
    rm = train_reward_model(manifest, root / "rm", rm_clip_dir(args.rm_clip, dirs["clip"]))
    ev = evaluate_vs_gold(rm.scorer, manifest)
    print(f"reward model: accuracy {ev['accuracy']:.3f} vs gold oracle {ev['oracle_accuracy']:.3f} "
          f"(ratio {ev['ratio']:.3f})", flush=True)
    return load_scorer(str(rm.scorer_dir)), {"proxy": str(rm.scorer_dir), "rm_eval": ev}


def plot(rows: list[dict], path: Path) -> None:
    """Gold (solid) and proxy (dashed) win rate against steps, mean over seeds, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for i, method in enumerate(sorted({r["method"] for r in rows})):
        steps = sorted({r["steps"] for r in rows if r["method"] == method})
        for key, style, label in (("gold_win", "-o", "gold"), ("proxy_win", "--s", "proxy (RM)")):
            ys = [np.mean([r[key] for r in rows if r["method"] == method and r["steps"] == s]) for s in steps]
            ax.plot([0] + steps, [0.5] + ys, style, color=f"C{i}", label=f"{method} {label}")
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.axhline(0.65, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="alignment steps", ylabel="win rate of aligned over base", ylim=(0, 1))
    ax.set_title("world: gold vs proxy win rate on held-out prompts (mean over seeds)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (recipe `seed`)")
    ap.add_argument("--methods", default="dpo,mapo")
    ap.add_argument("--curve", default="100,200,300", help="step counts to evaluate at; the last is final")
    ap.add_argument("--proxy", choices=("rm", "gold"), default="rm")
    ap.add_argument("--rm", default=None, help="an already trained reward-model folder (skips voting + training)")
    ap.add_argument("--rm-prompts", type=int, default=120, help="train prompts of the reward model's data")
    ap.add_argument("--rm-clip", choices=("reward", "base"), default="base",
                    help="CLIP the reward model is fine-tuned from: the larger reward CLIP or the base's")
    ap.add_argument("--pair-prompts", type=int, default=400)
    ap.add_argument("--pair-combos", choices=("all", "train"), default="all",
                    help="colour x shape combos of the pair prompts (never the held-out evaluation prompts)")
    ap.add_argument("--pack", default=None, help="a world pack folder (default: the committed base)")
    ap.add_argument("--k", type=int, default=8, help="images per pair prompt (best vs worst by the proxy)")
    ap.add_argument("--pair-mode", choices=("best-worst", "all"), default="best-worst",
                    help="one pair per prompt, or every ranked pair of its K images (`align pairs --mode`)")
    ap.add_argument("--min-margin", type=float, default=0.0, help="drop pairs whose proxy gap is below this")
    ap.add_argument("--test-prompts", type=int, default=48)
    ap.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance of the pairs' and the evaluation's samples (default: SAMPLE_SETTINGS)")
    ap.add_argument("--eval-seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="[METHOD:]KEY=VALUE recipe override")
    ap.add_argument("--out", default="/tmp/world_align")
    ap.add_argument("--plot", default=str(REPO / "benchmarks" / "world_align_overopt.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.world.align_world import BaseSamples, alignment_prompts, compare_to_base
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import load_world, world_dirs

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = clock()
    pipe, _ = load_world(args.pack) if args.pack else load_world()
    dirs = world_dirs(args.pack) if args.pack else world_dirs()
    proxy, proxy_info = proxy_scorer(args, pipe, dirs, root)
    test = world_prompts(0, args.rm_prompts, args.rm_prompts // 5, args.test_prompts)["test"]
    pair_prompts = alignment_prompts(1, args.pair_prompts, test, combos=args.pair_combos)
    guidance = SAMPLE_SETTINGS["guidance_scale"] if args.guidance is None else args.guidance
    pairs = label_pairs(pipe, pair_prompts, [proxy], root / "pairs", n=args.k, batch_size=64, mode=args.pair_mode,
                        min_margin=args.min_margin,
                        num_inference_steps=SAMPLE_SETTINGS["num_inference_steps"], guidance_scale=guidance)
    base = BaseSamples(pipe, test, seeds=args.eval_seeds, sample={"guidance_scale": guidance})
    t_pairs = clock()
    print(f"{pairs.n_pairs} pairs; base gold fidelity on {len(test)} held-out prompts x {args.eval_seeds}: "
          f"{base.gold['fidelity'].mean():.3f} ({t_pairs[0] - t0[0]:.0f} s wall, {t_pairs[1] - t0[1]:.0f} s CPU "
          "for base, reward model, pairs and base samples)", flush=True)

    sets = parse_sets(args.set)
    curve = [int(s) for s in args.curve.split(",")]
    rows = []
    for method in args.methods.split(","):
        recipe = REPO / "configs" / "align" / f"world_{method}.yaml"
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = root / method / f"seed{seed}"
            t_run = clock()
            for steps in curve:
                ov = {**sets["*"], **sets.get(method, {}), "seed": seed, "trainer.max_steps": steps,
                      "checkpoint_every_n_steps": min(curve), "resume": True}  # each curve point continues
                res = align(recipe, pairs.manifest, run_dir, pipe=copy.deepcopy(pipe), **ov)
                r = compare_to_base(base, res.export_dir, proxy)
                now = clock()
                row = {"seed": seed, "method": method, "steps": res.steps,
                       **{k: v for k, v in r.items() if k not in ("images", "gold")},
                       "seconds": round(now[0] - t_run[0], 1), "cpu_seconds": round(now[1] - t_run[1], 1)}
                rows.append(row)
                print(f"  {method} seed {seed} step {res.steps}: gold win {r['gold_win']:.3f} "
                      f"[{r['gold_ci'][0]:.3f}, {r['gold_ci'][1]:.3f}] proxy win {r.get('proxy_win', float('nan')):.3f} "
                      f"fidelity {r['fidelity_base']:.3f} -> {r['fidelity_aligned']:.3f} ({row['seconds']} s)",
                      flush=True)
    t_end = clock()
    (root / "rows.json").write_text(json.dumps({"rows": rows, "proxy": proxy_info, "args": vars(args)}, indent=1,
                                               default=str))
    plot(rows, Path(args.plot))
    print(f"\nworld_align: proxy {args.proxy}, {pairs.n_pairs} pairs ({args.pair_prompts} prompts x K={args.k}, "
          f"{args.pair_mode}, min margin {args.min_margin}), {len(test)} held-out prompts x {args.eval_seeds} seeds, guidance {guidance}, overrides {args.set}, "
          f"threads {args.threads}; total {t_end[0] - t0[0]:.0f} s wall, {t_end[1] - t0[1]:.0f} s CPU")
    print("| seed | method | steps | proxy win | gold win | 95% CI | gold fidelity base -> aligned | "
          "s (wall / CPU) | target met |")
    print("|---:|---|---:|---:|---:|---|---|---|---|")
    final = {(r["method"], r["seed"]): r for r in rows if r["steps"] == max(x["steps"] for x in rows
                                                                           if x["method"] == r["method"])}
    for r in rows:
        ok = r["gold_win"] >= 0.65 and r["gold_ci"][0] > 0.55 and r["fidelity_aligned"] - r["fidelity_base"] >= 0.1
        mark = ("yes" if ok else "NO") if final.get((r["method"], r["seed"])) is r else ""
        print(f"| {r['seed']} | {r['method']} | {r['steps']} | {r.get('proxy_win', float('nan')):.3f} | "
              f"{r['gold_win']:.3f} | [{r['gold_ci'][0]:.3f}, {r['gold_ci'][1]:.3f}] | "
              f"{r['fidelity_base']:.3f} -> {r['fidelity_aligned']:.3f} | {r['seconds']} / {r['cpu_seconds']} | {mark} |")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
