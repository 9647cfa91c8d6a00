"""Where the world's fidelity is capped: how well a VAE variant reconstructs rendered scenes, judged by gold.

Trains one VAE as `imgpref.world.base_model.pretrain_world` trains it (the same 8000 scenes of the training
combos, batch, lr, KL weight and seed; one process), or loads the committed one, then passes 300 rendered scenes of
every colour x shape combination through encode (posterior mean) + decode and judges both the rendered scenes and
their reconstructions, per shape. Prints one JSON line. Results: benchmarks/RESULTS.md "world_align".

  python benchmarks/world_vae_cap.py VARIANT [--steps 1500] [--batch 32] [--lr 2e-3] [--threads 1]
  VARIANT: committed (the pack's VAE, or --pack DIR's; no training) | base (VAE_CONFIG) | ch8 (8 latent channels)
           | down2 (two downsamplings: 16 x 16 latents) | wide (32-64-64 channels, 2 layers per block)
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

VARIANTS = {
    "committed": None,
    "base": {},
    "ch8": {"latent_channels": 8},
    "down2": {"down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
              "block_out_channels": [16, 32]},
    "wide": {"block_out_channels": [32, 64, 64], "layers_per_block": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="VAE steps (default: PretrainSizes().vae_steps)")
    ap.add_argument("--batch", type=int, default=None, help="VAE batch (default: PretrainSizes().vae_batch)")
    ap.add_argument("--lr", type=float, default=None, help="VAE peak lr (default: PretrainSizes().vae_lr)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pack", default=None, help="with `committed`: another world pack folder (store.pack_world)")
    args = ap.parse_args()
    trained = VARIANTS[args.variant] is not None
    if args.pack and trained:
        ap.error(f"--pack only applies to the `committed` variant, not {args.variant!r} (which trains its own VAE)")
    torch.set_num_threads(args.threads)

    from diffusers import AutoencoderKL

    from imgpref.world import base_model as bm
    from imgpref.world.judge import judge
    from imgpref.world.pretrain_modules import fit_stage
    from imgpref.world.scenes import sample_dataset, split_combos
    from imgpref.world.store import PACK_DIR, load_world

    sizes = bm.PretrainSizes()
    steps = args.steps or sizes.vae_steps
    batch, lr = args.batch or sizes.vae_batch, args.lr or sizes.vae_lr
    t0 = time.process_time()
    train_combos, heldout = split_combos(0)
    if not trained:
        vae = load_world(args.pack or PACK_DIR)[0].vae
    else:
        images, _ = sample_dataset(sizes.scenes, 0, size=bm.RESOLUTION, combos=train_combos)
        torch.manual_seed(1)  # pretrain_world builds the VAE with seed + 1
        vae = AutoencoderKL(**{**bm.VAE_CONFIG, **VARIANTS[args.variant]})
        fit_stage(vae, bm.VAEBatchLoss(sizes.kl_weight), (bm.vae_pixels(images),), steps=steps,
                  batch_size=batch, lr=lr, seed=1)
    vae.eval()
    scenes, prompts = sample_dataset(300, 12345, size=bm.RESOLUTION, combos=train_combos + heldout)
    with torch.no_grad():
        x = bm.vae_pixels(scenes)
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rendered, recon = judge(scenes, prompts), judge((rec.clamp(-1, 1) + 1) / 2, prompts)
    out = {"variant": args.variant, "steps": steps if trained else None, "batch": batch if trained else None,
           "lr": lr if trained else None,
           "cpu_seconds": round(time.process_time() - t0), "latent": list(vae.encode(x[:1]).latent_dist.mean.shape[1:]),
           "fidelity_rendered": round(float(rendered["fidelity"].mean()), 3),
           "fidelity_recon": round(float(recon["fidelity"].mean()), 3)}
    for shape in ("circle", "square", "triangle"):
        m = np.array([shape in p for p in prompts])
        out[f"shape_{shape}"] = [round(float(rendered["shape"][m].mean()), 3), round(float(recon["shape"][m].mean()), 3)]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
