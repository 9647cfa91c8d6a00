"""notebooks/align_with_dpo.ipynb executes offline from top to bottom."""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "align_with_dpo.ipynb"


@pytest.mark.slow
def test_align_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "win rate" in text and "pairs from 8 prompts" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the before/after grid is shown
