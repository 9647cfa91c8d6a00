"""Reading prompt lists for pair generation and evaluation: .txt (one per line), CSV or JSONL with `prompt`."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_prompts(path: str | Path) -> list[str]:
    """Read prompts from a .txt file (one per non-empty line), or a CSV / JSONL / Parquet file with a `prompt` column.

    Blank prompts are skipped (they would silently become unconditional generations); order is kept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist; pass a .txt, .csv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".prompts", ""):
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    elif suffix in (".csv", ".tsv", ".jsonl", ".json", ".parquet"):
        if suffix == ".csv":
            df = pd.read_csv(path, keep_default_na=False)
        elif suffix == ".tsv":
            df = pd.read_csv(path, sep="\t", keep_default_na=False)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix == ".jsonl":
            df = pd.DataFrame([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()])
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list) and all(isinstance(x, str) for x in data):
                df = pd.DataFrame({"prompt": data})
            else:
                df = pd.DataFrame(data)
        if "prompt" not in df.columns:
            raise ValueError(
                f"prompts file {str(path)!r} has no 'prompt' column (columns: {list(df.columns)}); "
                "rename the prompt column to 'prompt' or use a .txt file with one prompt per line"
            )
        prompts = ["" if v is None else str(v).strip() for v in df["prompt"].tolist()]
    else:
        raise ValueError(f"prompts file {str(path)!r}: unknown suffix {suffix!r}; use .txt, .csv, .jsonl or .parquet")
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ValueError(f"prompts file {str(path)!r} holds no non-empty prompt")
    return prompts


_COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown")
_OBJECTS = ("cat", "dog", "car", "house", "tree", "boat", "bird", "flower", "chair", "mountain")


def demo_prompts(n: int, *, seed: int = 0, offset: int = 0) -> list[str]:
    """`n` short prompts ("a red cat", ...) from a fixed shuffled list of 100, starting at `offset`.

    For the offline demo, notebook, tests and benchmarks: disjoint slices (offset) give train / held-out sets.
    """
    import random

    allp = [f"a {c} {o}" for c in _COLORS for o in _OBJECTS]
    random.Random(seed).shuffle(allp)
    if offset < 0 or n < 1 or offset + n > len(allp):
        raise ValueError(f"need 1 <= n and offset + n <= {len(allp)}; got n={n}, offset={offset}")
    return allp[offset : offset + n]
