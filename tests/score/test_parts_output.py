"""Dataset scoring, local engine: Parquet parts as work completes, resume at shard and row level, embeddings."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from imgpref.data.images import load_image
from imgpref.data.sample_shards import write_sample_dataset
from imgpref.scorers import parts_output
from imgpref.scorers.output import read_scores
from imgpref.scorers.score_dataset import score_dataset
from imgpref.scorers.stages import EmbedAndScore
from imgpref.scorers.tiny_scorers import tiny_clip_scorers

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    ds = write_sample_dataset(root, shards=2, per_shard=5, table_rows=4, bad={1: "text", 7: "truncated", 11: "bomb"})
    return ds


def _inputs(ds):
    return [str(t) for t in ds["tars"]] + [str(ds["table"])]


def _all_part_rows(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))], ignore_index=True)


def test_parts_scores_match_direct_scoring_and_bad_samples_are_reported(tmp_path, dataset):
    scorers = tiny_clip_scorers()
    df = score_dataset(_inputs(dataset), scorers, out=f"{tmp_path}/out/", batch_size=4, progress=False)
    expect = dataset["expect"]
    assert len(df) == 3 * len(expect) and not df.duplicated(["abs_path", "scorer"]).any()
    assert set(df["path"]) == set(expect)
    import tarfile

    blobs = {}
    for t in dataset["tars"]:
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".jpg"):
                    blobs[f"{t}::{m.name[:-4]}"] = tf.extractfile(m).read()
    for r in pd.read_parquet(dataset["table"]).itertuples():
        blobs[f"{dataset['table']}::{r.key}"] = r.image
    for key, err in expect.items():
        sub = df[df["path"] == key].set_index("scorer")
        if err is not None:
            assert sub["score"].isna().all() and all(err in e for e in sub["error"]), (key, list(sub["error"]))
            continue
        im = load_image(blobs[key])  # expected: the scorers' own score() on the decoded image, no engine
        prompt = dataset["prompts"][key]
        for s in scorers:
            want = float(s.score([im], [prompt] if s.needs_prompt else None)[0])
            assert sub.loc[s.name, "score"] == pytest.approx(want, abs=1e-4), (key, s.name)
            assert sub.loc[s.name, "prompt"] == prompt
    # parts are written per batch and shard, never more than one batch of rows each
    files = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(files) >= 5 and all(len(pd.read_parquet(p)) <= 3 * 4 for p in files)
    assert len(list((tmp_path / "out" / "_shards").glob("*.json"))) == 3


def test_killed_run_resumes_with_exactly_one_row_per_sample(tmp_path, dataset, monkeypatch):
    scorers = tiny_clip_scorers(n_linear=1, cosine=True)
    out = tmp_path / "out"
    real = EmbedAndScore.__call__
    calls = {"n": 0}

    def dies_on_third_batch(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what a kill mid-run leaves: whole parts of the first two batches only
        return real(self, batch)

    monkeypatch.setattr(EmbedAndScore, "__call__", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        score_dataset(_inputs(dataset), scorers, out=f"{out}/", batch_size=3, progress=False)
    monkeypatch.setattr(EmbedAndScore, "__call__", real)
    partial = _all_part_rows(out)
    assert len(partial) == 5 * 2  # shard 0 in two batches (3 + 2 samples) x 2 scorers; shard 1 died
    with pytest.raises(ValueError, match="--resume"):
        score_dataset(_inputs(dataset), scorers, out=f"{out}/", batch_size=3, progress=False)
    df = score_dataset(_inputs(dataset), scorers, out=f"{out}/", batch_size=3, progress=False, resume=True)
    n = len(dataset["expect"])
    # only what was missing, and the failed rows of the finished shard 0 (tried again, as score_paths does)
    assert df.attrs["stats"]["rows_new"] == 2 * n - int(partial["error"].isna().sum()) == 2 * n - len(partial) + 2
    on_disk = _all_part_rows(out)
    assert len(on_disk) == 2 * n and not on_disk.duplicated(["abs_path", "scorer"]).any()
    # a finished run resumed again tries only the failed samples again (every shard holds a bad file here)
    again = score_dataset(_inputs(dataset), scorers, out=f"{out}/", batch_size=3, progress=False, resume=True)
    n_bad = sum(e is not None for e in dataset["expect"].values())
    assert again.attrs["stats"]["rows_new"] == 2 * n_bad and again.attrs["stats"]["decoded"] == 0
    assert len(_all_part_rows(out)) == 2 * n


def test_changed_shard_is_rescored_and_old_rows_are_replaced(tmp_path, dataset):
    import shutil

    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    tar = tmp_path / "00000.tar"
    shutil.copy(dataset["tars"][0], tar)
    out = tmp_path / "out"
    first = score_dataset([str(tar)], scorers, out=f"{out}/", batch_size=2, progress=False)
    os.utime(tar, ns=(os.stat(tar).st_atime_ns, os.stat(tar).st_mtime_ns + 10**9))  # the shard changed
    second = score_dataset([str(tar)], scorers, out=f"{out}/", batch_size=2, progress=False, resume=True)
    assert second.attrs["stats"]["rows_new"] == len(first)
    on_disk = _all_part_rows(out)
    assert len(on_disk) == len(first) and set(on_disk["file_id"]) == {f"{os.stat(tar).st_size}:{os.stat(tar).st_mtime_ns}"}


def test_single_file_output_from_parts(tmp_path, dataset):
    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    df = score_dataset([str(dataset["table"])], scorers, out=tmp_path / "s.csv", batch_size=3, progress=False)
    assert not (tmp_path / "s.csv.parts").exists()
    back = read_scores(tmp_path / "s.csv")
    assert len(back) == 4 and list(back["path"]) == list(df["path"])
    with pytest.raises(ValueError, match="save-embeddings"):
        score_dataset([str(dataset["table"])], scorers, out=tmp_path / "s.csv", save_embeddings=True)


def test_embeddings_read_back_reproduce_the_scores(tmp_path, dataset):
    scorers = tiny_clip_scorers(n_linear=2, cosine=True)
    df = score_dataset(_inputs(dataset), scorers, out=f"{tmp_path}/out/", batch_size=4, progress=False,
                       save_embeddings=True)
    emb, columns = parts_output.read_embeddings(tmp_path / "out")
    assert list(columns) == ["emb_0"] and "tiny-clip-seed0" in columns["emb_0"]
    ok = [k for k, e in dataset["expect"].items() if e is None]
    assert sorted(emb["key"]) == sorted(ok)  # one row per embedded sample, none for the bad ones
    x = torch.tensor(np.stack(emb["emb_0"].to_list()), dtype=torch.float32)
    with torch.no_grad():
        for s in scorers:
            txt = s.embed_texts([dataset["prompts"][k] for k in emb["key"]]) if s.needs_prompt else None
            again = s.score_embeddings(x, txt).numpy()
            stored = df[df["scorer"] == s.name].set_index("path").loc[list(emb["key"]), "score"].to_numpy()
            np.testing.assert_allclose(again, stored, atol=1e-5, rtol=0)


def test_cli_scores_shards_into_parts_and_reports_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app

    ds = write_sample_dataset(tmp_path / "wds", shards=2, per_shard=2, bad={1: "empty"})
    runner = CliRunner()
    args = ["score", str(tmp_path / "wds"), "-s", "contrast", "--out", f"{tmp_path}/out/", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    df = parts_output.read_parts(tmp_path / "out")
    assert sorted(df["path"]) == sorted(ds["expect"]) and df["error"].notna().sum() == 1
    again = runner.invoke(app, args)  # parts exist: resume or delete, one line, exit 2
    assert again.exit_code == 2 and "--resume" in again.output
    bad = runner.invoke(app, args[:-2] + ["--out", f"{tmp_path}/o2/", "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine" in bad.output


_KILLED_RUN = """
import sys, time, torch
from pathlib import Path
torch.set_num_threads(1)
from imgpref.scorers.stages import EmbedAndScore
from imgpref.scorers.score_dataset import score_dataset
from imgpref.scorers.tiny_scorers import tiny_clip_scorers
real = EmbedAndScore.__call__
def slow(self, batch):
    # once two parts are on disk, hang until killed: the run cannot finish before the parent (however slow
    # a loaded machine makes it) sees them and sends SIGKILL, so the kill always lands mid-run
    while len(list(Path(sys.argv[1]).glob("part-*.parquet"))) >= 2:
        time.sleep(0.05)
    time.sleep(0.1)
    return real(self, batch)
EmbedAndScore.__call__ = slow
score_dataset(sys.argv[2:], tiny_clip_scorers(n_linear=1, cosine=False), out=sys.argv[1], batch_size=2,
              progress=False)
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_one_row_per_sample(tmp_path, dataset):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    proc = subprocess.Popen([sys.executable, str(script), f"{out}/", *_inputs(dataset)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _all_part_rows(out)
    before, ok_before = len(partial), int(partial["error"].isna().sum())
    assert 0 < before < len(dataset["expect"])  # killed mid-run
    df = score_dataset(_inputs(dataset), tiny_clip_scorers(n_linear=1, cosine=False), out=f"{out}/",
                       batch_size=2, progress=False, resume=True)
    on_disk = _all_part_rows(out)
    # failed rows are tried again (as score_paths does) and replace the old row on disk
    assert df.attrs["stats"]["rows_new"] == len(dataset["expect"]) - ok_before
    assert len(on_disk) == len(dataset["expect"]) and not on_disk.duplicated(["abs_path", "scorer"]).any()
    assert not list(out.glob(".*"))  # no temporary part left visible to readers


def test_resume_with_save_embeddings_embeds_rows_scored_without_them(tmp_path, dataset):
    scorers = tiny_clip_scorers(n_linear=1, cosine=False)
    out = tmp_path / "out"
    score_dataset([str(dataset["table"])], scorers, out=f"{out}/", batch_size=3, progress=False)
    assert not (out / "embeddings").exists()
    df = score_dataset([str(dataset["table"])], scorers, out=f"{out}/", batch_size=3, progress=False,
                       resume=True, save_embeddings=True)
    assert df.attrs["stats"]["rows_new"] == 4  # scores without embeddings are not "done" for this run
    on_disk = _all_part_rows(out)
    assert len(on_disk) == 4 and not on_disk.duplicated(["abs_path", "scorer"]).any()
    emb, _ = parts_output.read_embeddings(out)
    n_ok = sum(e is None for k, e in dataset["expect"].items() if "images.parquet" in k)
    assert len(emb) == n_ok and emb["key"].is_unique
