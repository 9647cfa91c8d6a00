"""Reference fidelity: in which precision each scorer runs by default on CUDA, and what `--fast` changes.

By default `imgpref score` reproduces each published scorer's reference code: full-size decoding, and on CUDA
the precision the reference ran in, declared by the preset as `ScorerInfo.extra["reference_precision"]`:

- "fp32": PickScore (`AutoModel.from_pretrained(...)`, float32);
- "fp16": HPSv2 (`precision='amp'`: float32 weights under `torch.cuda.amp.autocast()`, float16), the LAION
  aesthetic predictor and CLIPScore (OpenAI `clip.load` keeps float16 weights on CUDA). Here float16 means
  autocast to float16 over float32 weights (HPS exactly; the OpenAI-CLIP references cast the weights instead,
  which rounds the same matmuls at the same precision).
- "fp32" too: ImageReward (`ImageReward.load` keeps float32), Aesthetic Predictor V2.5 (its loader is float32;
  only its README example casts to bf16) and CLIP-IQA (this project's zero-shot preset; pyiqa is not reproduced).
- "bf16": HPSv3 (`HPSv3.safetensors` holds bf16 weights, which the reference runs as they are; its rm_head in fp32).

Scorers that declare nothing (trained scorer folders, pixel measures) run in float32. On the CPU everything
runs in float32. `--fast` (Python: `score_paths(..., fast=True)`) trades exactness for speed: reduced-size JPEG
decoding (`imgpref.data.images.load_image(draft_size=...)`) and bf16 autocast on CUDA (fp16 where bf16 is not
supported). An explicit `--precision` always wins.
"""
from __future__ import annotations

from typing import Sequence

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # bf16: HPSv3 (bf16 weights)


def reference_dtype(scorers: Sequence, device: torch.device | str) -> torch.dtype:
    """The dtype that reproduces the references of `scorers` (which share one backbone) on `device`.

    float32 on any device but CUDA; on CUDA the members' declared `reference_precision` when they agree,
    else float32 (the more exact choice when two references disagree or one declares nothing).
    """
    if torch.device(device).type != "cuda":
        return torch.float32
    declared = {str(s.info.extra.get("reference_precision", "fp32")) for s in scorers}
    if len(declared) != 1:
        return torch.float32
    name = declared.pop()
    if name not in PRECISIONS:
        raise ValueError(f"reference_precision {name!r} is not one of {sorted(PRECISIONS)}")
    return PRECISIONS[name]

