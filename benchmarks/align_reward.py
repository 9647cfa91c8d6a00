"""Does alignment raise the reward? End to end on the tiny offline pipeline, CPU, a few minutes.

For each method (DPO, MaPO): `label_pairs` (K images per training prompt, scored by a weight-free scorer,
best-vs-worst pairs, with the on-policy latents) -> `align` (the tiny recipe of configs/align/, the same
Lightning module and losses as the SD recipes) -> `evaluate_alignment` on held-out prompts against the base
pipeline with the same seeds (win rate, ties half, 95% bootstrap interval over prompts). Prints one table.

Settings for the tiny random-weight UNet (stated, not hidden): full fine-tune with a frozen reference copy,
lr 1e-4, DPO beta 1000 (the SD1.5 value 5000 is for real models; with per-sample MSEs ~1 and tiny
differences a smaller beta keeps the sigmoid out of saturation), MaPO beta 0.1 (the published value),
training on the exact sampled latents (`data.latents: auto`), sampler: DDIM, 8 steps, no guidance.

  python benchmarks/align_reward.py [--reward exposure] [--train-prompts 32] [--k 4] [--steps 60]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SETTINGS = {
    "dpo": {"model.method": "dpo", "model.beta": 1000.0, "model.finetune": "full", "model.reference": "copy",
            "model.lr": 1e-4},
    "mapo": {"model.method": "mapo", "model.beta": 0.1, "model.finetune": "full", "model.lr": 1e-4},
}


def run(method: str, *, pipe, work: Path, reward: str, train_prompts: list[str], test_prompts: list[str], k: int,
        steps: int, batch: int, sampler_steps: int, eval_seeds: int, overrides: dict | None = None) -> dict:
    """One end-to-end run; returns the numbers of one table row."""
    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.pairs import label_pairs
    from imgpref.align.train import align

    t0 = time.perf_counter()
    sample = dict(num_inference_steps=sampler_steps, guidance_scale=1.0, batch_size=16)
    rep = label_pairs(pipe, train_prompts, [reward], work / "pairs", n=k, **sample)
    t1 = time.perf_counter()
    ov = {**SETTINGS[method], "data.latents": "auto", "data.batch_size": batch, "trainer.max_steps": steps,
          "checkpoint_every_n_steps": 10_000, **(overrides or {})}
    res = align(REPO / "configs" / "align" / f"tiny_{method}.yaml", rep.manifest, work / "run",
                pipe=copy.deepcopy(pipe), **ov)
    t2 = time.perf_counter()
    ev = evaluate_alignment(pipe, res.export_dir, test_prompts, [reward], work / "eval", seeds=eval_seeds, **sample)
    t3 = time.perf_counter()
    return {"method": method, "pairs": rep.n_pairs, "ties": rep.n_ties, "steps": res.steps,
            "win": ev.win_rate, "lo": ev.ci_low, "hi": ev.ci_high, "base": ev.mean_reward_base,
            "aligned": ev.mean_reward_aligned, "t_pairs": t1 - t0, "t_train": t2 - t1, "t_eval": t3 - t2,
            "eval_dir": str(work / "eval")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reward", default="exposure", help="weight-free scorer used as the reward")
    ap.add_argument("--methods", default="dpo,mapo")
    ap.add_argument("--train-prompts", type=int, default=32)
    ap.add_argument("--test-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4, help="images per training prompt")
    ap.add_argument("--steps", type=int, default=60, help="training steps")
    ap.add_argument("--batch", type=int, default=8, help="pairs per training step")
    ap.add_argument("--sampler-steps", type=int, default=8)
    ap.add_argument("--eval-seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from imgpref.align.prompts import demo_prompts
    from imgpref.align.tiny import build_tiny_pipeline

    train = demo_prompts(args.train_prompts)
    test = demo_prompts(args.test_prompts, offset=args.train_prompts)  # held out: disjoint from training
    pipe = build_tiny_pipeline(seed=0)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="align_reward_"))
    rows = [run(m, pipe=pipe, work=root / m, reward=args.reward, train_prompts=train, test_prompts=test, k=args.k,
                steps=args.steps, batch=args.batch, sampler_steps=args.sampler_steps, eval_seeds=args.eval_seeds)
            for m in args.methods.split(",")]
    print(f"align_reward: tiny pipeline, reward {args.reward}, {args.train_prompts} train prompts x K={args.k}, "
          f"{args.test_prompts} held-out prompts x {args.eval_seeds} seeds, {args.steps} steps of {args.batch} pairs")
    print(f"{'method':<6} {'pairs':>5} {'ties':>4} {'steps':>5} {'win':>6} {'95% CI':>15} {'reward base->aligned':>24} "
          f"{'s pairs/train/eval':>20} {'pass':>5}")
    for r in rows:
        ok = r["win"] >= 0.7 and r["lo"] > 0.5
        print(f"{r['method']:<6} {r['pairs']:>5} {r['ties']:>4} {r['steps']:>5} {r['win']:>6.3f} "
              f"[{r['lo']:.3f}, {r['hi']:.3f}] {r['base']:>11.5f} -> {r['aligned']:<10.5f} "
              f"{r['t_pairs']:>6.0f}/{r['t_train']:.0f}/{r['t_eval']:.0f} {'yes' if ok else 'NO':>5}")
    print(f"reports (grid.png, report.html, metrics.json): {root}/<method>/eval")


if __name__ == "__main__":
    sys.exit(main())
