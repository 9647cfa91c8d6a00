"""The tiny rendering recipe shrunk for tests: one place for the overrides the training tests share.

Importable from any test (pyproject's pytest `pythonpath` holds tests/)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_RENDERING = ROOT / "configs" / "train" / "tiny_rendering.yaml"


def small_overrides(model_name: str, *extra: str, batch_size: int = 16) -> list[str]:
    """`--set` overrides of TINY_RENDERING for tests: 32 px images, one vision block, a 1000-token vocabulary,
    under a model name of the test's own (each name registers its own open_clip config); `extra` come last."""
    return [f"scorer.backbone.model_name={model_name}",
            "scorer.backbone.model_config.vision_cfg.image_size=32",
            "scorer.backbone.model_config.vision_cfg.layers=1",
            "scorer.backbone.model_config.text_cfg.vocab_size=1000",
            f"data.batch_size={batch_size}", *extra]
