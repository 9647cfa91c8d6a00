"""Re-execute the worked-example notebooks in place, so the committed files show their outputs and figures.

    python scripts/run_notebooks.py                      # every notebooks/*.ipynb
    python scripts/run_notebooks.py notebooks/align_with_dpo.ipynb

Each notebook runs top to bottom in a kernel of this interpreter (offline, one thread, the notebook's own default
parameters), with its work folder under a temporary directory. Outputs are made reproducible before saving: the
temporary work folder and the repository path are replaced by `<work>` and `<repo>`, stderr streams (progress
bars, library notices) and execution timestamps are dropped, execution counts run 1, 2, ... Figures stay
embedded as PNG. tests/*/test_*_notebook.py re-execute the notebooks and compare the key numbers with what is saved.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNEL = "imgpref-notebooks"
MAX_BYTES = 1_500_000  # a committed notebook should stay small: figures at modest dpi, no image dumps


def kernelspec(root: Path) -> str:
    """A kernelspec running *this* interpreter (the project's venv), in a private JUPYTER_PATH."""
    spec = root / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (imgpref)", "language": "python",
    }))
    os.environ["JUPYTER_PATH"] = str(root / "jupyter")  # execute() restores it afterwards
    return KERNEL


def scrub(nb, replacements: dict[str, str]) -> None:
    """Make the saved outputs independent of where and when the notebook ran."""
    def clean(text: str) -> str:
        for old, new in replacements.items():
            text = text.replace(old, new)
        return text

    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        count += 1
        cell.execution_count = count
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if out.get("name") == "stderr":
                    continue
                out["text"] = clean(out["text"])
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    out["data"][mime] = clean(value)
            if "execution_count" in out:
                out["execution_count"] = count
            kept.append(out)
        cell.outputs = kept


def stream_text(nb) -> str:
    """Everything the code cells printed to stdout, in order (what the notebook tests read numbers from)."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def execute(path: Path, work: Path, env: dict[str, str] | None = None, timeout: int = 1800):
    """Run notebook `path` top to bottom with its work folder at `work`; returns the executed, scrubbed notebook
    (the file is not written). env: extra environment variables for the kernel (e.g. smaller parameters)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    settings = {"IMGPREF_NB_WORK": str(work), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0",
                "IMGPREF_NB_SCENES": None, "IMGPREF_NB_EPOCHS": None, "JUPYTER_PATH": None, **(env or {})}
    saved = {k: os.environ.get(k) for k in settings}
    try:
        for k, v in settings.items():  # the kernel inherits this process's environment
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with tempfile.TemporaryDirectory(prefix="imgpref-kernel-") as tmp:
            client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernelspec(Path(tmp)),
                                             record_timing=False,
                                             resources={"metadata": {"path": str(path.parent)}})
            client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    scrub(nb, {str(work.resolve()): "<work>", str(work): "<work>", str(REPO): "<repo>"})
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def run(path: Path) -> float:
    """Execute `path` with its default parameters and save it in place; returns the seconds it took."""
    import nbformat

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imgpref-nb-") as tmp:
        nb = execute(path, Path(tmp) / "work")
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size / 1e6:.1f} MB after execution, over {MAX_BYTES / 1e6:.1f} MB; "
                         "lower the figures' dpi or show fewer images")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))
    for p in paths:
        if not p.is_file():
            print(f"error: {p} is not a notebook file", file=sys.stderr)
            return 2
    for p in paths:
        seconds = run(p.resolve())
        print(f"{p}: executed in {seconds:.0f} s, {p.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
