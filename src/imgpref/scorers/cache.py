"""Embedding cache: image embeddings stored by content hash (blake2b of the file's bytes) and backbone key.

Layout: `DIR/<backbone slug>/<h[0:2]>/<h[2:4]>/<h>.npy`, one float32 vector per file, plus `DIR/<slug>/key.txt`
holding the full backbone key. The slug is the key made filesystem-safe plus a short hash of the exact key, so
two keys never share a folder. Each entry is written to a temporary file and renamed into place, so a reader
never sees a half-written entry and concurrent writers of the same entry are harmless (same bytes, last rename
wins). The two-level fan-out keeps folders small for millions of images.

The namespace ("key" here) is `imgpref.scorers.identity.embedding_namespace(backbone, ...)`: the backbone key
with a sha256 digest of its weights (for every backbone that carries its own weights), a hash of its
preprocessing, the decode size and the precision. So a cached embedding is valid for every head on that
backbone, two models of one architecture with different weights never read each other's entries, and the
training embedding cache (`imgpref.train.embed_cache`) and `imgpref score --cache` share entries.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
from imgpref.atomic import atomic_write

_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    """blake2b (128-bit) hex digest of the file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _slug(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80] or "key"
    return f"{safe}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"


class EmbeddingCache:
    """Per-backbone store of image embeddings keyed by file content hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--cache {self.root} is a file; pass a folder (it is created when missing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--cache {self.root}: cannot create the folder ({exc.strerror or exc})") from None
        self._known: set[str] = set()

    def _folder(self, key: str) -> Path:
        folder = self.root / _slug(key)
        if key not in self._known:
            folder.mkdir(parents=True, exist_ok=True)
            marker = folder / "key.txt"
            if not marker.exists():
                marker.write_text(key + "\n", encoding="utf-8")
            self._known.add(key)
        return folder

    def _entry(self, key: str, digest: str) -> Path:
        return self._folder(key) / digest[:2] / digest[2:4] / f"{digest}.npy"

    def get(self, key: str, digest: str) -> np.ndarray | None:
        """The cached embedding (float32 [D]) or None."""
        p = self._entry(key, digest)
        try:
            return np.load(p, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None  # missing, or damaged by a crash of another process: recompute

    def put(self, key: str, digest: str, emb: np.ndarray) -> None:
        """Store one embedding atomically (temp file + rename)."""
        with atomic_write(self._entry(key, digest)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.rglob("*.npy"))
