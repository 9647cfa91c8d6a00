"""Alignment of the world's flow-matching (SD3-style) base, judged by gold: DPO, MaPO and RankDPO (issue 10).

On the flow base (`imgpref.world.flow_base`: `--base DIR`, else pretrained once and cached by
`ensure_flow_world`): `imgpref align pairs --lists` generates K images per train prompt and labels them with the
proxy (a reward model trained on simulated votes, as benchmarks/world_align.py does, or `--proxy gold`: the gold
utility itself) -> one sample set serves every method, so all see the same images:
- rankdpo: the K-image lists with their gains (configs/align/world_flow_rankdpo.yaml);
- dpo / mapo: best vs worst (by the proxy) of the same K images (configs/align/world_flow_{dpo,mapo}.yaml);
then, for every training seed, the same number of steps for each method -> base vs aligned on held-out prompts
(half of them colour x shape combinations never seen in pretraining), same seeds and sampler: gold win rate with
its 95% bootstrap interval over prompts, the mean change of gold fidelity with its interval, and the head-to-head
gold win rate of RankDPO's images over DPO's. Prints markdown tables.

Training runs on an exact, cheaper form of the same transformer: T5 is absent, so SD3 feeds 256 identical zero
rows; `flow_base.with_collapsed_t5` trains on one row standing for all 256 (tested equal to diffusers' own
attention within 1e-5), with `model.max_sequence_length: 1`. Sampling and evaluation run the same way
(`flow_base.fast_sampling_pipeline`: one zero T5 row, the same images within 1e-4 as diffusers' call on 256 rows).
Pair prompts are drawn as in world_align.py (`alignment_prompts`, never an evaluation prompt, `--pair-combos`).

Targets (issue 10): DPO and MaPO each gold win >= 0.65, CI low > 0.55, on 3 of 3 seeds; RankDPO vs DPO reported.

  python benchmarks/world_flow_align.py [--base DIR] [--seeds 0,1,2] [--methods dpo,mapo,rankdpo] [--steps 400]
      [--proxy rm|gold] [--k 4] [--pair-prompts 384] [--pair-combos all|train] [--pair-guidance G]
      [--test-prompts 48] [--eval-seeds 2] [--set [METHOD:]KEY=VALUE]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from align_reward import parse_sets  # noqa: E402  one parser for --set [METHOD:]KEY=VALUE
from world_align import clock, proxy_scorer  # noqa: E402  the same proxy (RM on votes, or gold) as the UNet run

RECIPES = {m: REPO / "configs" / "align" / f"world_flow_{m}.yaml" for m in ("dpo", "mapo", "rankdpo")}


def best_worst_manifest(lists_dir: Path) -> Path:
    """`pairs_best_worst.csv` beside the lists' manifest: per prompt, best vs worst of the same K images by the
    proxy reward in generations.csv (`choose_pairs`, ties dropped), so the cached latents apply as they are."""
    import pandas as pd

    from imgpref.align.pairs import MANIFEST_COLUMNS, choose_pairs
    from imgpref.atomic import atomic_write

    gen = pd.read_csv(lists_dir / "generations.csv")
    rows = []
    for i, g in gen.groupby("prompt_index", sort=True):
        for c in choose_pairs(g["reward"].to_numpy())[0]:
            if c.tie:
                continue
            w, l = g.iloc[c.winner], g.iloc[c.loser]
            rows.append({"image_0": w["path"], "image_1": l["path"], "votes_0": 1, "votes_1": 0, "votes_tie": 0,
                         "prompt": w["prompt"], "group": f"prompt{int(i):05d}", "annotator": "", "split": w["split"]})
    out = lists_dir / "pairs_best_worst.csv"
    with atomic_write(out) as tmp:
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).to_csv(tmp, index=False)
    return out


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): 95% percentile bootstrap over prompts of values [n_prompts, n_seeds]."""
    from imgpref.align.evaluate import bootstrap_win_rate

    return bootstrap_win_rate(values)  # its statistic is the plain mean of per-prompt means


def fmt(m: float, lo: float, hi: float, sign: bool = False) -> str:
    f = "+.3f" if sign else ".3f"
    return f"{m:{f}} [{lo:{f}}, {hi:{f}}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=None, help="flow base folder (pipeline/); default: ensure_flow_world()")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (recipe `seed`)")
    ap.add_argument("--methods", default="dpo,mapo,rankdpo")
    ap.add_argument("--steps", type=int, default=400, help="training steps, the same for every method")
    ap.add_argument("--proxy", choices=("rm", "gold"), default="gold")
    ap.add_argument("--rm", default=None, help="an already trained reward-model folder (skips voting + training)")
    ap.add_argument("--rm-prompts", type=int, default=120, help="train prompts of the reward model's data")
    ap.add_argument("--pair-prompts", type=int, default=384)
    ap.add_argument("--pair-combos", choices=("all", "train"), default="all",
                    help="colour x shape combos of the pair prompts (never an evaluation prompt), as world_align.py")
    ap.add_argument("--k", type=int, default=4, help="images per train prompt (the list size)")
    ap.add_argument("--pair-guidance", type=float, default=None,
                    help="guidance of the pair/list samples (default: FLOW_SAMPLE_SETTINGS, as the evaluation)")
    ap.add_argument("--test-prompts", type=int, default=48)
    ap.add_argument("--eval-seeds", type=int, default=2)
    ap.add_argument("--samples", default=None, help="the lists folder of an earlier run with the same base, proxy, "
                    "--pair-prompts and --k (skips generating and labelling)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="[METHOD:]KEY=VALUE recipe override")
    ap.add_argument("--out", default="/tmp/world_flow_align")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging

    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()  # "no LoRA keys for the text encoders": expected (LoRA on the transformer)
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    from imgpref.align.evaluate import bootstrap_win_rate, comparison_outcomes
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align
    from imgpref.world.align_world import BaseSamples, alignment_prompts, compare_to_base
    from imgpref.world.flow_base import (FLOW_SAMPLE_SETTINGS, ensure_flow_world, fast_sampling_pipeline,
                                         load_flow_pipeline, with_collapsed_t5)
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import world_dirs

    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = clock()
    pipe = load_flow_pipeline(args.base or ensure_flow_world(log=print))
    sampler = fast_sampling_pipeline(pipe)  # the same images (within 1e-4) at a fraction of the cost
    proxy, proxy_info = proxy_scorer(args, sampler, world_dirs() if args.proxy == "rm" and not args.rm else {}, root)
    test = world_prompts(0, args.rm_prompts, args.rm_prompts // 5, args.test_prompts)["test"]
    lists_dir = Path(args.samples) if args.samples else root / "lists"
    if not args.samples:
        prompts = alignment_prompts(1, args.pair_prompts, test, combos=args.pair_combos)
        label_pairs(sampler, prompts, [proxy], lists_dir, n=args.k, lists=True, batch_size=64,
                    num_inference_steps=FLOW_SAMPLE_SETTINGS["num_inference_steps"],
                    guidance_scale=FLOW_SAMPLE_SETTINGS["guidance_scale"] if args.pair_guidance is None
                    else args.pair_guidance)
    n_pairs = json.loads((lists_dir / "pairs.json").read_text())["n_pairs"]
    data = {"rankdpo": lists_dir / "manifest.csv", "dpo": best_worst_manifest(lists_dir)}
    data["mapo"] = data["dpo"]
    base = BaseSamples(sampler, test, seeds=args.eval_seeds, sample=dict(FLOW_SAMPLE_SETTINGS))
    train_pipe = with_collapsed_t5(pipe)
    t_data = clock()
    print(f"{args.pair_prompts} prompts x K={args.k} samples ({n_pairs} list pairs); base gold fidelity on "
          f"{len(test)} held-out prompts x {args.eval_seeds}: {base.gold['fidelity'].mean():.3f} "
          f"({t_data[0] - t0[0]:.0f} s wall, {t_data[1] - t0[1]:.0f} s CPU for base, proxy, samples)", flush=True)

    sets = parse_sets(args.set)
    shape = (len(test), args.eval_seeds)
    rows, utility = [], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            t_run = clock()
            ov = {**sets["*"], **sets.get(method, {}), "seed": seed, "trainer.max_steps": args.steps,
                  "model.max_sequence_length": 1}  # one zero T5 row stands for 256 (with_collapsed_t5)
            res = align(RECIPES[method], data[method], root / method / f"seed{seed}", pipe=copy.deepcopy(train_pipe),
                        **ov)
            r = compare_to_base(base, res.export_dir, proxy)
            utility[method, seed] = r["gold"]["utility"]
            dfid = mean_ci((r["gold"]["fidelity"] - base.gold["fidelity"]).reshape(shape))
            now = clock()
            row = {"seed": seed, "method": method, "steps": res.steps, "gold_win": r["gold_win"],
                   "gold_ci": r["gold_ci"], "proxy_win": r.get("proxy_win"), "fidelity_base": r["fidelity_base"],
                   "fidelity_aligned": r["fidelity_aligned"], "fidelity_change": list(dfid),
                   "utility_base": r["utility_base"], "utility_aligned": r["utility_aligned"],
                   "seconds": round(now[0] - t_run[0], 1), "cpu_seconds": round(now[1] - t_run[1], 1)}
            rows.append(row)
            print(f"  {method} seed {seed} step {res.steps}: gold win {fmt(r['gold_win'], *r['gold_ci'])} "
                  f"fidelity change {fmt(*dfid, sign=True)} ({row['seconds']} s)", flush=True)
    t_end = clock()
    head = []
    for seed in sorted({s for _, s in utility}):
        if ("rankdpo", seed) in utility and ("dpo", seed) in utility:
            o = comparison_outcomes(utility["rankdpo", seed], utility["dpo", seed]).reshape(shape)
            head.append({"seed": seed, "rank_over_dpo": list(bootstrap_win_rate(o))})
    (root / "rows.json").write_text(json.dumps({"rows": rows, "head_to_head": head, "proxy": proxy_info,
                                                "args": vars(args)}, indent=1, default=str))
    print(f"\nworld_flow_align: proxy {args.proxy}, {args.pair_prompts} prompts x K={args.k} (rankdpo: lists; "
          f"dpo/mapo: best vs worst of the same samples), {args.steps} steps, {len(test)} held-out prompts x "
          f"{args.eval_seeds} seeds, overrides {args.set}, threads {args.threads}; total {t_end[0] - t0[0]:.0f} s "
          f"wall, {t_end[1] - t0[1]:.0f} s CPU")
    print("| seed | method | steps | gold win [95% CI] | gold fidelity base -> aligned | fidelity change [95% CI] | "
          "gold utility base -> aligned | s (wall / CPU) | win >= 0.65, CI low > 0.55 |")
    print("|---:|---|---:|---|---|---|---|---|---|")
    for r in rows:
        ok = "yes" if r["gold_win"] >= 0.65 and r["gold_ci"][0] > 0.55 else "no"
        print(f"| {r['seed']} | {r['method']} | {r['steps']} | {fmt(r['gold_win'], *r['gold_ci'])} | "
              f"{r['fidelity_base']:.3f} -> {r['fidelity_aligned']:.3f} | {fmt(*r['fidelity_change'], sign=True)} | "
              f"{r['utility_base']:.3f} -> {r['utility_aligned']:.3f} | {r['seconds']} / {r['cpu_seconds']} | {ok} |")
    for method in sorted({r["method"] for r in rows}):
        seeds = sorted(s for m, s in utility if m == method)
        if len(seeds) > 1:  # pooled over seeds: per prompt, the mean over training seeds and eval seeds
            o = np.concatenate([comparison_outcomes(utility[method, s], base.gold["utility"]).reshape(shape)
                                for s in seeds], axis=1)
            print(f"{method}, {len(seeds)} seeds pooled: gold win {fmt(*bootstrap_win_rate(o))}")
    for h in head:
        print(f"RankDPO over DPO (same prompts and seeds), seed {h['seed']}: gold win {fmt(*h['rank_over_dpo'])}")


if __name__ == "__main__":
    sys.exit(main())
