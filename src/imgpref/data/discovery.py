"""Recursive discovery of image files under files and folders.

Rules (what `imgpref score PATH...` sees):
- a folder is walked recursively; files whose extension (case-insensitive) is in `IMAGE_EXTENSIONS` are kept;
- a file named explicitly is always kept, whatever its extension (the user asked for it; if it is not an image
  the scoring run records that as its error);
- hidden files and folders (name starting with ".") inside walked folders are skipped;
- symbolic links are followed, but every real directory is visited once, so symlink loops terminate;
- the result is deterministic: each root's files sorted by their path relative to the root (as strings), roots
  in the order given, and a file reached twice (same path) is listed once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def is_image_file(path: str | Path) -> bool:
    """True if `path` has one of the `IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    # os.walk(followlinks=True) alone would loop forever on a link to an ancestor: prune by (device, inode).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not is_image_file(name):
                continue
            p = Path(dirpath) / name
            if p.is_file():  # skips dangling links
                found.append(p)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found


def discover_images(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Image files under `paths` (files and/or folders), in a deterministic order (see module docstring).

    Raises FileNotFoundError naming the first path that does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{raw}: no such file or folder (pass image files or folders of images)")
        files = _walk(p) if p.is_dir() else [p]
        for f in files:
            k = os.path.normpath(str(f))
            if k not in seen:
                seen.add(k)
                out.append(f)
    return out
