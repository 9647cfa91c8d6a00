"""Seconds per training step and peak memory of alignment set-ups on one UNet or flow transformer.

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

Flow-matching transformers (`--model sd3` / `--model flux`): (b) DPO LoRA with the adapters-off reference against
(c) MaPO LoRA, on velocity errors (imgpref.align.flow), LoRA on the SD3 / FLUX targets of diffusers' scripts.

  python benchmarks/align_step.py                     # CPU, small UNet (64, 128, 256), 32x32 latents
  python benchmarks/align_step.py --device cuda --sd15 # SD1.5-sized UNet (random weights) at 512 px
  python benchmarks/align_step.py --model sd3         # CPU, small SD3 transformer (4 layers, width 128)
  python benchmarks/align_step.py --model flux        # CPU, small FLUX transformer (2 + 4 blocks, width 128)
  python benchmarks/align_step.py --device cuda --model sd3 --sd35 --bf16 --batch 1
                                                      # SD3.5-Medium-sized transformer (2.5B, random weights),
                                                      # 1024 px (128x128 latents), 77 + 256 text tokens
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
FLOW_VARIANTS = ("b", "c")  # the comparison the flow models need: DPO adapters-off vs MaPO
BETA = {"dpo": 5000.0, "mapo": 0.1}
FLOW_BETA = {"dpo": 1000.0, "mapo": 0.1}
TEXT_TOKENS = 77 + 256  # SD3: 77 CLIP tokens + 256 T5 tokens; FLUX: the 256 T5 tokens only


def flow_config(model: str, sd35: bool) -> dict:
    """Transformer config: SD3.5 Medium's (2.5B) for --sd35, else a small one that a CPU steps in seconds."""
    if model == "sd3" and sd35:
        return dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                    pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
                    dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
    if model == "sd3":
        return dict(sample_size=32, patch_size=2, in_channels=16, num_layers=4, attention_head_dim=32,
                    num_attention_heads=4, joint_attention_dim=128, caption_projection_dim=128,
                    pooled_projection_dim=64, out_channels=16, pos_embed_max_size=32)
    if sd35:
        raise ValueError("--sd35 applies to --model sd3")
    return dict(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=32,
                num_attention_heads=4, joint_attention_dim=128, pooled_projection_dim=64, guidance_embeds=True,
                axes_dims_rope=(8, 12, 12))


def latent_hw(args) -> int:
    if args.model == "unet":
        return unet_config(args.sd15)["sample_size"]
    return 128 if args.sd35 else 32


def build_flow_pipe(model: str, sd35: bool, device: str):
    """An SD3 / FLUX pipeline around the benchmark transformer (random weights); no text encoders (embeddings are
    given), a one-block VAE that is never run (latents are given)."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel,
                           SD3Transformer2DModel, StableDiffusion3Pipeline)

    torch.manual_seed(0)
    cfg = flow_config(model, sd35)
    vae = AutoencoderKL(block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=16,
                        norm_num_groups=8, shift_factor=0.0)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0 if model == "sd3" else 1.0)
    if model == "sd3":
        pipe = StableDiffusion3Pipeline(transformer=SD3Transformer2DModel(**cfg), scheduler=sched, vae=vae,
                                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                        text_encoder_3=None, tokenizer_3=None)
    else:
        pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                            tokenizer_2=None, transformer=FluxTransformer2DModel(**cfg))
    return pipe.to(device)


def flow_batch(args) -> dict:
    cfg = flow_config(args.model, args.sd35)
    g = torch.Generator().manual_seed(1)
    s, b = latent_hw(args), args.batch
    tokens = TEXT_TOKENS if args.model == "sd3" else 256
    out = {
        "latents_w": torch.randn(b, 16, s, s, generator=g).to(args.device),
        "latents_l": torch.randn(b, 16, s, s, generator=g).to(args.device),
        "encoder_hidden_states": torch.randn(b, tokens, cfg["joint_attention_dim"], generator=g).to(args.device),
        "pooled_projections": torch.randn(b, cfg["pooled_projection_dim"], generator=g).to(args.device),
    }
    if args.model == "flux":
        out["txt_ids"] = torch.zeros(tokens, 3, device=args.device)
    return out


def variants(args) -> list[str]:
    return list(VARIANTS) if args.model == "unet" else list(FLOW_VARIANTS)


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


def build_module(key: str, args):
    from imgpref.align.module import DiffusionPreferenceModule

    v = VARIANTS[key]
    device, rank = args.device, args.rank
    if args.model == "unet":
        pipe, beta = build_pipe(args.sd15, device), BETA[v["method"]]
    else:
        pipe, beta = build_flow_pipe(args.model, args.sd35, device), FLOW_BETA[v["method"]]
    m = DiffusionPreferenceModule(pipe=pipe, method=v["method"], finetune=v["finetune"], reference=v["reference"],
                                  beta=beta, lora_rank=rank, lr=1e-5, gradient_checkpointing=args.checkpointing)
    m.to(device)
    for ref in m._ref:
        ref.to(device)
    opt = torch.optim.AdamW([p for _, p in m.trainable_named_parameters()], lr=1e-5)
    return m, opt


def step(m, opt, batch, gen, bf16: bool = False) -> None:
    with torch.autocast(device_type=m.device.type, dtype=torch.bfloat16, enabled=bf16):
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
    batch = make_batch(args.sd15, args.batch, args.device) if args.model == "unet" else flow_batch(args)
    gen = torch.Generator(device=args.device).manual_seed(0)
    cuda = args.device.startswith("cuda")
    if args.model != "unet" and not cuda:
        # Import (and build once) everything the module needs before the baseline, so the CPU peak counts tensors
        # rather than the ~0.5 GB of lazily imported libraries (the UNet rows keep their original method).
        import gc

        warm = build_module(key, args)
        del warm
        gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    m, opt = build_module(key, args)
    for _ in range(args.mem_steps):
        step(m, opt, batch, gen, args.bf16)
    sync(args.device)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak": peak, "state": state_bytes(m, opt), "unet_weight_bytes": weight_bytes(args)}


def weight_bytes(args) -> int:
    """float32 bytes of the denoiser's parameters and buffers (built on the meta device: no memory used)."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    with torch.device("meta"):
        if args.model == "unet":
            u = UNet2DConditionModel(**unet_config(args.sd15))
        elif args.model == "sd3":
            u = SD3Transformer2DModel(**flow_config("sd3", args.sd35))
        else:
            u = FluxTransformer2DModel(**flow_config("flux", False))
    return sum(p.numel() * 4 for p in u.parameters()) + sum(b.numel() * 4 for b in u.buffers())


def time_all(args) -> dict[str, float]:
    torch.set_num_threads(args.threads)
    batch = make_batch(args.sd15, args.batch, args.device) if args.model == "unet" else flow_batch(args)
    keys = variants(args)
    mods = {k: build_module(k, args) for k in keys}
    gens = {k: torch.Generator(device=args.device).manual_seed(0) for k in keys}
    times: dict[str, list[float]] = {k: [] for k in keys}
    for i in range(args.warmup + args.steps):
        for k, (m, opt) in mods.items():  # round-robin: machine-load drift hits every variant alike
            sync(args.device)
            t0 = time.perf_counter()
            step(m, opt, batch, gens[k], args.bf16)
            sync(args.device)
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="unet", choices=("unet", "sd3", "flux"), help="denoiser to benchmark")
    ap.add_argument("--sd15", action="store_true", help="SD1.5-sized UNet at 512 px (64x64 latents); for GPUs")
    ap.add_argument("--sd35", action="store_true", help="with --model sd3: SD3.5-Medium-sized transformer, 1024 px")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast around the step (GPU runs)")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in the denoiser")
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
    for k in variants(args):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", k, "--device", args.device, "--batch",
               str(args.batch), "--rank", str(args.rank), "--mem-steps", str(args.mem_steps), "--threads",
               str(args.threads), "--model", args.model] + [f"--{f}" for f in ("sd15", "sd35", "bf16", "checkpointing")
                                                            if getattr(args, f)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        mem[k] = json.loads(out.strip().splitlines()[-1])
    secs = time_all(args)
    if args.model != "unet":
        flow_report(args, mem, secs)
        return

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


def flow_report(args, mem: dict, secs: dict) -> None:
    mb = 1024**2
    w = mem["b"]["unet_weight_bytes"]
    s = latent_hw(args)
    name = {"sd3": "SD3.5-Medium-sized SD3 transformer" if args.sd35 else "small SD3 transformer (4 layers, width 128)",
            "flux": "small FLUX transformer (2 double + 4 single blocks, width 128)"}[args.model]
    print(f"align_step: {name}, {s}x{s} latents ({s * 8} px), batch {args.batch} pairs, LoRA rank {args.rank}, "
          f"device {args.device}, threads {args.threads}, bf16 {args.bf16}; transformer weights {w / mb:.1f} MB; "
          f"median of {args.steps} steps")
    print(f"{'variant':<30} {'s/step':>8} {'peak MB':>9} {'state MB':>9}")
    for k in FLOW_VARIANTS:
        print(f"({k}) {VARIANTS[k]['label']:<26} {secs[k]:>8.3f} {mem[k]['peak'] / mb:>9.1f} {mem[k]['state'] / mb:>9.1f}")
    print(f"MaPO (c) / DPO (b): step time {secs['c'] / secs['b']:.2f}, peak memory {mem['c']['peak'] / mem['b']['peak']:.2f}")


if __name__ == "__main__":
    main()
