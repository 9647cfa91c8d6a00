"""Suite-wide guards: no test may reach a model hub, whoever runs pytest and however; in CI no test may skip.

The hub variables are set before any test module imports huggingface_hub / transformers / diffusers (they read these at import).
"""
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------------------------------------- no hidden skips
# CI (scripts/test.sh, .ci/run) sets IMGPREF_REQUIRE_ALL=1: then a test that skips (a missing browser, package
# or optional module) FAILS with its skip reason, so a green CI run means every test ran. Without the variable
# (a developer's machine lacking Chromium, say) skips stay skips. Expected failures (xfail) are left alone.
REQUIRE_ALL_ENV = "IMGPREF_REQUIRE_ALL"


def require_all() -> bool:
    """True when every test must run (no skips allowed): IMGPREF_REQUIRE_ALL set to anything but '' or '0'."""
    return os.environ.get(REQUIRE_ALL_ENV, "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and require_all():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_ALL_ENV}=1 forbids skips (every test must run in CI): {reason}"


# ---------------------------------------------------------------------------------------------- shared builders
def write_light_dark_pairs(folder, n: int = 4, tie: bool = True):
    """n preference rows "bright image beats dark image" (prompt "photo i"; non-square 40x48 / 48x40 noise
    images), plus one tied row when `tie`; returns the manifest path (folder/m.csv). For tiny align runs."""
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((40, 48, 3)) * 60 + 190).astype("uint8")).save(folder / f"b{i}.png")
        Image.fromarray((rng.random((48, 40, 3)) * 60).astype("uint8")).save(folder / f"d{i}.png")
        rows.append({"image_0": f"d{i}.png", "image_1": f"b{i}.png", "votes_0": 0, "votes_1": 1, "votes_tie": 0,
                     "prompt": f"photo {i}"})
    if tie:
        rows.append({"image_0": "b0.png", "image_1": "d0.png", "votes_0": 0, "votes_1": 0, "votes_tie": 1,
                     "prompt": "t"})
    pd.DataFrame(rows).to_csv(folder / "m.csv", index=False)
    return folder / "m.csv"


@pytest.fixture
def light_dark_pairs():
    """`write_light_dark_pairs(folder, n=4, tie=True) -> manifest` (conftest modules cannot be imported by name)."""
    return write_light_dark_pairs


@pytest.fixture(scope="session")
def notebook_runner():
    """scripts/run_notebooks.py as a module (`execute`, `stream_text`): the notebook tests run a notebook exactly
    as the script that saves them does."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "run_notebooks.py"
    spec = importlib.util.spec_from_file_location("run_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
