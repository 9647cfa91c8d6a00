"""Score the images of a manifest: each distinct (image, prompt) once, in batches, bad files reported."""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image


def image_id(value: Any) -> str:
    """A stable id for an image cell: the path string, or a content hash for embedded bytes."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "sha1:" + hashlib.sha1(bytes(value)).hexdigest()
    return str(value)


def load_rgb(value: Any) -> Image.Image:
    """Open a path (via imgpref.data.images.load_image: upright, RGB, bomb-checked) or encoded bytes as RGB."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(value))) as im:
            im.load()
            return im.convert("RGB")
    from imgpref.data.images import load_image

    return load_image(str(value))


@dataclass
class PairScores:
    """Scores of both sides of every manifest row (NaN where an image could not be scored)."""

    s0: np.ndarray
    s1: np.ndarray
    id0: np.ndarray  # image ids (str) of image_0 / image_1
    id1: np.ndarray
    errors: list[dict[str, str]] = field(default_factory=list)
    # with outputs=True: the head's per-item outputs of both sides [P, m] (`item_outputs`; NaN rows unreadable)
    o0: np.ndarray | None = None
    o1: np.ndarray | None = None

    @property
    def ok(self) -> np.ndarray:
        return np.isfinite(self.s0) & np.isfinite(self.s1)


def item_outputs_of(scorer, images: list, prompts: list[str] | None) -> torch.Tensor:
    """`imgpref.scorers.pref_heads.item_outputs` of PIL images [B, m] (GPM vectors, pluralistic prototype
    rewards, or the scalar score as one column), in eval mode without gradients."""
    from imgpref.scorers.pref_heads import item_outputs

    was = scorer.training
    scorer.eval()
    try:
        with torch.no_grad():
            pixels = torch.stack([scorer.preprocess(im) for im in images]).to(scorer.device)
            dtype = next((p.dtype for p in scorer.backbone.parameters()), torch.float32)
            img = scorer.embed_images(pixels.to(dtype) if pixels.is_floating_point() else pixels)
            txt = scorer.embed_texts(list(prompts)) if scorer.head.needs_text and prompts is not None else None
            return item_outputs(scorer.head, img, txt).float()
    finally:
        scorer.train(was)


def score_pairs(scorer, df: pd.DataFrame, batch_size: int = 32, progress: bool = False,
                outputs: bool = False) -> PairScores:
    """Score `image_0`/`image_1` of every row of a manifest frame with `scorer.score`.

    Each distinct image (with its prompt, for prompt-conditioned scorers) is scored once. Scores are returned
    as the scorer gives them (no sign flip). An unreadable image gets NaN and an error record; the rest go on.
    With `outputs=True` (imgpref Scorers only) the head's per-item outputs are kept too (`PairScores.o0/o1`),
    from which pairwise (GPM) and per-annotator (pluralistic) logits follow; `s0`/`s1` are then the outputs'
    first column (a placeholder for heads without a per-item score).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    needs_prompt = bool(getattr(scorer, "needs_prompt", False))
    prompts = df["prompt"].astype(str).tolist() if "prompt" in df.columns else [""] * len(df)
    if needs_prompt and any(p == "" for p in prompts):
        raise ValueError(f"scorer {scorer.name!r} needs prompts but some manifest rows have an empty 'prompt'")
    id0 = np.array([image_id(v) for v in df["image_0"]], dtype=object)
    id1 = np.array([image_id(v) for v in df["image_1"]], dtype=object)
    keys: dict[tuple[str, str], int] = {}
    todo: list[tuple[Any, str]] = []
    for col, ids in (("image_0", id0), ("image_1", id1)):
        for value, iid, prompt in zip(df[col], ids, prompts):
            key = (iid, prompt if needs_prompt else "")
            if key not in keys:
                keys[key] = len(todo)
                todo.append((value, key[1]))
    scores = np.full(len(todo), np.nan)
    outs: np.ndarray | None = None
    errors: list[dict[str, str]] = []
    starts = range(0, len(todo), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(len(todo) / batch_size), desc="scoring", unit="batch")
    for start in starts:
        chunk = list(range(start, min(start + batch_size, len(todo))))
        images, good = [], []
        for k in chunk:
            try:
                images.append(load_rgb(todo[k][0]))
                good.append(k)
            except Exception as exc:  # any decoder error: report it and score the rest
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                errors.append({"image": image_id(todo[k][0]), "reason": str(reason)})
        if not good:
            continue
        batch_prompts = [todo[k][1] for k in good] if needs_prompt else None
        if outputs:
            o = item_outputs_of(scorer, images, batch_prompts).cpu().numpy()
            if outs is None:
                outs = np.full((len(todo), o.shape[1]), np.nan)
            outs[good] = o
            scores[good] = o[:, 0]
            continue
        with torch.no_grad():
            out = scorer.score(images, batch_prompts)
        scores[good] = torch.as_tensor(out).detach().float().cpu().numpy().reshape(-1)
    r0 = np.array([keys[(i, p if needs_prompt else "")] for i, p in zip(id0, prompts)], dtype=np.int64)
    r1 = np.array([keys[(i, p if needs_prompt else "")] for i, p in zip(id1, prompts)], dtype=np.int64)
    s0, s1 = scores[r0].astype(np.float64), scores[r1].astype(np.float64)
    if outputs:
        if outs is None:  # nothing readable
            outs = np.full((len(todo), 1), np.nan)
        return PairScores(s0, s1, id0, id1, errors, outs[r0], outs[r1])
    return PairScores(s0, s1, id0, id1, errors)


GPM_RANKINGS = ("borda",)


def gpm_borda_scores(table: pd.DataFrame, scorer, batch_size: int = 32) -> pd.DataFrame:
    """Replace the `score` of `scorer`'s rows of a score table (path, scorer, score, prompt, error) by the
    Borda score of each image within its folder: its mean probability sigmoid(bt_scale * s(a, b)) of beating
    each other image of the same folder (and prompt), `imgpref.scorers.pref_heads.borda_scores`.

    This is how `imgpref score --gpm-ranking borda` ranks images with a pairwise (GPM) head, which has no
    identifiable per-image score. It depends on the set: adding an image to a folder changes the others' values.
    Images are read again for the head's preference vectors; rows with an error keep NaN.
    """
    import os

    from imgpref.data.images import load_image
    from imgpref.scorers.pref_heads import borda_scores

    out = table.copy()
    rows = out.index[(out["scorer"] == scorer.name) & out["error"].isna()
                     & np.isfinite(pd.to_numeric(out["score"], errors="coerce"))]
    prompts = out["prompt"] if "prompt" in out.columns else pd.Series("", index=out.index)
    where = "abs_path" if "abs_path" in out.columns else "path"
    key = [(os.path.dirname(str(out.at[r, where])), str(prompts.at[r] or "") if scorer.needs_prompt else "")
           for r in rows]
    scale = float((scorer.info.extra or {}).get("bt_scale", 1.0))
    for k in sorted(set(key)):
        members = [r for r, kk in zip(rows, key) if kk == k]
        vecs = []
        for start in range(0, len(members), batch_size):
            part = members[start:start + batch_size]
            images = [load_image(str(out.at[r, where])) for r in part]
            vecs.append(item_outputs_of(scorer, images, [k[1]] * len(part) if scorer.needs_prompt else None))
        with torch.no_grad():
            b = borda_scores(scorer.head, torch.cat(vecs), scale=scale).double().numpy()
        out.loc[members, "score"] = b
    out.attrs = dict(table.attrs)
    return out
