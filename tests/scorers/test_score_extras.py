"""Heads' extra outputs (HPSv3's sigma) reach the score tables of both engines as columns, NaN for scorers
without extras, and survive the embedding cache and --resume."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage import data

from imgpref.scorers.output import read_scores
from imgpref.scorers.registry import load_scorer

# building the tiny Qwen2-VL checkpoint takes ~40 s on a loaded 2-core machine
pytestmark = pytest.mark.slow
TOL = 1e-5
PROMPT = "a ginger cat on a blanket"


def _expected_sigma(folder: Path, images: list[Image.Image], prompts: list[str]) -> list[float]:
    """sigma from a separately loaded scorer's `score_with_extras`, image by image (the direct API)."""
    scorer = load_scorer("hpsv3", weights=folder)
    return [float(scorer.score_with_extras([im], [p])["sigma"][0]) for im, p in zip(images, prompts)]


def test_folder_engine_writes_sigma_and_keeps_it_through_cache_and_resume(hpsv3_tiny, tmp_path):
    from imgpref.scorers.score_paths import score_paths

    torch.set_num_threads(1)
    folder = hpsv3_tiny[0]
    pics = tmp_path / "pics"
    pics.mkdir()
    images = [Image.fromarray(data.chelsea()).resize((60, 44)), Image.fromarray(data.coffee()).resize((40, 56))]
    for i, im in enumerate(images):
        im.save(pics / f"{i}.png")
    expected = _expected_sigma(folder, images, [PROMPT] * 2)
    assert all(s > 0 and math.isfinite(s) for s in expected)

    scorers = [load_scorer("hpsv3", weights=folder), load_scorer("contrast")]
    out, cache = tmp_path / "scores.csv", tmp_path / "cache"
    for run in range(2):  # the second run takes the embeddings from the cache
        o = out.with_name(f"scores{run}.csv")
        got = score_paths(pics, scorers, prompt=PROMPT, out=o, cache=cache, num_workers=0, batch_size=2,
                          progress=False)
        assert got.attrs["stats"]["cache_hits"] == (4 if run else 0)  # 2 images x 2 backbones
        table = read_scores(o)
        assert "sigma" in table.columns
        hp = table[table["scorer"] == scorers[0].name].sort_values("path")
        np.testing.assert_allclose(hp["sigma"].to_numpy(), expected, atol=TOL)
        assert table.loc[table["scorer"] == "contrast", "sigma"].isna().all()

    # --resume reuses every row, sigma included (the .jsonl journal path and the final .jsonl keep the column)
    o = tmp_path / "scores.jsonl"
    score_paths(pics, scorers, prompt=PROMPT, out=o, num_workers=0, progress=False)
    again = score_paths(pics, scorers, prompt=PROMPT, out=o, resume=True, num_workers=0, progress=False)
    assert again.attrs["stats"]["rows_new"] == 0
    hp = read_scores(o)
    hp = hp[hp["scorer"] == scorers[0].name].sort_values("path")
    np.testing.assert_allclose(hp["sigma"].to_numpy(), expected, atol=TOL)


def test_dataset_engine_writes_sigma(hpsv3_tiny, tmp_path):
    from imgpref.data.sample_shards import write_sample_dataset
    from imgpref.scorers.score_dataset import score_dataset

    torch.set_num_threads(1)
    folder = hpsv3_tiny[0]
    # 4:3 like build_spec's probe: the dataset engine needs one input shape, and HPSv3 keeps the aspect ratio
    made = write_sample_dataset(tmp_path / "ds", shards=0, table_rows=2, size=(64, 48))
    rows = pd.read_parquet(made["table"])
    images = [Image.open(io.BytesIO(b)) for b in rows["image"]]
    expected = dict(zip(rows["key"], _expected_sigma(folder, images, list(rows["prompt"]))))

    scorers = [load_scorer("hpsv3", weights=folder), load_scorer("contrast")]
    for out, fmt in ((tmp_path / "scores.parquet", None), (tmp_path / "parts", "parts")):
        table = score_dataset([made["table"]], scorers, out=out, out_format=fmt, batch_size=2, progress=False)
        hp = table[table["scorer"] == scorers[0].name]
        assert len(hp) == 2 and hp["error"].isna().all()
        for path, sigma in zip(hp["path"], hp["sigma"]):
            assert abs(sigma - expected[str(path).rsplit("::", 1)[-1]]) < TOL, (path, sigma, expected)
        assert table.loc[table["scorer"] == "contrast", "sigma"].isna().all()
