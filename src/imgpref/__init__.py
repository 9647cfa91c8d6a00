"""imgpref: image aesthetics and text-to-image preference scoring, reward-model training, diffusion alignment.

The public API (re-exports only; heavy imports happen on first use):

    load_scorer, load_scorers, list_scorers, save_scorer   scorers (presets, folders, hf-hub:)
    score_paths                                             score files/folders -> one row per image x scorer
    score_dataset                                           score tables / WebDataset shards (local or Ray engine),
                                                            streamed to Parquet parts with shard/row resume
    Scorer, ScorerInfo, WeightsNotFoundError                the scorer contract
    read_manifest, write_manifest, validate_manifest        the canonical preference manifest
    evaluate                                                evaluation protocols -> metrics dict
    train                                                   reward-model training from a YAML recipe
    align                                                   Diffusion-DPO / MaPO alignment from a YAML recipe
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_scorer": "imgpref.scorers.registry",
    "load_scorers": "imgpref.scorers.registry",
    "list_scorers": "imgpref.scorers.registry",
    "save_scorer": "imgpref.scorers.folder",
    "score_paths": "imgpref.scorers.score_paths",
    "score_dataset": "imgpref.scorers.score_dataset",
    "Scorer": "imgpref.scorers.base",
    "ScorerInfo": "imgpref.scorers.base",
    "WeightsNotFoundError": "imgpref.scorers.weights",
    "register_head": "imgpref.scorers.heads",
    "read_manifest": "imgpref.data.manifest",
    "write_manifest": "imgpref.data.manifest",
    "validate_manifest": "imgpref.data.manifest",
    "evaluate": "imgpref.eval.evaluate",
    "train": "imgpref.train.run",
    "align": "imgpref.align.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: `import imgpref` stays fast (no torch/open_clip import) and the CLI starts quickly.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'imgpref' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
