"""Add a new annotator to a pluralistic scorer from a few of their pairs (the API of `imgpref annotator fit`).

Only the new annotator's K mixture weights are estimated (`pref_heads.fit_new_annotator`); prototypes, backbone
and the other annotators stay as they are. By default the population mixture (what unknown annotators and
`imgpref score` without `--annotator` get) keeps being the mean over the earlier annotators, so adding someone
never moves everyone's default score; `include_in_population=True` makes the new annotator count too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from imgpref.scorers.pref_heads import PluralisticHead, fit_new_annotator


def _embed(scorer, paths: list[str], batch_size: int) -> Tensor:
    from imgpref.data.images import load_image

    out = []
    with torch.no_grad():
        for k in range(0, len(paths), batch_size):
            px = torch.stack([scorer.preprocess(load_image(p)) for p in paths[k:k + batch_size]]).to(scorer.device)
            out.append(scorer.embed_images(px).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def fit_annotator(scorer, manifest: str | Path, name: str, *, include_in_population: bool = False,
                  split: str | None = None, l2: float = 0.01, batch_size: int = 32) -> dict[str, Any]:
    """Fit annotator `name`'s mixture weights on the pairs of `manifest` and add them to `scorer`'s head.

    Uses the manifest rows of `split` (all rows when None), and among them the rows whose `annotator` is `name`
    when there are any (otherwise every row counts as `name`'s). Prompt-conditioned heads are not supported
    here (ValueError). Returns {"annotator", "weights", "n_pairs", "population_annotators"}.
    """
    from imgpref.data.manifest import read_manifest

    head = scorer.head
    if not isinstance(head, PluralisticHead):
        raise ValueError(f"scorer {scorer.name!r} has a {head.describe().get('type')!r} head; fitting an annotator "
                         "needs a pluralistic head (scorer.head: {type: pluralistic})")
    if head.needs_text:
        raise ValueError("annotator fit supports prompt-free pluralistic heads only")
    name = str(name)
    if not name:
        raise ValueError("--name must be a non-empty annotator name")
    if name in head.annotators:
        raise ValueError(f"annotator {name!r} is already known to the scorer; pick another --name")
    df = read_manifest(manifest)
    if split is not None:
        df = df[df["split"].astype(str) == split]
    if "annotator" in df.columns and (df["annotator"].astype(str) == name).any():
        df = df[df["annotator"].astype(str) == name]
    if df.empty:
        raise ValueError(f"manifest {manifest} has no pairs to fit annotator {name!r}"
                         + (f" in split {split!r}" if split else ""))
    images = sorted(set(map(str, df["image_0"])) | set(map(str, df["image_1"])))
    emb = _embed(scorer, images, batch_size)
    row = {p: k for k, p in enumerate(images)}
    e0 = emb[[row[str(p)] for p in df["image_0"]]]
    e1 = emb[[row[str(p)] for p in df["image_1"]]]
    votes = torch.tensor(df[["votes_0", "votes_1", "votes_tie"]].to_numpy(dtype="float32"))
    before = list(head.population_annotators) if head.population_annotators is not None else list(head.annotators)
    w = fit_new_annotator(head, (e0.to(scorer.device), e1.to(scorer.device)), votes, name=name, l2=l2)
    if not include_in_population and before:
        head.set_population(before)
    elif include_in_population and head.population_annotators is not None:
        head.set_population([*head.population_annotators, name])
    return {"annotator": name, "weights": [float(x) for x in w], "n_pairs": int(len(df)),
            "population_annotators": head.population_annotators}
