"""The diffusion preference LightningModule: Diffusion-DPO / MaPO / Diffusion-KTO on (prompt, winner, loser) pairs
and RankDPO on ranked lists, for UNet pipelines (SD1.5, SDXL) and flow-matching transformers (SD3/SD3.5, FLUX).

Only wiring lives here (data -> frozen VAE / text encoders -> UNet or transformer -> loss from
`imgpref.align.losses`). The images of a pair (or list) share one timestep (sigma for flow models) and one noise.
The denoiser is trained (LoRA through peft, or in full); VAE and text encoders are frozen. The reference of DPO,
KTO and RankDPO is either the same denoiser with its LoRA adapters disabled (`reference="adapters_off"`, no second
copy in memory) or a frozen copy (`reference="copy"`, required for full fine-tuning, optionally kept on the CPU).
Flow-matching maths (noise, velocity target, sigma sampling, errors) lives in `imgpref.align.flow`.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch import Tensor

from imgpref.align.conditioning import encode_prompts, repeat_conditioning
from imgpref.align.flow import (
    LOSS_WEIGHTING,
    SIGMA_SAMPLING,
    flow_errors,
    flow_kind,
    flow_noisy,
    sample_flow_u,
    sigmas_from_u,
    training_sigmas,
    transformer_velocity,
)
from imgpref.align.losses import (
    diffusion_dpo_loss,
    diffusion_kto_loss,
    diffusion_target,
    mapo_loss,
    per_sample_mse,
    rankdpo_loss,
)
from imgpref.align.pipeline_io import is_sdxl, load_pipeline

METHODS = ("dpo", "mapo", "kto", "rankdpo")
FINETUNES = ("lora", "full")
REFERENCES = ("adapters_off", "copy")
# RankDPO writes no 0.5 factor, so its beta is half of Diffusion-DPO's for the same scale.
DEFAULT_BETA = {"dpo": 5000.0, "mapo": 0.1, "kto": 5000.0, "rankdpo": 2500.0}
# Flow-matching ports use beta ~100 (Flow-GRPO's SD3.5-M DPO) to 2000 (FLUX LoRA); velocity MSEs are larger.
FLOW_DEFAULT_BETA = {"dpo": 1000.0, "mapo": 0.1, "kto": 1000.0, "rankdpo": 500.0}
DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# diffusers' DreamBooth LoRA scripts for SD3 and FLUX (REFERENCE.md).
SD3_LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                    "attn.add_v_proj", "attn.to_add_out")
FLUX_LORA_TARGETS = SD3_LORA_TARGETS + ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


class DiffusionPreferenceModule(L.LightningModule):
    """Preference fine-tuning of a diffusers UNet (SD1.5 / SDXL) or flow-matching transformer (SD3 / FLUX).

    Args:
        pipeline: "tiny" / "tiny-sdxl" / "tiny-sd3" / "tiny-flux", a pipeline folder, or a hub id (see
            `load_pipeline`); ignored when `pipe` (an already loaded pipeline object) is given.
        method: "dpo" (Diffusion-DPO), "mapo" (MaPO, no reference), "kto" (Diffusion-KTO on both images, the
            winner desirable and the loser undesirable) or "rankdpo" (RankDPO on ranked lists; on pairs it is a
            list of two with gains 1 and 0).
        beta: the method's beta (default 5000 for DPO/KTO, 2500 for RankDPO (no 0.5 factor), 0.1 for MaPO; flow
            models: 1000 / 500 / 0.1).
        mapo_s, mapo_T: MaPO's s and T (T defaults to the scheduler's num_train_timesteps).
        finetune: "lora" (peft adapters on `lora_targets`; default: the attention projections for UNets, the
            targets of diffusers' SD3 / FLUX LoRA scripts for transformers) or "full".
        reference: "adapters_off" (LoRA only) or "copy" (a frozen copy of the initial UNet).
        reference_device: "same" or "cpu" (keep the reference copy on the CPU; slower, saves accelerator memory).
        prompt_dropout: probability of replacing a pair's prompt by "" (classifier-free-guidance dropout);
            0 by default and logged, never hidden.
        timestep_range: (lo, hi) UNet training timesteps are drawn uniformly from [lo, hi); for flow models the
            index range into the scheduler's N training sigmas (descending: index 0 is sigma ~1, pure noise).
        sigma_sampling, logit_mean, logit_std, mode_scale: flow models' sigma density ("uniform", "logit_normal",
            "mode"; diffusers' `compute_density_for_timestep_sampling`).
        precondition_outputs, loss_weighting: flow models' per-sample error; plain velocity MSE unless asked
            (`imgpref.align.flow.flow_errors`).
        guidance: FLUX's guidance-embedding value during training (when its transformer has `guidance_embeds`).
        max_sequence_length: T5 tokens for SD3 / FLUX prompts (None: the pipeline's default, as at generation).
        ema_decay: if set, keep an exponential moving average of the trained weights (used for export).
        frozen_dtype: "auto" (bf16/fp16 for the frozen parts when the trainer runs in that precision on an
            accelerator, else float32), "float32", "bfloat16" or "float16".
    """

    def __init__(
        self,
        pipeline: str = "tiny",
        method: str = "dpo",
        beta: float | None = None,
        mapo_s: float = 0.5,
        mapo_T: int | None = None,
        finetune: str = "lora",
        lora_rank: int = 4,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
        lora_targets: Sequence[str] | None = None,
        reference: str = "adapters_off",
        reference_device: str = "same",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        gradient_checkpointing: bool = False,
        prompt_dropout: float = 0.0,
        timestep_range: tuple[int, int] | None = None,
        ema_decay: float | None = None,
        frozen_dtype: str = "auto",
        prediction_type: str | None = None,
        sigma_sampling: str = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        mode_scale: float = 1.29,
        precondition_outputs: bool = False,
        loss_weighting: str = "none",
        guidance: float = 3.5,
        max_sequence_length: int | None = None,
        seed: int = 0,
        pipe: Any = None,
    ) -> None:
        super().__init__()
        _check_choice("method", method, METHODS)
        _check_choice("sigma_sampling", sigma_sampling, SIGMA_SAMPLING)
        _check_choice("loss_weighting", loss_weighting, LOSS_WEIGHTING)
        _check_choice("finetune", finetune, FINETUNES)
        _check_choice("reference_device", reference_device, ("same", "cpu"))
        _check_choice("frozen_dtype", frozen_dtype, ("auto", "float32", "bfloat16", "float16"))
        if finetune == "full" and method != "mapo" and reference == "adapters_off":
            raise ValueError("reference='adapters_off' needs finetune='lora'; use reference='copy' for full fine-tuning")
        if method != "mapo":
            _check_choice("reference", reference, REFERENCES)
        if not 0.0 <= prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1); got {prompt_dropout}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null; got {ema_decay}")
        self.save_hyperparameters(ignore=["pipe"])
        self.method = method

        if pipe is None:
            pipe = load_pipeline(pipeline, seed=seed, prediction_type=prediction_type)
        pipe.set_progress_bar_config(disable=True)
        self.flow = flow_kind(pipe)  # None (UNet), "sd3" or "flux"
        self.sdxl = self.flow is None and is_sdxl(pipe)
        self.beta = float((FLOW_DEFAULT_BETA if self.flow else DEFAULT_BETA)[method] if beta is None else beta)
        if lora_targets is None:
            lora_targets = {None: DEFAULT_LORA_TARGETS, "sd3": SD3_LORA_TARGETS, "flux": FLUX_LORA_TARGETS}[self.flow]
        # Registered submodules move with the module; the pipeline object itself is kept unregistered.
        if self.flow:
            self.transformer = pipe.transformer
            self.unet = None
        else:
            self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.text_encoder_2 = getattr(pipe, "text_encoder_2", None)
        self.text_encoder_3 = getattr(pipe, "text_encoder_3", None)
        object.__setattr__(self, "_pipe", pipe)
        if self.flow:
            from diffusers import FlowMatchEulerDiscreteScheduler

            self.noise_scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
            self._sigmas = training_sigmas(self.noise_scheduler)  # plain tensor: not part of any checkpoint
        else:
            from diffusers import DDPMScheduler

            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.mapo_T = int(mapo_T or self.num_train_timesteps)
        lo, hi = timestep_range or (0, self.num_train_timesteps)
        if not 0 <= lo < hi <= self.num_train_timesteps:
            raise ValueError(f"timestep_range must satisfy 0 <= lo < hi <= {self.num_train_timesteps}; got {(lo, hi)}")
        self.t_lo, self.t_hi = int(lo), int(hi)

        for m in (self.vae, self.text_encoder, self.text_encoder_2, self.text_encoder_3):
            if m is not None:
                m.requires_grad_(False).eval()
        self.denoiser.requires_grad_(False)

        # The reference copy (if any) is made before adapters are added, and never registered as a submodule:
        # it is frozen, rebuilt from the base pipeline on resume, and can stay on the CPU.
        self._ref: list[torch.nn.Module] = []
        needs_ref = method in ("dpo", "kto", "rankdpo")
        self.reference = reference if needs_ref else "none"
        if needs_ref and (finetune == "full" or reference == "copy"):
            ref = copy.deepcopy(self.denoiser).requires_grad_(False).eval()
            self._ref.append(ref)

        if finetune == "lora":
            from peft import LoraConfig

            self.lora_config = LoraConfig(
                r=lora_rank,
                lora_alpha=lora_alpha if lora_alpha is not None else lora_rank,
                lora_dropout=lora_dropout,
                init_lora_weights="gaussian",
                target_modules=list(lora_targets),
            )
            # Any Linear / Conv2d of the UNet may be a target (to_q, ..., proj_in, proj_out, ff.net.0.proj,
            # ff.net.2, conv1, conv2, time_emb_proj, conv_in, conv_out); the export keeps peft's key format, so
            # diffusers' load_lora_weights restores all of them (tests/align/test_align_lora.py).
            self.denoiser.add_adapter(self.lora_config)
        else:
            self.lora_config = None
            self.denoiser.requires_grad_(True)
        if gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        self.denoiser.train()
        self._ema: dict[str, Tensor] | None = None
        self._ema_updates = 0
        # Checkpoints hold only trained weights (+ EMA); the frozen parts come from the base pipeline.
        self.strict_loading = False

    # ----------------------------------------------------------------------------------------- plumbing
    @property
    def pipe(self):
        """The diffusers pipeline sharing this module's UNet (with adapters, if LoRA) for generation."""
        return self._pipe

    @property
    def denoiser(self) -> torch.nn.Module:
        """The trained network: the UNet, or the transformer of a flow-matching pipeline."""
        return self.transformer if self.flow else self.unet

    def trainable_named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def _frozen_dtype(self) -> torch.dtype:
        choice = self.hparams.frozen_dtype
        if choice != "auto":
            return getattr(torch, choice)
        prec = str(getattr(self.trainer, "precision", "32")) if self._trainer is not None else "32"
        if self.device.type == "cpu":
            return torch.float32
        if prec.startswith("bf16"):
            return torch.bfloat16
        if prec.startswith("16"):
            return torch.float16
        return torch.float32

    def on_fit_start(self) -> None:
        dtype = self._frozen_dtype()
        for m in (self.vae, self.text_encoder, self.text_encoder_2, self.text_encoder_3):
            if m is not None and m.dtype != dtype:
                m.to(dtype=dtype)
        if self.lora_config is not None and dtype != torch.float32:
            # Frozen base weights in half precision, the trained LoRA weights stay float32.
            for p in self.denoiser.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(dtype)
        for ref in self._ref:
            ref.to(device=self.device if self.hparams.reference_device == "same" else "cpu")
            if ref.dtype != dtype:
                ref.to(dtype=dtype)
        self.print(
            f"imgpref align: method={self.method} beta={self.beta} finetune={self.hparams.finetune} "
            f"reference={self.reference} prompt_dropout={self.hparams.prompt_dropout} (explicit option)"
            + (f" flow={self.flow} sigma_sampling={self.hparams.sigma_sampling} precondition_outputs="
               f"{self.hparams.precondition_outputs} loss_weighting={self.hparams.loss_weighting}" if self.flow else "")
        )

    def configure_optimizers(self):
        params = [p for _, p in self.trainable_named_parameters()]
        opt = torch.optim.AdamW(
            params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, betas=tuple(self.hparams.adam_betas)
        )
        warm = int(self.hparams.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm) if warm > 0 else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @contextmanager
    def _adapters_disabled(self):
        self.denoiser.disable_adapters()
        try:
            yield
        finally:
            self.denoiser.enable_adapters()

    # ----------------------------------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode_images(self, pixels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images in [-1, 1], [B, 3, H, W] -> scaled VAE latents (float32), sampled from the latent distribution."""
        vae = self.vae
        dist = vae.encode(pixels.to(device=self.device, dtype=vae.dtype)).latent_dist
        eps = torch.randn(dist.mean.shape, generator=generator, device=generator.device if generator else self.device)
        latents = dist.mean + dist.std * eps.to(device=dist.mean.device, dtype=dist.mean.dtype)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    def _conditioning(self, batch: dict, generator: torch.Generator | None) -> dict[str, Tensor]:
        if "encoder_hidden_states" in batch:  # precomputed text embeddings
            keys = ("encoder_hidden_states", "text_embeds", "pooled_projections", "txt_ids")
            cond = {k: batch[k] for k in keys if k in batch}
            if self.hparams.prompt_dropout > 0:
                raise ValueError("prompt_dropout needs prompts, not precomputed embeddings; set it to 0 or pass prompts")
            return {k: v.to(self.device) for k, v in cond.items()}
        prompts = list(batch["prompt"])
        p = float(self.hparams.prompt_dropout)
        if p > 0:
            drop = torch.rand(len(prompts), generator=generator) < p
            prompts = ["" if d else pr for pr, d in zip(prompts, drop.tolist())]
        return encode_prompts(self._pipe, prompts, self.device, max_sequence_length=self.hparams.max_sequence_length)

    # ----------------------------------------------------------------------------------------- the step
    def _unet_mse(self, unet, noisy, t, cond, time_ids, target) -> Tensor:
        kwargs = {}
        if self.sdxl:
            kwargs["added_cond_kwargs"] = {"text_embeds": cond["text_embeds"], "time_ids": time_ids}
        dev = next(unet.parameters()).device
        dtype = next(unet.parameters()).dtype
        mv = lambda x: x.to(device=dev, dtype=dtype) if torch.is_tensor(x) and x.is_floating_point() else x.to(dev)
        if dev != noisy.device and "added_cond_kwargs" in kwargs:
            kwargs["added_cond_kwargs"] = {k: mv(v) for k, v in kwargs["added_cond_kwargs"].items()}
        pred = unet(mv(noisy), t.to(dev), encoder_hidden_states=mv(cond["encoder_hidden_states"]), **kwargs).sample
        return per_sample_mse(pred.to(target.device), target)

    def _noise_and_time(self, shape: torch.Size, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """One noise [B, ...] and one timestep (UNet: integer t; flow: sigma) [B] per pair or list."""
        gen_dev = generator.device if generator is not None else self.device
        b = shape[0]
        noise = torch.randn(shape, generator=generator, device=gen_dev).to(self.device)
        if not self.flow:
            t = torch.randint(self.t_lo, self.t_hi, (b,), generator=generator, device=gen_dev)
            return noise, t.to(self.device)
        hp = self.hparams
        u = sample_flow_u(b, hp.sigma_sampling, logit_mean=hp.logit_mean, logit_std=hp.logit_std,
                          mode_scale=hp.mode_scale, generator=generator, device=gen_dev)
        sigma, _ = sigmas_from_u(u, self._sigmas.to(u.device), (self.t_lo, self.t_hi))
        return noise, sigma.to(self.device)

    def _errors(self, net, latents: Tensor, noise: Tensor, t: Tensor, cond: dict[str, Tensor],
                time_ids: Tensor | None) -> Tensor:
        """Per-sample denoising errors [N] of `net` (UNet: epsilon / v / sample MSE; flow: velocity error)."""
        if not self.flow:
            noisy = self.noise_scheduler.add_noise(latents, noise, t)
            target = diffusion_target(self.noise_scheduler, latents, noise, t)
            return self._unet_mse(net, noisy, t, cond, time_ids, target)
        noisy = flow_noisy(latents, noise, t)
        pred = transformer_velocity(net, self.flow, noisy, t * self.num_train_timesteps, cond,
                                    guidance=float(self.hparams.guidance)).to(latents.device)
        return flow_errors(pred, latents, noise, t, precondition_outputs=bool(self.hparams.precondition_outputs),
                           loss_weighting=self.hparams.loss_weighting)

    def _model_and_ref_errors(self, latents, noise, t, cond, time_ids, with_ref: bool) -> tuple[Tensor, Tensor | None]:
        err = self._errors(self.denoiser, latents, noise, t, cond, time_ids)
        if not with_ref:
            return err, None
        with torch.no_grad():
            if self._ref and self.hparams.reference_device == "same" and next(self._ref[0].parameters()).device != self.device:
                self._ref[0].to(self.device)  # moved by hand (module.to()) rather than by the Trainer
            if self._ref:
                ref = self._errors(self._ref[0], latents, noise, t, cond, time_ids)
            else:
                with self._adapters_disabled():
                    ref = self._errors(self.denoiser, latents, noise, t, cond, time_ids)
        return err, ref

    def pair_losses(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss and stats for one batch of pairs.

        batch: "pixels_w"/"pixels_l" ([B, 3, H, W] in [-1, 1]) or "latents_w"/"latents_l" (cached, scaled);
        "prompt" (list of str) or "encoder_hidden_states" (+ "text_embeds" for SDXL, "pooled_projections" for
        SD3 / FLUX, "txt_ids" for FLUX); for SDXL "time_ids_w" / "time_ids_l" [B, 6]; optional "weight" [B].
        """
        if "latents_w" in batch:
            lat_w, lat_l = batch["latents_w"].to(self.device).float(), batch["latents_l"].to(self.device).float()
        else:
            lat_w, lat_l = self.encode_images(batch["pixels_w"], generator), self.encode_images(batch["pixels_l"], generator)
        b = lat_w.shape[0]
        cond = self._conditioning(batch, generator)
        # One noise and one timestep (sigma) per pair, shared by winner and loser.
        noise, t = self._noise_and_time(lat_w.shape, generator)
        latents = torch.cat([lat_w, lat_l])
        noise2, t2 = torch.cat([noise, noise]), torch.cat([t, t])
        cond2 = repeat_conditioning(cond, 2, interleave=False)
        time_ids = None
        if self.sdxl:
            if "time_ids_w" not in batch:
                raise ValueError("SDXL training needs time_ids_w / time_ids_l in the batch (see imgpref.align.pairs_data)")
            time_ids = torch.cat([batch["time_ids_w"], batch["time_ids_l"]]).to(self.device)
        mse, ref_mse = self._model_and_ref_errors(latents, noise2, t2, cond2, time_ids, with_ref=self.method != "mapo")
        mse_w, mse_l = mse[:b], mse[b:]
        weight = batch.get("weight")
        weight = weight.to(self.device) if weight is not None else None
        if self.method == "mapo":
            return mapo_loss(mse_w, mse_l, beta=self.beta, s=self.hparams.mapo_s, T=self.mapo_T, weight=weight)
        ref_w, ref_l = ref_mse[:b], ref_mse[b:]
        if self.method == "dpo":
            return diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, beta=self.beta, weight=weight)
        if self.method == "rankdpo":  # a pair is a list of two with gains 1 (winner) and 0
            if weight is not None and bool((weight != 1).any()):
                raise ValueError("rankdpo on pairs takes no tie weights; set data.ties: drop, or train on lists "
                                 "(data.lists: true) where ties are equal gains")
            gains = torch.tensor([[1.0, 0.0]], device=self.device).expand(b, 2)
            return rankdpo_loss(torch.stack([mse_w, mse_l], 1), torch.stack([ref_w, ref_l], 1), gains, beta=self.beta)
        desirable = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(self.device)
        w2 = torch.cat([weight, weight]) if weight is not None else None
        return diffusion_kto_loss(mse, ref_mse, desirable, beta=self.beta, weight=w2)

    def list_losses(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """RankDPO loss and stats for one batch of ranked lists (`imgpref.align.lists`).

        batch: "latents" [B, K, C, h, w] (cached) or "pixels" [B, K, 3, H, W]; "gains" [B, K]; optional "valid"
        [B, K] (bool; padding of shorter lists); "prompt" (B strings) or precomputed embeddings; for SDXL
        "time_ids" [B, K, 6]. One noise and one timestep per list, shared by its K images.
        """
        if self.method != "rankdpo":
            raise ValueError(f"ranked lists need model.method 'rankdpo'; got {self.method!r} (train pairs instead)")
        gains = batch["gains"].to(self.device).float()
        b, k = gains.shape
        if "latents" in batch:
            lat = batch["latents"].to(self.device).float()
        else:
            px = batch["pixels"]
            z = self.encode_images(px.reshape(b * k, *px.shape[2:]), generator)
            lat = z.reshape(b, k, *z.shape[1:])
        cond = repeat_conditioning(self._conditioning(batch, generator), k, interleave=True)
        noise, t = self._noise_and_time(lat[:, 0].shape, generator)
        noise_k, t_k = noise.repeat_interleave(k, 0), t.repeat_interleave(k, 0)
        if self.sdxl and "time_ids" not in batch:
            raise ValueError("SDXL training needs time_ids [B, K, 6] in a list batch")
        time_ids = batch["time_ids"].reshape(b * k, -1).to(self.device) if self.sdxl else None
        err, ref = self._model_and_ref_errors(lat.reshape(b * k, *lat.shape[2:]), noise_k, t_k, cond, time_ids, True)
        valid = batch.get("valid")
        return rankdpo_loss(err.view(b, k), ref.view(b, k), gains, beta=self.beta,
                            valid=valid.to(self.device) if valid is not None else None)

    def _losses(self, batch: dict, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        return self.list_losses(batch, generator) if "gains" in batch else self.pair_losses(batch, generator)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, stats = self._losses(batch)
        b = len(batch["prompt"]) if "prompt" in batch else None
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"train/{k}": v.float() for k, v in stats.items()}, batch_size=b)
        self.log("train/prompt_dropout", float(self.hparams.prompt_dropout), batch_size=b)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # Fixed noise and timesteps per batch, so validation numbers are comparable across epochs.
        gen = torch.Generator().manual_seed(10_000 + batch_idx)
        loss, stats = self._losses(batch, generator=gen)
        b = len(batch["prompt"]) if "prompt" in batch else None
        self.log("val/loss", loss, prog_bar=True, batch_size=b)
        self.log_dict({f"val/{k}": v.float() for k, v in stats.items()}, batch_size=b)

    # ----------------------------------------------------------------------------------------- EMA + checkpoints
    def ema_decay_at(self, updates: int) -> float:
        """EMA decay for the update after `updates` earlier ones: min(ema_decay, (1 + n) / (10 + n)).

        The warm-up matters for short runs: with a constant 0.999 over 60 steps the average would stay within ~6%
        of the initial weights (for LoRA: B ~ 0, i.e. the base model) and the export would undo the training.
        """
        n = int(updates)
        return min(float(self.hparams.ema_decay), (1.0 + n) / (10.0 + n))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        decay = self.hparams.ema_decay
        if decay is None:
            return
        params = dict(self.trainable_named_parameters())
        if self._ema is None:
            self._ema = {n: p.detach().float().clone() for n, p in params.items()}
            self._ema_updates = 0
            return
        d = self.ema_decay_at(self._ema_updates)
        for n, p in params.items():
            self._ema[n].lerp_(p.detach().float(), 1.0 - d)
        self._ema_updates += 1

    @contextmanager
    def ema_weights(self):
        """Temporarily swap the EMA weights in (a no-op without EMA)."""
        if self._ema is None:
            yield
            return
        params = dict(self.trainable_named_parameters())
        saved = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self._ema[n].to(p.device, p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(saved[n])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {n for n, _ in self.trainable_named_parameters()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if self._ema is not None:
            checkpoint["imgpref_ema"] = {k: v.cpu() for k, v in self._ema.items()}
            checkpoint["imgpref_ema_updates"] = int(self._ema_updates)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        ema = checkpoint.get("imgpref_ema")
        self._ema = {k: v.to(self.device) for k, v in ema.items()} if ema is not None else None
        self._ema_updates = int(checkpoint.get("imgpref_ema_updates", 0))

    # ----------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seed: int = 0, num_inference_steps: int = 10, guidance_scale: float = 5.0,
                 use_ema: bool = True, **kwargs) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] from the current (or EMA) weights; one generator seeded by `seed`."""
        was_training = self.denoiser.training
        self.denoiser.eval()
        try:
            with self.ema_weights() if use_ema else _null():
                gen = torch.Generator(device="cpu").manual_seed(seed)
                out = self._pipe(list(prompts), num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                 generator=gen, output_type="pt", **kwargs)
        finally:
            self.denoiser.train(was_training)
        return out.images


@contextmanager
def _null():
    yield
