"""imgpref: image aesthetics and text-to-image preference scoring, reward-model training, diffusion alignment."""
from __future__ import annotations

__version__ = "0.1.0"
