"""Does alignment raise the reward? End to end on the tiny offline pipeline, CPU, a few minutes.

For each method (DPO, MaPO): `label_pairs` (K images per training prompt, scored by a weight-free scorer,
best-vs-worst pairs, with the on-policy latents) -> `align` (the tiny recipe of configs/align/, the same
Lightning module and losses as the SD recipes) -> `evaluate_alignment` on held-out prompts against the base
pipeline with the same seeds (win rate, ties half, 95% bootstrap interval over prompts). Prints one table.

Settings (SETTINGS below = configs/align/tiny_{dpo,mapo}.yaml), for the tiny random-weight UNet: LoRA rank 8 on
every Linear/Conv of the UNet (attention alone barely moves it), lr 5e-4, 200 steps of 8 pairs; DPO beta 1000 (the
SD1.5 beta 5000 is for real models; per-sample MSEs here are ~1.1 with winner/loser differences ~1e-3) with the
adapters-off reference (no second UNet copy); MaPO beta 10, s 0.5, T 1000 (at the published beta 0.1 the SFT term
on the winners dominates these tiny margins and its drift LOWERED exposure, win 0.03 with LoRA, 0.06 full); reward
exposure, K=6 images per prompt, best-vs-worst pairs; training on the exact sampled latents (`data.latents: auto`;
the random tiny VAE does not reconstruct); sampler DDIM, 8 steps, no guidance.

Measured (benchmarks/RESULTS.md, "align_reward"): each method raises exposure (win >= 0.7, 95% interval above 0.5)
for 2 of 3 training seeds: DPO 0.98 / 0.47 / 0.70 and MaPO 0.98 / 0.73 / 0.53 for seeds 0 / 1 / 2. The outcome
depends on the seed (LoRA init, noise and timestep draws, batch order) about as much as on the method; with
lr 1e-3 and 100 steps only seed 0 passed (DPO 0.98 / 0.42 / 0.59, MaPO 0.97 / 0.25 / 0.55). On this random
UNet any fine-tuning also drifts the images generically, and that drift can outweigh what the pairs teach: DPO
lowers colorfulness (win 0.02 with LoRA, seed 0), while MaPO raises it (1.00 LoRA beta 0.1; 0.98 full fine-tune). A trained base model is needed for a method-level conclusion.

  python benchmarks/align_reward.py [--rewards exposure] [--seeds 0,1,2] [--k 6] [--steps 200]
      [--set [METHOD:]KEY=VALUE ...]   e.g. --set mapo:model.beta=0.1 --set model.lr=1e-3
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# LoRA rank 8 on every Linear/Conv of the tiny UNet (attention alone barely moves it); DPO's reference is the same
# UNet with the adapters disabled (no second copy). The tiny recipes (configs/align/tiny_*.yaml) hold the same values.
ALL_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_in", "conv_out", "time_emb_proj", "conv_shortcut", "linear_1", "linear_2"]
LORA = {"model.finetune": "lora", "model.lora_rank": 8, "model.lora_targets": ALL_TARGETS, "model.lr": 5e-4}
SETTINGS = {
    "dpo": {"model.method": "dpo", "model.beta": 1000.0, **LORA, "model.reference": "adapters_off"},
    "mapo": {"model.method": "mapo", "model.beta": 10.0, **LORA},
}


def parse_sets(items: list[str]) -> dict[str, dict]:
    """`--set [METHOD:]KEY=VALUE` (VALUE parsed as YAML) -> per-method override dicts ("*" = both)."""
    import yaml

    out: dict[str, dict] = {"*": {}}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects [METHOD:]KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        m, k = k.split(":", 1) if ":" in k else ("*", k)
        try:
            val = float(v) if "." in v or "e" in v.lower() else int(v)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            val = yaml.safe_load(v)
        out.setdefault(m, {})[k] = val
    return out


def run(method: str, *, pipe, work: Path, reward: str, pairs, test_prompts: list[str], steps: int, batch: int,
        sampler_steps: int, eval_seeds: int, overrides: dict | None = None) -> dict:
    """Train one method on already labelled pairs and evaluate it; returns the numbers of one table row."""
    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.train import align

    sample = dict(num_inference_steps=sampler_steps, guidance_scale=1.0, batch_size=16)
    t1 = time.perf_counter()
    ov = {**SETTINGS[method], "data.latents": "auto", "data.batch_size": batch, "trainer.max_steps": steps,
          "checkpoint_every_n_steps": 10_000, **(overrides or {})}
    res = align(REPO / "configs" / "align" / f"tiny_{method}.yaml", pairs.manifest, work / "run",
                pipe=copy.deepcopy(pipe), **ov)
    t2 = time.perf_counter()
    ev = evaluate_alignment(pipe, res.export_dir, test_prompts, [reward], work / "eval", seeds=eval_seeds, **sample)
    t3 = time.perf_counter()
    return {"method": method, "reward": reward, "pairs": pairs.n_pairs, "ties": pairs.n_ties, "steps": res.steps,
            "win": ev.win_rate, "lo": ev.ci_low, "hi": ev.ci_high, "base": ev.mean_reward_base,
            "aligned": ev.mean_reward_aligned, "t_train": t2 - t1, "t_eval": t3 - t2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rewards", default="exposure", help="weight-free scorers used as rewards")
    ap.add_argument("--methods", default="dpo,mapo")
    ap.add_argument("--train-prompts", type=int, default=48)
    ap.add_argument("--test-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=6, help="images per training prompt")
    ap.add_argument("--steps", type=int, default=200, help="training steps")
    ap.add_argument("--batch", type=int, default=8, help="pairs per training step")
    ap.add_argument("--sampler-steps", type=int, default=8)
    ap.add_argument("--eval-seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (config `seed`), comma separated")
    ap.add_argument("--set", action="append", default=[], help="[METHOD:]KEY=VALUE config override (YAML value)")
    ap.add_argument("--min-margin", type=float, default=0.0, help="drop pairs whose reward gap is smaller")
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
    from imgpref.align.pairs import label_pairs

    sets = parse_sets(args.set)
    rows = []
    for reward in args.rewards.split(","):
        t0 = time.perf_counter()
        pairs = label_pairs(pipe, train, [reward], root / reward / "pairs", n=args.k, min_margin=args.min_margin,
                            num_inference_steps=args.sampler_steps, guidance_scale=1.0, batch_size=16)
        t_pairs = time.perf_counter() - t0
        for m in args.methods.split(","):
            for seed in [int(x) for x in args.seeds.split(",")]:
                ov = {**sets["*"], **sets.get(m, {}), "seed": seed}
                row = run(m, pipe=pipe, work=root / reward / m / f"seed{seed}", reward=reward, pairs=pairs,
                          test_prompts=test, steps=args.steps, batch=args.batch, sampler_steps=args.sampler_steps,
                          eval_seeds=args.eval_seeds, overrides=ov)
                row["seed"], row["ft"] = seed, {**SETTINGS[m], **ov}["model.finetune"]
                rows.append({**row, "t_pairs": t_pairs})
                print(f"  {reward} {m} seed {seed} ({row['ft']}): win {row['win']:.3f} "
                      f"[{row['lo']:.3f}, {row['hi']:.3f}] train {row['t_train']:.0f}s", flush=True)
    print(f"align_reward: overrides {args.set}; tiny pipeline, {args.train_prompts} train prompts x K={args.k} (best-vs-worst pairs), "
          f"{args.test_prompts} held-out prompts x {args.eval_seeds} seeds, {args.steps} steps of {args.batch} pairs, "
          f"threads {args.threads}")
    print("| reward | method | finetune | seed | pairs | ties | steps | win rate | 95% CI | mean reward base -> aligned | "
          "s pairs / train / eval | win >= 0.7 and CI > 0.5 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|")
    for r in rows:
        ok = r["win"] >= 0.7 and r["lo"] > 0.5
        print(f"| {r['reward']} | {r['method']} | {r['ft']} | {r['seed']} | {r['pairs']} | {r['ties']} | {r['steps']} | {r['win']:.3f} | "
              f"[{r['lo']:.3f}, {r['hi']:.3f}] | {r['base']:.5g} -> {r['aligned']:.5g} | "
              f"{r['t_pairs']:.0f} / {r['t_train']:.0f} / {r['t_eval']:.0f} | {'yes' if ok else 'NO'} |")
    print(f"reports (grid.png, report.html, metrics.json): {root}/<reward>/<method>/eval")


if __name__ == "__main__":
    sys.exit(main())
