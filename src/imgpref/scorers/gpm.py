"""General Preference Model (GPM) math, shared by the GPM head (scorers) and the GPM loss (train).

Each item gets a vector v in R^{2k}; the preference logit of a over b is the skew-symmetric form
`s(a, b) = sum_l v_a[2l] v_b[2l+1] - v_a[2l+1] v_b[2l]`, and `P(a > b) = sigmoid(s(a, b))`. Because
s(a, b) = -s(b, a), the model can express cycles (rock-paper-scissors) that no scalar score can. Bradley-Terry is
the special case v = (r, 1): then s(a, b) = r_a - r_b.
"""
from __future__ import annotations

import torch
from torch import Tensor


def gpm_score(va: Tensor, vb: Tensor) -> Tensor:
    """General Preference Model: s(a, b) = sum_l va[2l] vb[2l+1] - va[2l+1] vb[2l]. Antisymmetric."""
    if va.shape[-1] % 2:
        raise ValueError(f"GPM vectors need an even dimension 2k; got {va.shape[-1]}")
    return (va[..., 0::2] * vb[..., 1::2] - va[..., 1::2] * vb[..., 0::2]).sum(-1)


def gpm_anchor(dim: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """The anchor vector u = (0, 1, 0, 1, ...) of dimension `dim`: s(a, u) = sum_l v_a[2l].

    Under the BT special case v = (r, 1) the anchor is "an item with r = 0", so s(a, u) = r_a exactly.
    """
    if dim % 2:
        raise ValueError(f"GPM vectors need an even dimension 2k; got {dim}")
    u = torch.zeros(dim, device=device, dtype=dtype)
    u[1::2] = 1
    return u
