"""Dataset scoring resume: a finished single-file run resumed scores nothing; failed rows of a finished shard are
retried (as `score_paths` retries them) instead of being skipped with the shard."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from imgpref.data.images import ImageLoadError
from imgpref.data.sample_shards import jpeg_bytes, write_sample_dataset
from imgpref.scorers import parts_output, stages
from imgpref.scorers.output import read_scores
from imgpref.scorers.score_dataset import score_dataset
from imgpref.scorers.tiny_scorers import tiny_clip_scorers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory):
    """Every kind of shard: 2 tars, a table of embedded bytes, a path list and a CSV table of paths."""
    root = tmp_path_factory.mktemp("mixed")
    ds = write_sample_dataset(root / "wds", shards=2, per_shard=3, table_rows=3)
    files = []
    for k in range(4):
        p = root / "imgs" / f"im{k}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(jpeg_bytes(500 + k))
        files.append(p)
    (root / "list.txt").write_text("imgs/im0.jpg\nimgs/im1.jpg\n")
    pd.DataFrame({"path": ["imgs/im2.jpg", "imgs/im3.jpg"], "prompt": ["a", "b"]}).to_csv(root / "paths.csv",
                                                                                        index=False)
    inputs = [str(t) for t in ds["tars"]] + [str(ds["table"]), str(root / "list.txt"), str(root / "paths.csv")]
    return inputs, 6 + 3 + 4  # samples


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_finished_single_file_run_resumed_scores_nothing(tmp_path, mixed_inputs, suffix):
    inputs, n = mixed_inputs
    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    out = tmp_path / f"scores{suffix}"
    first = score_dataset(inputs, scorers, out=out, batch_size=4, progress=False, prompt="a photo")
    assert len(first) == n and first["error"].isna().all()
    again = score_dataset(inputs, scorers, out=out, batch_size=4, progress=False, prompt="a photo", resume=True)
    # HEAD deleted the parts after the first run and, resuming, found nothing done: it scored all n again
    assert again.attrs["stats"]["rows_new"] == 0 and again.attrs["stats"]["decoded"] == 0
    assert again.attrs["stats"]["rows_resumed"] == n
    back = read_scores(out)
    assert len(back) == n and not back.duplicated(["abs_path", "scorer"]).any()
    a = first.set_index("path").sort_index()
    b = back.set_index("path").sort_index()
    assert list(a.index) == list(b.index)
    np.testing.assert_array_equal(b["score"].to_numpy(), a["score"].to_numpy())  # the same rows, not new ones
    assert not (tmp_path / f"scores{suffix}.parts").exists()
    # a new scorer on the resumed file scores only its own rows; the old ones are kept
    more = tiny_clip_scorers(n_linear=2, cosine=False)
    third = score_dataset(inputs, more, out=out, batch_size=4, progress=False, prompt="a photo", resume=True)
    assert third.attrs["stats"]["rows_new"] == n and len(read_scores(out)) == 2 * n


def test_failed_rows_of_a_finished_shard_are_retried_on_resume(tmp_path, monkeypatch):
    ds = write_sample_dataset(tmp_path / "wds", shards=2, per_shard=3)
    inputs = [str(t) for t in ds["tars"]]
    flaky = sorted(ds["expect"])[1]  # a good image that fails once (e.g. a read error on a network disk)
    real = stages.decode

    def fails_once(sample, **kw):
        if sample.key == flaky:
            raise ImageLoadError(sample.key, "transient read error")
        return real(sample, **kw)

    scorers = tiny_clip_scorers(n_linear=2, cosine=False)
    out = tmp_path / "out"
    monkeypatch.setattr(stages, "decode", fails_once)
    first = score_dataset(inputs, scorers, out=f"{out}/", batch_size=2, progress=False)
    monkeypatch.setattr(stages, "decode", real)
    assert first.set_index("path").loc[flaky, "error"].str.contains("transient").all()

    again = score_dataset(inputs, scorers, out=f"{out}/", batch_size=2, progress=False, resume=True)
    # HEAD skipped the finished shard unread, so the failed rows stayed failed forever
    assert again.attrs["stats"]["rows_new"] == 2 and again.attrs["stats"]["shards_skipped"] == 1
    row = again.set_index(["path", "scorer"])
    assert row.loc[(flaky, "lin1"), "error"] is None and np.isfinite(row.loc[(flaky, "lin1"), "score"])
    on_disk = pd.concat([pd.read_parquet(p) for p in out.glob("part-*.parquet")], ignore_index=True)
    assert len(on_disk) == 2 * 6 and not on_disk.duplicated(["abs_path", "scorer"]).any()
    # now nothing failed: the next resume skips every shard unread
    third = score_dataset(inputs, scorers, out=f"{out}/", batch_size=2, progress=False, resume=True)
    assert third.attrs["stats"]["shards_skipped"] == 2 and third.attrs["stats"]["rows_new"] == 0
    assert parts_output.read_parts(out)["error"].isna().all()
    assert [json.loads(p.read_text())["failed"] for p in (out / "_shards").iterdir()] == [0, 0]
