"""Fixtures for report and compare tests: small real image files and a score table with a failure row."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data as skdata

# name -> (skimage loader, file name). Sizes differ so thumbnail geometry is checked on non-square images.
_SOURCES = {
    "astronaut": (skdata.astronaut, "astronaut.png"),
    "chelsea": (skdata.chelsea, "cats/chelsea.jpg"),
    "coffee": (skdata.coffee, "coffee.jpg"),
    "camera": (skdata.camera, "camera.png"),
    "rocket": (skdata.rocket, "rocket.jpg"),
}
BAD_NAME = "broken <file>.png"
BAD_REASON = "cannot identify image file (0 bytes)"
XSS_PROMPT = 'a cat <script>alert("x")</script> & "friends"'


def write_images(folder: Path, names=tuple(_SOURCES), scale: float = 0.5) -> dict[str, Path]:
    """Write the named skimage photos (downscaled by `scale`) under `folder`; returns name -> path."""
    out = {}
    for name in names:
        load, rel = _SOURCES[name]
        arr = load()
        im = Image.fromarray(arr)
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.Resampling.BILINEAR)
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p, quality=90) if p.suffix == ".jpg" else im.save(p)
        out[name] = p
    return out


@pytest.fixture
def image_writer():
    """`write_images(folder, names=..., scale=...)` (pytest's importlib mode cannot import conftest by name)."""
    return write_images


@pytest.fixture
def scored(tmp_path: Path) -> dict:
    """A score_paths-style table: 5 good images x 2 scorers + 1 zero-byte file that failed for both scorers."""
    folder = tmp_path / "imgs"
    paths = write_images(folder)
    bad = folder / BAD_NAME
    bad.write_bytes(b"")
    rng = np.random.default_rng(0)
    rows = []
    names = list(paths)
    sharp = dict(zip(names, [5.0, 1.0, 3.0, 4.0, 2.0]))
    noise = dict(zip(names, rng.uniform(0.01, 0.2, len(names)).round(4)))
    for name, p in paths.items():
        prompt = XSS_PROMPT if name == "chelsea" else f"a photo of {name}"
        rows.append({"path": str(p), "scorer": "sharpness", "score": sharp[name], "prompt": prompt, "error": ""})
        rows.append({"path": str(p), "scorer": "noise", "score": noise[name], "prompt": prompt, "error": ""})
    for s in ("sharpness", "noise"):
        rows.append({"path": str(bad), "scorer": s, "score": float("nan"), "prompt": "", "error": BAD_REASON})
    return {
        "bad_name": BAD_NAME,
        "bad_reason": BAD_REASON,
        "xss_prompt": XSS_PROMPT,
        "df": pd.DataFrame(rows),
        "paths": paths,
        "bad": bad,
        "sharp": sharp,
        "noise": noise,
        "directions": {"sharpness": True, "noise": False},
        "folder": folder,
    }
