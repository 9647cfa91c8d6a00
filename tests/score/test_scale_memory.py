"""Memory stays bounded by the batch, not by the dataset: the text-embedding cache of the model stage is an LRU."""
from __future__ import annotations

import numpy as np
import torch

from imgpref.data.images import load_image
from imgpref.data.sample_shards import write_sample_dataset
from imgpref.data.sources import open_sources
from imgpref.scorers.score_dataset import parts_folder_for, score_dataset
from imgpref.scorers.score_paths import _groups
from imgpref.scorers.stages import Decoder, EmbedAndScore, build_spec, decode_batch, plan_shard
from imgpref.scorers.tiny_scorers import tiny_clip_scorers

torch.set_num_threads(1)


def test_text_cache_is_bounded_and_scores_do_not_depend_on_it(tmp_path):
    ds = write_sample_dataset(tmp_path, shards=1, per_shard=12)  # 12 samples, 12 distinct captions
    scorers = tiny_clip_scorers(n_linear=0, cosine=True)
    groups = _groups(scorers, None, torch.device("cpu"), False)
    spec = build_spec(scorers, groups)
    decoder = Decoder(spec, [scorers[0].backbone.preprocess])
    small = EmbedAndScore(scorers, spec, "cpu", text_cache_size=5)
    big = EmbedAndScore(scorers, spec, "cpu")
    (shard,) = open_sources([str(t) for t in ds["tars"]])
    got, want, direct = [], [], []
    for epoch in range(2):  # the second pass hits evicted and cached prompts alike
        for batch in plan_shard(shard, spec, None, 4):
            x = decode_batch(batch, decoder)
            got.append(small(x)["s0"])
            want.append(big(x)["s0"])
            assert len(small.txt[0]) <= 5
            # expected: the scorer's own score() on the decoded image and its caption (no stage, no cache)
            with torch.no_grad():
                direct.append(scorers[0].score([load_image(bytes(b)) for b in batch["data"]], batch["prompt"]).numpy())
    assert len(big.txt[0]) == 12
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(direct), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-6, rtol=0)


def test_parts_output_without_read_back_returns_only_the_counts(tmp_path):
    ds = write_sample_dataset(tmp_path / "wds", shards=2, per_shard=3, bad={4: "text"})
    out = tmp_path / "out"
    df = score_dataset([str(t) for t in ds["tars"]], tiny_clip_scorers(n_linear=1, cosine=False), out=f"{out}/",
                       batch_size=2, progress=False, read_back=False)
    assert len(df) == 0 and df.attrs["stats"]["rows_new"] == 6
    assert df.attrs["stats"]["decoded"] == 5 and df.attrs["stats"]["failed_images"] == 1
    assert parts_folder_for(out, True) == out and len(list(out.glob("part-*.parquet"))) == 4
