"""Shared fixtures: tiny checkpoints in each published layout, an offline empty HF cache, small test images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def offline_hf(tmp_path_factory, monkeypatch):
    """Every test runs offline with an empty Hugging Face cache: nothing can download."""
    cache = tmp_path_factory.getbasetemp() / "hf-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Three real photos of different aspect ratios (landscape, portrait, square-ish)."""
    a = Image.fromarray(data.astronaut()).resize((96, 64))
    c = Image.fromarray(data.chelsea()).resize((50, 80))
    r = Image.fromarray(data.coffee()).resize((70, 66))
    return [a, c, r]


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return ["an astronaut in a white suit", "a ginger cat", "a cup of coffee on a table"]


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    from imgpref.scorers import tiny_checkpoints as tc

    root = tmp_path_factory.mktemp("ckpts")
    return {
        "pickscore": tc.write_tiny_pickscore(root / "pickscore", seed=1),
        "hpsv2": tc.write_tiny_hps_checkpoint(root / "hps" / "HPS_v2_compressed.pt", seed=2),
        "hpsv2.1": tc.write_tiny_hps_checkpoint(root / "hps21" / "HPS_v2.1_compressed.pt", seed=3, wrapped=False),
        "open_clip": tc.write_tiny_open_clip_weights(root / "oc" / "open_clip_pytorch_model.bin", seed=4),
        "laion_head": tc.write_tiny_laion_head(root / "laion" / "sac+logos+ava1-l14-linearMSE.pth", 32, seed=5),
    }



@pytest.fixture(scope="module")
def hpsv3_tiny(tmp_path_factory):
    """The tiny HPSv3 checkpoint of test_parity_hpsv3 (folder, reference model, rm_head, tokenizer), for other
    test files (its builder lives there, beside the reference computation it feeds)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_parity_hpsv3", Path(__file__).with_name("test_parity_hpsv3.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny.__wrapped__(tmp_path_factory)
