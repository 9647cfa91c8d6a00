"""Which prompt goes with which image.

Three sources, highest precedence first (the first one that has a prompt for an image wins):

1. an explicit prompt (`--prompt TEXT`, `prompt=`): the same prompt for every image;
2. a prompts file (`--prompts FILE`, `prompts=`): CSV or JSONL, one row per image, with a path column named
   `path`, `file` or `image` and a `prompt` column. A path in it may be
   - absolute;
   - relative, resolved against the folder that holds the prompts file (e.g. `sub/cat.png`);
   - a bare file name (`cat.png`), which also matches an image of that name in any folder, as long as the
     name is unambiguous (two rows with the same bare name and different prompts are an error);
3. a sidecar text file beside the image with the same stem (`img.png` -> `img.txt`), as many generators
   write; its whole content, stripped of surrounding whitespace, is the prompt.

An empty prompt counts as none (the next source is tried). An image with no prompt from any source gets `None`;
prompt-free scorers score it, prompt-conditioned scorers record an error for it.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterable

PATH_COLUMNS = ("path", "file", "image")
PROMPT_COLUMN = "prompt"


def _norm(p: str | Path) -> str:
    return os.path.normcase(os.path.abspath(os.path.normpath(str(p))))


def _rows(path: Path) -> Iterable[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {i}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise ValueError(f"{path}, line {i}: expected a JSON object with path and prompt")
                yield i, row
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            for i, row in enumerate(reader, start=2):
                yield i, row
    else:
        raise ValueError(f"prompts file {path}: unsupported extension {suffix!r}; use .csv, .tsv or .jsonl")


class PromptFile:
    """A prompts file: image path -> prompt (see the module docstring for how paths match)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        base = self.path.resolve().parent
        self.by_path: dict[str, str] = {}
        self.by_name: dict[str, str | None] = {}  # None marks an ambiguous bare name
        for line, row in _rows(self.path):
            col = next((c for c in PATH_COLUMNS if c in row), None)
            if col is None or PROMPT_COLUMN not in row:
                raise ValueError(
                    f"{self.path}, row {line}: needs a path column ({'/'.join(PATH_COLUMNS)}) and a "
                    f"'{PROMPT_COLUMN}' column; found {sorted(row)}"
                )
            raw, prompt = row[col], row[PROMPT_COLUMN]
            if raw is None or str(raw).strip() == "":
                raise ValueError(f"{self.path}, row {line}, column {col!r}: empty path")
            prompt = "" if prompt is None else str(prompt)
            raw = str(raw).strip()
            p = Path(raw).expanduser()
            self.by_path[_norm(p if p.is_absolute() else base / p)] = prompt
            if not p.is_absolute() and len(p.parts) == 1:
                old = self.by_name.get(p.name, prompt)
                self.by_name[p.name] = prompt if (p.name not in self.by_name or old == prompt) else None

    def get(self, image: str | Path) -> str | None:
        """The prompt for `image`, or None if the file has none for it."""
        hit = self.by_path.get(_norm(image))
        if hit is not None:
            return hit
        name = Path(image).name
        if name in self.by_name:
            value = self.by_name[name]
            if value is None:
                raise ValueError(
                    f"{self.path}: bare file name {name!r} appears in several rows with different prompts; "
                    "write those rows with paths relative to the prompts file"
                )
            return value
        return None


def sidecar_prompt(image: str | Path) -> str | None:
    """The content of `<image stem>.txt` beside the image (stripped), or None if there is none."""
    txt = Path(image).with_suffix(".txt")
    if not txt.is_file():
        return None
    try:
        return txt.read_text(encoding="utf-8-sig", errors="replace").strip()
    except OSError:
        return None


class PromptResolver:
    """Prompt for each image: explicit `prompt` > `prompts` file > sidecar `.txt` (> None)."""

    def __init__(self, prompt: str | None = None, prompts: str | Path | PromptFile | dict | None = None,
                 sidecar: bool = True):
        if prompt is not None and prompts is not None:
            raise ValueError("pass either a single prompt (--prompt) or a prompts file (--prompts), not both")
        self.prompt = prompt
        if isinstance(prompts, dict):
            self.table: dict[str, str] | None = {_norm(k): str(v) for k, v in prompts.items()}
            self.file = None
        else:
            self.table = None
            self.file = prompts if isinstance(prompts, PromptFile) or prompts is None else PromptFile(prompts)
        self.sidecar = sidecar

    def __call__(self, image: str | Path) -> str | None:
        if self.prompt:
            return self.prompt
        if self.table is not None:
            hit = self.table.get(_norm(image))
            if hit:
                return hit
        if self.file is not None:
            hit = self.file.get(image)
            if hit:
                return hit
        return (sidecar_prompt(image) or None) if self.sidecar else None
