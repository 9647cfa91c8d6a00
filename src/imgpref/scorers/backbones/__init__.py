"""Backbones: open_clip and transformers CLIP (the weight-free pixel measures live in `scorers.pixels`)."""
