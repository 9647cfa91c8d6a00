"""Array views of a canonical manifest for training and evaluation code."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class PairArrays:
    """A manifest as index arrays: each distinct image appears once in `images`."""

    images: list[Any]          # absolute path strings or bytes, in order of first appearance
    idx0: np.ndarray           # int64 [P]: index into `images` of image_0
    idx1: np.ndarray           # int64 [P]
    votes: np.ndarray          # int64 [P, 3]: votes_0, votes_1, votes_tie
    groups: np.ndarray         # int64 [P]: code into `group_names`
    group_names: list[str]


def image_key(value: Any) -> str:
    """A hashable identity for an image cell: the path string, or a content hash for bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha1:" + hashlib.sha1(bytes(value)).hexdigest()
    return str(value)


def pairs_to_arrays(df: pd.DataFrame) -> PairArrays:
    """Index the images of a manifest (as returned by read_manifest) so each is embedded once."""
    index: dict[str, int] = {}
    images: list[Any] = []

    def code(value: Any) -> int:
        key = image_key(value)
        if key not in index:
            index[key] = len(images)
            images.append(value)
        return index[key]

    idx0 = np.array([code(v) for v in df["image_0"]], dtype=np.int64)
    idx1 = np.array([code(v) for v in df["image_1"]], dtype=np.int64)
    votes = df[["votes_0", "votes_1", "votes_tie"]].to_numpy(dtype=np.int64).reshape(-1, 3)
    if "group" in df.columns:
        codes, names = pd.factorize(pd.Series(df["group"], dtype=object).astype(str), sort=False)
        groups, group_names = codes.astype(np.int64), [str(n) for n in names]
    else:
        groups, group_names = np.arange(len(df), dtype=np.int64), [str(i) for i in range(len(df))]
    return PairArrays(images, idx0, idx1, votes, groups, group_names)


def majority_label(votes: np.ndarray) -> np.ndarray:
    """1.0 where image_0 has the majority (ties count half), 0.0 where image_1 does, 0.5 when even."""
    votes = np.asarray(votes, dtype=np.float64).reshape(-1, 3)
    q = (votes[:, 0] + 0.5 * votes[:, 2]) / votes.sum(axis=1)
    return np.where(q > 0.5, 1.0, np.where(q < 0.5, 0.0, 0.5))
