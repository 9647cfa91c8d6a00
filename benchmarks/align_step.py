"""Seconds per training step and peak memory of four alignment set-ups on one UNet, batch and resolution.

  (a) DPO, LoRA, reference = a separate frozen copy of the UNet
  (b) DPO, LoRA, reference = the same UNet with its adapters disabled (no second copy)
  (c) MaPO, LoRA (no reference at all)
  (d) DPO, full fine-tune, reference = a frozen copy

Every variant runs `DiffusionPreferenceModule.pair_losses` (the real training code path) + backward + AdamW step
on cached latents and text embeddings (so only the UNet work is timed; VAE and text encoder are not involved).

Time: all four modules live in one process and are stepped round-robin (after warm-up steps), so load drift on
a shared machine hits every variant alike; the median step time is reported.

Memory: each variant runs again in a fresh subprocess. On CUDA, peak = torch.cuda.max_memory_allocated during
the steps minus the allocated bytes before the module was built. On CPU there is no allocator statistic, so peak
= the process's peak resident set (ru_maxrss, tracked by the kernel) minus its resident set just before the
module was built; glibc is told to serve every allocation >= 64 KiB with mmap (MALLOC_MMAP_THRESHOLD_=65536), so
freed tensors go back to the OS and RSS follows live tensor bytes. "state" is the exact byte count of parameters
+ buffers + gradients + optimizer state alive after the last step (unique storages), for comparison.

  python benchmarks/align_step.py                     # CPU, small UNet (64, 128, 256), 32x32 latents
  python benchmarks/align_step.py --device cuda --sd15 # SD1.5-sized UNet (random weights) at 512 px
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = {
    "a": dict(label="DPO LoRA, reference copy", method="dpo", finetune="lora", reference="copy"),
    "b": dict(label="DPO LoRA, adapters off", method="dpo", finetune="lora", reference="adapters_off"),
    "c": dict(label="MaPO LoRA", method="mapo", finetune="lora", reference="adapters_off"),
    "d": dict(label="DPO full, frozen copy", method="dpo", finetune="full", reference="copy"),
}
BETA = {"dpo": 5000.0, "mapo": 0.1}


def unet_config(sd15: bool) -> dict:
    if sd15:  # the SD1.5 UNet: diffusers' default UNet2DConditionModel with 768-d cross-attention, 64x64 latents
        return dict(sample_size=64, cross_attention_dim=768)
    return dict(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128, 256),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16,
    )


def build_pipe(sd15: bool, device: str):
    """A StableDiffusionPipeline around the benchmark UNet (random weights); VAE tiny, no text encoder needed."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config(sd15))
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=8)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipe.to(device)


def make_batch(sd15: bool, batch: int, device: str) -> dict:
    cfg = unet_config(sd15)
    g = torch.Generator().manual_seed(1)
    s, d = cfg["sample_size"], cfg["cross_attention_dim"]
    return {
        "latents_w": torch.randn(batch, 4, s, s, generator=g).to(device),
        "latents_l": torch.randn(batch, 4, s, s, generator=g).to(device),
        "encoder_hidden_states": torch.randn(batch, 77, d, generator=g).to(device),
    }


def build_module(key: str, sd15: bool, device: str, rank: int):
    from imgpref.align.module import DiffusionPreferenceModule

    v = VARIANTS[key]
    m = DiffusionPreferenceModule(pipe=build_pipe(sd15, device), method=v["method"], finetune=v["finetune"],
                                  reference=v["reference"], beta=BETA[v["method"]], lora_rank=rank, lr=1e-5)
    m.to(device)
    for ref in m._ref:
        ref.to(device)
    opt = torch.optim.AdamW([p for _, p in m.trainable_named_parameters()], lr=1e-5)
    return m, opt


def step(m, opt, batch, gen) -> None:
    loss, _ = m.pair_losses(batch, generator=gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def state_bytes(m, opt) -> int:
    """Bytes of unique storages of parameters, buffers, gradients and optimizer state (incl. a reference copy)."""
    seen, total = set(), 0
    tensors = list(m.parameters()) + list(m.buffers()) + [p.grad for p in m.parameters() if p.grad is not None]
    for ref in m._ref:
        tensors += list(ref.parameters()) + list(ref.buffers())
    for st in opt.state.values():
        tensors += [t for t in st.values() if torch.is_tensor(t)]
    for t in tensors:
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total += s.nbytes()
    return total


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(key: str, args) -> dict:
    """Run one variant in this (fresh) process; report peak memory as described in the module docstring."""
    torch.set_num_threads(args.threads)
    batch = make_batch(args.sd15, args.batch, args.device)
    gen = torch.Generator(device=args.device).manual_seed(0)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    m, opt = build_module(key, args.sd15, args.device, args.rank)
    for _ in range(args.mem_steps):
        step(m, opt, batch, gen)
    sync(args.device)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak": peak, "state": state_bytes(m, opt), "unet_weight_bytes": unet_weight_bytes(args.sd15)}


def unet_weight_bytes(sd15: bool) -> int:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        u = UNet2DConditionModel(**unet_config(sd15))
    return sum(p.numel() * 4 for p in u.parameters()) + sum(b.numel() * 4 for b in u.buffers())


def time_all(args) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    batch = make_batch(args.sd15, args.batch, args.device)
    mods = {k: build_module(k, args.sd15, args.device, args.rank) for k in VARIANTS}
    gens = {k: torch.Generator(device=args.device).manual_seed(0) for k in VARIANTS}
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for i in range(args.warmup + args.steps):
        for k, (m, opt) in mods.items():  # round-robin: machine-load drift hits every variant alike
            sync(args.device)
            t0 = time.perf_counter()
            step(m, opt, batch, gens[k])
            sync(args.device)
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sd15", action="store_true", help="SD1.5-sized UNet at 512 px (64x64 latents); for GPUs")
    ap.add_argument("--batch", type=int, default=2, help="pairs per step (each pair = 2 images)")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mem-steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args)))
        return

    mem = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    for k in VARIANTS:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", k, "--device", args.device, "--batch",
               str(args.batch), "--rank", str(args.rank), "--mem-steps", str(args.mem_steps), "--threads",
               str(args.threads)] + (["--sd15"] if args.sd15 else [])
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        mem[k] = json.loads(out.strip().splitlines()[-1])
    secs = time_all(args)

    w = mem["a"]["unet_weight_bytes"]
    mb = 1024**2
    size = "SD1.5 UNet, 512 px (64x64 latents)" if args.sd15 else "UNet (64,128,256), 256 px (32x32 latents)"
    print(f"align_step: {size}, batch {args.batch} pairs, LoRA rank {args.rank}, device {args.device}, "
          f"threads {args.threads}; UNet weights {w / mb:.1f} MB; median of {args.steps} steps")
    print(f"{'variant':<30} {'s/step':>8} {'peak MB':>9} {'state MB':>9}")
    for k, v in VARIANTS.items():
        print(f"({k}) {v['label']:<26} {secs[k]:>8.3f} {mem[k]['peak'] / mb:>9.1f} {mem[k]['state'] / mb:>9.1f}")
    saved = (mem["a"]["peak"] - mem["b"]["peak"]) / w
    saved_state = (mem["a"]["state"] - mem["b"]["state"]) / w
    ratio = secs["c"] / secs["b"]
    print(f"peak saved by (b) vs (a): {saved:.2f}x the UNet weight bytes (state: {saved_state:.2f}x) "
          f"[target >= 0.9]: {'PASS' if saved >= 0.9 else 'FAIL'}")
    print(f"MaPO (c) / DPO (b) step time: {ratio:.2f} [target <= 0.8]: {'PASS' if ratio <= 0.8 else 'FAIL'}")


if __name__ == "__main__":
    main()
