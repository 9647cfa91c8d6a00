"""How far can the alignment budget move the world base when the signal is perfect? Training on correct renders.

A diagnostic for issue 8's "+0.1 gold fidelity" target, not part of the loop (the loop never sees renders): the
pair prompts of a pairs folder written by `imgpref align pairs` (for example the loop's `pairs/`) get a correct
rendering each (`scenes.render_prompt`), and the world's alignment recipes train on those with the same LoRA,
batch and steps as alignment:

- `sft`: world_mapo.yaml with beta 1e-6, i.e. supervised fine-tuning on the renders alone (MaPO's SFT term);
- `dpo`: world_dpo.yaml with the render as the winner and the pair's loser (a base sample) as the loser;
- any variant can take recipe overrides with `--set NAME:KEY=VALUE` (for example `sft:model.lr=1e-3`).

Images are VAE-encoded (`data.latents: null`: renders have no sampled latents). Each result is compared with the
base on the held-out prompts of benchmarks/world_align.py (48 x 2 seeds, same sampler): gold win rate with its
95% bootstrap interval, mean gold fidelity and utility before and after.

  python benchmarks/world_sft_renders.py --pairs LOOP/pairs [--variants sft,dpo] [--steps 400] [--set ...]
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
from align_reward import parse_sets  # noqa: E402

VARIANTS = {"sft": ("mapo", {"model.beta": 1e-6}), "dpo": ("dpo", {})}


def render_manifest(pairs_dir: Path, exclude: set[str], out: Path) -> Path:
    """manifest.csv: render of each pair's prompt (winner) vs the pair's loser, prompts in `exclude` left out."""
    import pandas as pd
    from PIL import Image

    from imgpref.world.scenes import render_prompt

    src = pd.read_csv(pairs_dir / "manifest.csv")
    src = src[~src.prompt.isin(exclude)].reset_index(drop=True)
    rng = np.random.default_rng([5, 5])
    (out / "renders").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in src.iterrows():
        path = out / "renders" / f"r{i:04d}.png"
        Image.fromarray(render_prompt(r.prompt, rng, 32)).save(path)
        rows.append({"image_0": str(path), "image_1": str((pairs_dir / r.image_1).resolve()), "votes_0": 1,
                     "votes_1": 0, "votes_tie": 0, "prompt": r.prompt, "group": r.group, "annotator": "",
                     "split": "train"})
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="a folder written by `imgpref align pairs` on the world base")
    ap.add_argument("--variants", default="sft,dpo", help=f"comma-separated, of {sorted(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="[VARIANT:]KEY=VALUE recipe override")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/world_sft_renders")
    args = ap.parse_args()
    if not (Path(args.pairs) / "manifest.csv").is_file():
        raise SystemExit(f"--pairs {args.pairs}: no manifest.csv there; write one with `imgpref align pairs` on the "
                         "world base, or use LOOP/pairs of `imgpref world loop --out LOOP`")
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    torch.set_num_threads(args.threads)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from imgpref.align.train import align
    from imgpref.world.align_world import BaseSamples, compare_to_base
    from imgpref.world.reward import world_prompts
    from imgpref.world.store import load_world

    root = Path(args.out)
    pipe, _ = load_world()
    test = world_prompts(0, 120, 24, 48)["test"]
    manifest = render_manifest(Path(args.pairs).resolve(), set(test), root)
    base = BaseSamples(pipe, test, seeds=2)
    sets = parse_sets(args.set)
    rows = []
    for name in args.variants.split(","):
        method, overrides = VARIANTS[name]
        t0 = time.perf_counter()
        ov = {**overrides, **sets["*"], **sets.get(name, {}), "seed": args.seed, "trainer.max_steps": args.steps,
              "data.latents": None, "checkpoint_every_n_steps": 100}
        res = align(REPO / "configs" / "align" / f"world_{method}.yaml", manifest, root / f"{name}_{args.steps}",
                    pipe=copy.deepcopy(pipe), **ov)
        c = compare_to_base(base, res.export_dir)
        rows.append({"variant": name, "overrides": ov, "steps": res.steps, "seconds": time.perf_counter() - t0,
                     **{k: v for k, v in c.items() if k not in ("images", "gold")}})
        print(f"{name} {res.steps} steps: gold win {c['gold_win']:.3f} [{c['gold_ci'][0]:.3f}, {c['gold_ci'][1]:.3f}]"
              f" fidelity {c['fidelity_base']:.3f} -> {c['fidelity_aligned']:.3f} utility {c['utility_base']:.3f}"
              f" -> {c['utility_aligned']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    (root / "rows.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
