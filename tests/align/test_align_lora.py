"""LoRA alignment: adapters-off reference, export of every LoRA target through plain diffusers, EMA warm-up."""
import copy
import math

import pytest
import torch
from safetensors.torch import load_file

from imgpref.align.export import LORA_FILE, export_aligned
from imgpref.align.module import DiffusionPreferenceModule

PROMPTS = ["a red cat", "a blue dog"]
# Attention, transformer-block and ResNet targets: the ones diffusers 0.42 dropped from the old mixed-key export.
ALL_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
               "conv1", "conv2", "time_emb_proj", "conv_in", "conv_out"]


def _module(pipe, **kw):
    m = DiffusionPreferenceModule(pipe=pipe, method="dpo", finetune="lora", reference="adapters_off", beta=1000.0, **kw)
    return m


def _perturb_lora_b(m, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.trainable_named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def _unet_out(unet, pipe):
    from imgpref.align.conditioning import encode_prompts

    g = torch.Generator().manual_seed(3)
    c = unet.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=g)
    cond = encode_prompts(pipe, PROMPTS, "cpu")["encoder_hidden_states"]
    with torch.no_grad():
        return unet(x, torch.tensor([100, 700]), encoder_hidden_states=cond).sample


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"latents_w": torch.randn(2, 4, 16, 16, generator=g), "latents_l": torch.randn(2, 4, 16, 16, generator=g),
            "prompt": PROMPTS}


def test_adapters_off_reference_is_the_base_unet_and_state_is_restored(fresh_tiny_pipe, tiny_pipe):
    m = _module(fresh_tiny_pipe, lora_rank=4)
    _perturb_lora_b(m)
    base = _unet_out(tiny_pipe.unet, tiny_pipe)
    on = _unet_out(m.unet, m.pipe)
    with m._adapters_disabled():
        off = _unet_out(m.unet, m.pipe)
    again = _unet_out(m.unet, m.pipe)
    assert (on - base).abs().max() > 1e-2  # the adapters do change the policy
    torch.testing.assert_close(off, base, rtol=0, atol=0)  # reference = base UNet exactly
    torch.testing.assert_close(again, on, rtol=0, atol=0)  # adapters back on after the context
    assert all(p.requires_grad for n, p in m.unet.named_parameters() if "lora_" in n)


def test_dpo_with_zero_init_lora_starts_at_log2_and_only_lora_gets_gradients(fresh_tiny_pipe):
    # B = 0 at init: policy == reference, so inside = 0 for every pair and loss = -logsigmoid(0) = log 2.
    m = _module(fresh_tiny_pipe, lora_rank=4, lora_targets=ALL_TARGETS)
    loss, stats = m.pair_losses(_batch(), generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert stats["reward_margin"].item() == 0.0
    loss.backward()
    grads = {n: p.grad for n, p in m.unet.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)


def test_export_of_every_lora_target_reproduces_with_plain_load_lora_weights(fresh_tiny_pipe, tiny_pipe, tmp_path):
    m = _module(fresh_tiny_pipe, lora_rank=4, lora_alpha=8, lora_targets=ALL_TARGETS)  # alpha != rank
    _perturb_lora_b(m, std=0.1)
    export_aligned(m, tmp_path, use_ema=False)
    n_trained = sum(1 for _ in m.trainable_named_parameters())
    assert len(load_file(str(tmp_path / LORA_FILE))) == n_trained  # every target saved
    pipe = copy.deepcopy(tiny_pipe)
    pipe.load_lora_weights(str(tmp_path))  # plain diffusers
    assert sum(1 for n, _ in pipe.unet.named_parameters() if "lora_" in n) == n_trained  # every target loaded
    ours, theirs = _unet_out(m.unet, m.pipe), _unet_out(pipe.unet, pipe)
    assert (ours - _unet_out(tiny_pipe.unet, tiny_pipe)).abs().max() > 1e-2
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    m.unet.eval()
    kw = dict(num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(7), output_type="pt")
    img_m = m.pipe(PROMPTS, **kw).images
    kw["generator"] = torch.Generator().manual_seed(7)
    img_p = pipe(PROMPTS, **kw).images
    torch.testing.assert_close(img_p, img_m, rtol=1e-5, atol=1e-5)


def test_ema_warms_up_so_a_short_run_is_not_exported_as_the_base(fresh_tiny_pipe):
    m = _module(fresh_tiny_pipe, lora_rank=2, lora_targets=["to_q"], ema_decay=0.999)
    assert [m.ema_decay_at(n) for n in (0, 1, 8, 10_000)] == [pytest.approx(0.1), pytest.approx(2 / 11),
                                                              pytest.approx(0.5), 0.999]
    params = dict(m.trainable_named_parameters())
    name = next(n for n in params if "lora_B" in n)
    p = params[name]
    expected = None
    for step in range(5):  # parameter value v_k = k + 1 after step k; EMA by the warm-up formula by hand
        with torch.no_grad():
            p.fill_(float(step + 1))
        m.on_train_batch_end(None, None, step)
        d = [0.1, 2 / 11, 3 / 12, 4 / 13][step - 1] if step else None
        expected = 1.0 if step == 0 else d * expected + (1 - d) * (step + 1)
    torch.testing.assert_close(m._ema[name], torch.full_like(p, expected))
    with m.ema_weights():
        assert p.detach().flatten()[0].item() == pytest.approx(expected)
    assert p.detach().flatten()[0].item() == 5.0  # restored
