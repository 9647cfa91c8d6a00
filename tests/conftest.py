"""Suite-wide guard: no test may reach a model hub, whoever runs pytest and however.

Set before any test module imports huggingface_hub / transformers / diffusers (they read these at import).
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
