"""Sampling defaults shared by generation and the CLI (a torch-free module, so `imgpref --help` stays fast)."""

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
