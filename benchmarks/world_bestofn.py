"""How much gold can preference alignment reach in the world? Best-of-n selection on held-out prompts, as a ceiling.

A KL-regularised preference optimiser (DPO, MaPO) can only reweight what the base already samples; with a strong
preference signal its target distribution behaves like selecting the best of several base samples. So the gold
gain of best-of-n selection, per prompt, is a yardstick for what alignment of this base can reach, and for how
much of it a run got. For the held-out prompts of `benchmarks/world_align.py` (same split, same sampler), this
draws N samples per prompt from the base, judges them, and for n = 1, 2, 4, ... N reports the mean gold fidelity
and utility of the image a selector picks from each disjoint group of n (n = 1 is the base itself: the baseline of
the same run), with 95% bootstrap intervals over prompts of the gain, and the unpaired win rate of the pick over
an independent base sample. Selectors: the gold utility (what gold-labelled pairs prefer), the gold fidelity, and
optionally a trained reward model (`--rm DIR`, what the loop's proxy-labelled pairs prefer).

  python benchmarks/world_bestofn.py [--n 32] [--test-prompts 48] [--rm DIR] [--pack DIR] [--guidance G]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def pick(selector: np.ndarray, n: int) -> np.ndarray:
    """Index (into axis 1 of [P, N]) of the selector's best image in each disjoint group of n: [P, N // n]."""
    p, big = selector.shape
    groups = selector[:, : (big // n) * n].reshape(p, big // n, n)
    return groups.argmax(axis=2) + np.arange(big // n)[None, :] * n


def gain_ci(values: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval over prompts of mean(values) - mean(base); both [P, *]."""
    from imgpref.align.evaluate import bootstrap_win_rate  # the per-prompt-mean bootstrap of `align eval`

    _, lo, hi = bootstrap_win_rate((values.mean(axis=1) - base.mean(axis=1))[:, None])
    return lo, hi


def unpaired_win(picked: np.ndarray, pool: np.ndarray) -> float:
    """P(picked utility > a base sample of the same prompt outside the pick's group), ties half.

    picked [P, G], one per disjoint group of n = N // G consecutive pool images; pool [P, N]. NaN when G = 1."""
    from imgpref.align.evaluate import comparison_outcomes

    p, g = picked.shape
    n = pool.shape[1] // g
    outcome = comparison_outcomes(*np.broadcast_arrays(picked[:, :, None], pool[:, None, :]))
    outside = np.arange(pool.shape[1])[None, :] // n != np.arange(g)[:, None]  # [G, N]
    if not outside.any():  # one group holds the whole pool: no independent sample is left to compare with
        return float("nan")
    return float(outcome[:, outside].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="samples per held-out prompt (a power of two)")
    ap.add_argument("--test-prompts", type=int, default=48)
    ap.add_argument("--rm-prompts", type=int, default=120, help="as world_align.py: fixes the held-out split")
    ap.add_argument("--rm", default=None, help="a trained reward-model folder: also select by it")
    ap.add_argument("--pack", default=None, help="a world pack folder (default: the committed base)")
    ap.add_argument("--flow", default=None,
                    help="the flow-matching base instead: a folder with pipeline/, or 'cached' (ensure_flow_world)")
    ap.add_argument("--guidance", type=float, default=None, help="default: SAMPLE_SETTINGS")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the rows here as JSON")
    args = ap.parse_args()
    if args.n < 2 or args.n & (args.n - 1):
        raise SystemExit(f"--n must be a power of two >= 2; got {args.n}")
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    from imgpref.align.generate import generate_images
    from imgpref.world.align_world import proxy_rewards
    from imgpref.world.base_model import SAMPLE_SETTINGS
    from imgpref.world.judge import judge
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import load_world

    t0 = time.perf_counter()
    settings = SAMPLE_SETTINGS
    if args.flow:  # as benchmarks/world_flow_align.py samples it
        from imgpref.world.flow_base import (FLOW_SAMPLE_SETTINGS, ensure_flow_world, fast_sampling_pipeline,
                                             load_flow_pipeline)

        folder = ensure_flow_world(log=print) if args.flow == "cached" else args.flow
        pipe, settings = fast_sampling_pipeline(load_flow_pipeline(folder)), FLOW_SAMPLE_SETTINGS
    else:
        pipe, _ = load_world(args.pack) if args.pack else load_world()
    prompts = world_prompts(0, args.rm_prompts, args.rm_prompts // 5, args.test_prompts)["test"]
    guidance = settings["guidance_scale"] if args.guidance is None else args.guidance
    # seeds far from BaseSamples' (1_000_000 + ...) so the pool is independent of world_align's base images
    gens = generate_images(pipe, prompts, args.n, base_seed=3_000_000, batch_size=64,
                           num_inference_steps=settings["num_inference_steps"], guidance_scale=guidance)
    gold = judge(gens.images, gens.prompts)
    shape = (len(prompts), args.n)
    fid, util = gold["fidelity"].reshape(shape), gold["utility"].reshape(shape)
    selectors = {"gold utility": util, "gold fidelity": fid}
    if args.rm:
        from imgpref.scorers.registry import load_scorer

        selectors["reward model"] = proxy_rewards(load_scorer(args.rm), gens.images, gens.prompts).reshape(shape)
    t_gen = time.perf_counter() - t0
    rows = []
    ns = [2 ** i for i in range(int(np.log2(args.n)) + 1)]
    for name, sel in selectors.items():
        for n in ns:
            idx = pick(sel, n)
            f, u = np.take_along_axis(fid, idx, 1), np.take_along_axis(util, idx, 1)
            rows.append({"selector": name, "n": n, "fidelity": float(f.mean()), "utility": float(u.mean()),
                         "fidelity_gain": float(f.mean() - fid.mean()), "fidelity_ci": gain_ci(f, fid),
                         "utility_gain": float(u.mean() - util.mean()), "utility_ci": gain_ci(u, util),
                         "win_vs_base": unpaired_win(u, util)})
    which = f"flow base {args.flow}" if args.flow else f"UNet base {args.pack or '(committed)'}"
    print(f"world_bestofn: {which}, {len(prompts)} held-out prompts x {args.n} base samples, guidance {guidance}; "
          f"{time.perf_counter() - t0:.0f} s wall ({t_gen:.0f} s sampling, judging and scoring)")
    print("| selector | n | gold fidelity | fidelity gain [95% CI] | gold utility | utility gain [95% CI] | "
          "win over a base sample |")
    print("|---|---:|---:|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['selector']} | {r['n']} | {r['fidelity']:.3f} | {r['fidelity_gain']:+.3f} "
              f"[{r['fidelity_ci'][0]:+.3f}, {r['fidelity_ci'][1]:+.3f}] | {r['utility']:.3f} | "
              f"{r['utility_gain']:+.3f} [{r['utility_ci'][0]:+.3f}, {r['utility_ci'][1]:+.3f}] | "
              f"{r['win_vs_base']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
