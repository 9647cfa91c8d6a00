"""Alignment per taste (issue 14): align the world base to one taste group's reward; whose utility moves more?

The world's simulated annotators can hold two taste groups (imgpref.world.annotators): group 0 values an image at
0.7 fidelity + 0.3 aesthetics (the gold utility), group 1 at 0.3 fidelity + 0.7 aesthetics. For each group g,
`imgpref align pairs` labels best-vs-worst pairs of the base's samples with that group's utility (scorer
`world-gold` for g = 0, `world-gold-taste1` for g = 1), `imgpref align` trains DPO (configs/align/world_dpo.yaml),
and base vs aligned on held-out prompts (same seeds) is judged with BOTH groups' utilities: mean change and win
rate (95% bootstrap CI over prompts) per group. Aligning to a group should move that group's utility more than
the other's.

  python benchmarks/world_taste_align.py [--seeds 0,1,2] [--pair-prompts 400] [--k 8] [--steps 200]
      [--pack DIR] [--set KEY=VALUE ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from align_reward import parse_sets  # noqa: E402  one parser for --set [METHOD:]KEY=VALUE

TASTE_SCORERS = ("world-gold", "world-gold-taste1")


def group_utilities(judged: dict) -> np.ndarray:
    """[2, N]: each taste group's utility of the judged images."""
    from imgpref.world.annotators import AnnotatorConfig, group_utility

    w = AnnotatorConfig().group_weights
    return np.stack([group_utility(judged["fidelity"], judged["aesthetics"], w[g]) for g in range(2)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--pair-prompts", type=int, default=400)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--test-prompts", type=int, default=48)
    ap.add_argument("--eval-seeds", type=int, default=2)
    ap.add_argument("--pack", default=None, help="a world pack folder (default: the committed base)")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE recipe override")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/world_taste_align")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from imgpref.align.evaluate import bootstrap_win_rate, comparison_outcomes
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.scorers.registry import load_scorer
    from imgpref.world.align_world import BaseSamples, alignment_prompts, compare_to_base
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.gold_scorer import register_world_scorers
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import PACK_DIR, load_world

    register_world_scorers()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipe, _ = load_world(args.pack or PACK_DIR)
    test = world_prompts(0, 120, 24, args.test_prompts)["test"]
    base = BaseSamples(pipe, test, seeds=args.eval_seeds)
    u_base = group_utilities(base.gold)
    pair_prompts = alignment_prompts(1, args.pair_prompts, test)  # every combo; never an evaluation prompt
    recipe = REPO / "configs" / "align" / "world_dpo.yaml"
    sets = parse_sets(args.set)["*"]
    rows = []
    for g, scorer in enumerate(TASTE_SCORERS):
        pairs = label_pairs(pipe, pair_prompts, [load_scorer(scorer)], root / f"pairs_taste{g}", n=args.k,
                            batch_size=64, num_inference_steps=SAMPLE_SETTINGS["num_inference_steps"],
                            guidance_scale=SAMPLE_SETTINGS["guidance_scale"])
        for seed in [int(s) for s in args.seeds.split(",")]:
            res = align(recipe, pairs.manifest, root / f"taste{g}" / f"seed{seed}", pipe=copy.deepcopy(pipe),
                        **{**sets, "seed": seed, "trainer.max_steps": args.steps})
            r = compare_to_base(base, res.export_dir)
            u_al = group_utilities(r["gold"])
            row = {"aligned_to": g, "seed": seed, "steps": res.steps, "n_pairs": pairs.n_pairs}
            for h in range(2):
                out = comparison_outcomes(u_al[h], u_base[h]).reshape(len(test), args.eval_seeds)
                win, lo, hi = bootstrap_win_rate(out, n_boot=2000)
                row[f"delta_u{h}"] = float(u_al[h].mean() - u_base[h].mean())
                row[f"win_u{h}"], row[f"ci_u{h}"] = win, [lo, hi]
            rows.append(row)
            print(f"aligned to taste {g}, seed {seed}: group 0 utility {row['delta_u0']:+.4f} (win "
                  f"{row['win_u0']:.3f}), group 1 utility {row['delta_u1']:+.4f} (win {row['win_u1']:.3f})",
                  flush=True)
    (root / "rows.json").write_text(json.dumps(rows, indent=1))
    print(f"\nworld_taste_align: {args.pair_prompts} pair prompts x K={args.k} (best vs worst by the group's "
          f"utility), DPO {args.steps} steps, {len(test)} held-out prompts x {args.eval_seeds} seeds, overrides "
          f"{args.set}; base utilities group 0 {u_base[0].mean():.3f}, group 1 {u_base[1].mean():.3f}; "
          f"{time.perf_counter() - t0:.0f} s")
    print("| aligned to | seed | group-0 utility change | group-0 win [95% CI] | group-1 utility change | "
          "group-1 win [95% CI] | own group moved more |")
    print("|---:|---:|---:|---|---:|---|---|")
    for r in rows:
        own, other = r[f"delta_u{r['aligned_to']}"], r[f"delta_u{1 - r['aligned_to']}"]
        print(f"| {r['aligned_to']} | {r['seed']} | {r['delta_u0']:+.4f} | {r['win_u0']:.3f} [{r['ci_u0'][0]:.3f}, "
              f"{r['ci_u0'][1]:.3f}] | {r['delta_u1']:+.4f} | {r['win_u1']:.3f} [{r['ci_u1'][0]:.3f}, "
              f"{r['ci_u1'][1]:.3f}] | {'yes' if own > other else 'no'} |")


if __name__ == "__main__":
    sys.exit(main())
