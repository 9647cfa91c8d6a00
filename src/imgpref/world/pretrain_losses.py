"""Pretraining losses of the world's models as pure tensor functions (no Lightning, no models)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, caption_ids: Tensor) -> Tensor:
    """Symmetric CLIP InfoNCE with soft targets for repeated captions.

    The world repeats captions within a batch (a few hundred distinct prompts), so a one-hot target would push
    apart an image and another image's identical caption. Targets are therefore uniform over the batch items
    sharing the caption: row i of the target is `same[i] / same[i].sum()` with `same = ids[:, None] == ids`.
    Embeddings are L2-normalised here; logits = exp(logit_scale) * cos.
    """
    img = F.normalize(image_emb.float(), dim=-1)
    txt = F.normalize(text_emb.float(), dim=-1)
    logits = logit_scale.float().exp() * img @ txt.t()
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = same / same.sum(dim=1, keepdim=True)
    loss_i = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t = -(target * logits.t().log_softmax(dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) averaged over elements, per sample: [B, ...] -> [B]."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.reshape(kl.shape[0], -1).mean(dim=1)


def vae_loss(recon: Tensor, target: Tensor, mean: Tensor, logvar: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, reconstruction MSE, KL): mean squared error on pixels in [-1, 1] plus `kl_weight` * mean KL."""
    rec = (recon.float() - target.float()).pow(2).mean()
    kl = gaussian_kl(mean.float(), logvar.float()).mean()
    return rec + kl_weight * kl, rec, kl
