"""Execute notebooks/train_aesthetic_scorer.ipynb end to end (offline, small parameters) and check its outputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_aesthetic_scorer.ipynb"
KERNEL = "imgpref-test-python"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs *this* interpreter (the project's .venv), whatever other kernels are installed.

    Written to a temporary JUPYTER_PATH so nothing is installed into the user's Jupyter folders.
    """
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "imgpref test (current interpreter)",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


@pytest.mark.slow
def test_train_notebook_runs_offline(tmp_path, monkeypatch, kernel_name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    work = tmp_path / "work"
    monkeypatch.setenv("IMGPREF_NB_SCENES", "10")
    monkeypatch.setenv("IMGPREF_NB_EPOCHS", "2")
    monkeypatch.setenv("IMGPREF_NB_WORK", str(work))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tiny model gains nothing from threads on a shared machine
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=600,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()

    # every step left its artefact
    assert (work / "synth" / "manifest.csv").is_file()
    assert (work / "run" / "scorer.yaml").is_file() and (work / "run" / "model.safetensors").is_file()
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["protocol"] == "votes" and metrics["split"] == "test"
    assert metrics["n_pairs"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    html = (work / "report.html").read_text()
    assert "<html" in html.lower() and "tiny-rendering" in html
    import pandas as pd

    scores = pd.read_csv(work / "scores.csv")
    assert len(scores) > 0 and scores["score"].notna().all()
    assert scores["path"].str.contains("/images/scene_").all()
    # the last cell printed the GPM head's accuracy
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    assert "GPM head on cached embeddings: test accuracy" in last
