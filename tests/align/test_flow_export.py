"""Tiny SD3 and FLUX pipelines: a few DPO steps with LoRA, export, reload in a FRESH process with plain diffusers
`load_lora_weights`; the reloaded transformer matches a by-hand merge W + scale * B A of the saved LoRA weights."""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from imgpref.align.export import LORA_FILE, export_aligned
from imgpref.align.flow import transformer_velocity
from imgpref.align.module import DiffusionPreferenceModule
from imgpref.align.tiny_flow import build_tiny_flow_pipeline

PROMPTS = ["a red cat", "a blue dog"]

# Runs in a fresh interpreter: base pipeline built from its seed, LoRA applied with plain diffusers only.
_RELOAD = r"""
import sys, torch
torch.set_num_threads(1)
from safetensors.torch import load_file, save_file
from imgpref.align.tiny_flow import build_tiny_flow_pipeline
from imgpref.align.flow import transformer_velocity
out = {}
for kind, lora_dir in zip(sys.argv[2::2], sys.argv[3::2]):
    pipe = build_tiny_flow_pipeline(kind, seed=0)
    inp = load_file(f"{sys.argv[1]}/inputs_{kind}.safetensors")
    cond = {k[5:]: v for k, v in inp.items() if k.startswith("cond.")}
    pipe.load_lora_weights(lora_dir, weight_name="pytorch_lora_weights.safetensors")
    with torch.no_grad():
        out[kind] = transformer_velocity(pipe.transformer, kind, inp["x"], inp["t"], cond).contiguous()
save_file(out, f"{sys.argv[1]}/reloaded.safetensors")
"""


def _inputs(pipe, kind):
    from imgpref.align.conditioning import encode_prompts

    g = torch.Generator().manual_seed(5)
    c = pipe.vae.config.latent_channels
    cond = encode_prompts(pipe, PROMPTS, "cpu")
    return {"x": torch.randn(2, c, 16, 16, generator=g), "t": torch.tensor([300.0, 800.0]),
            **{f"cond.{k}": v.contiguous() for k, v in cond.items()}}


def _velocity(transformer, kind, inp):
    cond = {k[5:]: v for k, v in inp.items() if k.startswith("cond.")}
    with torch.no_grad():
        return transformer_velocity(transformer, kind, inp["x"], inp["t"], cond)


def _train_dpo(pipe, steps=3):
    m = DiffusionPreferenceModule(pipe=pipe, method="dpo", finetune="lora", reference="adapters_off", beta=1000.0,
                                  lora_rank=4, lora_alpha=8)
    opt = torch.optim.AdamW([p for _, p in m.trainable_named_parameters()], lr=3e-2)
    g = torch.Generator().manual_seed(1)
    c = pipe.vae.config.latent_channels
    for _ in range(steps):
        batch = {"latents_w": torch.randn(2, c, 16, 16, generator=g), "latents_l": torch.randn(2, c, 16, 16, generator=g),
                 "prompt": PROMPTS}
        loss, _ = m.pair_losses(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.denoiser.eval()
    return m


def _merge_by_hand(base, lora_file):
    """Base transformer with W += (alpha / r) * B @ A for every saved LoRA pair (keys `transformer.<module>.lora_A`)."""
    with safe_open(str(lora_file), framework="pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    scale = float(meta["transformer.lora_alpha"]) / float(meta["transformer.r"])  # keys flattened by diffusers
    state = load_file(str(lora_file))
    mods = dict(base.named_modules())
    n = 0
    with torch.no_grad():
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            assert key.startswith("transformer.")
            name = key[len("transformer."):-len(".lora_A.weight")]
            b = state[key.replace("lora_A", "lora_B")]
            mods[name].weight += scale * (b.double() @ a.double()).float()
            n += 1
    return base, n, scale


@pytest.mark.slow
def test_tiny_sd3_and_flux_dpo_lora_export_reload_in_fresh_process(tmp_path):
    runs = {}
    bases = {}
    for kind in ("sd3", "flux"):
        pipe = build_tiny_flow_pipeline(kind, seed=0)
        bases[kind] = copy.deepcopy(pipe.transformer).eval()
        m = _train_dpo(pipe)
        d = export_aligned(m, tmp_path / kind, use_ema=False)
        inp = _inputs(m.pipe, kind)
        save_file(inp, str(tmp_path / f"inputs_{kind}.safetensors"))
        trained = _velocity(m.denoiser, kind, inp)
        n_lora = sum(1 for _, mod in m.denoiser.named_modules() if hasattr(mod, "lora_A") and "default" in mod.lora_A)
        runs[kind] = (d, inp, trained, n_lora)
        keys = list(load_file(str(d / LORA_FILE)))
        assert keys and all(k.startswith("transformer.") for k in keys)
    args = [str(tmp_path)] + [x for kind in runs for x in (kind, str(runs[kind][0]))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _RELOAD, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = load_file(str(tmp_path / "reloaded.safetensors"))
    for kind, (d, inp, trained, n_lora) in runs.items():
        base_out = _velocity(bases[kind], kind, inp)
        merged, n_pairs, scale = _merge_by_hand(bases[kind], d / LORA_FILE)
        assert scale == 2.0 and n_pairs == n_lora >= 7  # alpha 8 / rank 4; every adapted module was saved
        by_hand = _velocity(merged, kind, inp)
        assert (reloaded[kind] - base_out).abs().max() > 1e-3, kind  # the aligned transformer differs from base
        torch.testing.assert_close(reloaded[kind], by_hand, rtol=0, atol=1e-5)
        torch.testing.assert_close(reloaded[kind], trained, rtol=0, atol=1e-5)


def test_pair_images_share_noise_and_sigma():
    # Identical winner and loser latents give identical errors only if noise and sigma are shared by the pair.
    for kind in ("sd3", "flux"):
        m = DiffusionPreferenceModule(pipe=build_tiny_flow_pipeline(kind, seed=0), method="mapo", lora_rank=2,
                                      sigma_sampling="logit_normal")
        c = m.vae.config.latent_channels
        z = torch.randn(3, c, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            _, st = m.pair_losses({"latents_w": z, "latents_l": z.clone(), "prompt": ["a", "b", "c"]},
                                  generator=torch.Generator().manual_seed(1))
        assert st["reward_margin"].item() == 0.0
        # a list of K identical images: all errors equal, so the RankDPO margin is zero too
        m2 = DiffusionPreferenceModule(pipe=build_tiny_flow_pipeline(kind, seed=0), method="rankdpo", lora_rank=2) \
            if kind == "sd3" else None
        if m2 is not None:
            with torch.no_grad():
                _, st2 = m2.list_losses({"latents": z[:1].expand(3, -1, -1, -1)[None].clone(), "prompt": ["a"],
                                         "gains": torch.tensor([[1.0, 0.5, 0.0]])}, generator=torch.Generator().manual_seed(2))
            assert st2["reward_margin"].item() == 0.0


def test_flow_defaults_and_options_are_explicit():
    m = DiffusionPreferenceModule(pipe=build_tiny_flow_pipeline("flux", seed=0), method="dpo", lora_rank=2)
    assert m.flow == "flux" and not m.sdxl
    assert m.beta == 1000.0  # the flow default; recipes state theirs
    assert m.hparams.precondition_outputs is False and m.hparams.loss_weighting == "none"
    targets = set(m.lora_config.target_modules)
    assert {"attn.to_q", "attn.add_q_proj", "ff.net.0.proj", "ff_context.net.2"} <= targets
    with pytest.raises(ValueError, match="sigma_sampling"):
        DiffusionPreferenceModule(pipe=m.pipe, method="dpo", sigma_sampling="cosmap")
