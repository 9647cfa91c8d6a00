"""Scorers: a backbone (open_clip / transformers CLIP / pixel statistics) + a head, presets, scorer folders.

Main entry points: `load_scorer`, `load_scorers`, `list_scorers`, `save_scorer`, `score_with_shared_backbones`.
"""
from __future__ import annotations

from imgpref.scorers.base import Backbone, Head, Scorer, ScorerInfo, check_unit_range
from imgpref.scorers.folder import load_scorer_folder, save_scorer
from imgpref.scorers.heads import (CosineHead, LaionAestheticHead, LinearHead, MLPHead, build_head, register_head,
                                   registered_heads)
from imgpref.scorers.multi import backbone_groups, score_with_shared_backbones
from imgpref.scorers.registry import get_preset, list_scorers, load_scorer, load_scorers, register_preset
from imgpref.scorers.weights import WeightsNotFoundError

__all__ = [
    "Backbone", "Head", "Scorer", "ScorerInfo", "check_unit_range", "load_scorer_folder", "save_scorer",
    "CosineHead", "LaionAestheticHead", "LinearHead", "MLPHead", "build_head", "register_head", "registered_heads",
    "backbone_groups", "score_with_shared_backbones", "get_preset", "list_scorers", "load_scorer", "load_scorers",
    "register_preset", "WeightsNotFoundError",
]
