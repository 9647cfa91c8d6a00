"""`--resume` keys rows on the image's identity and the scorer's fingerprint, not on names. Regression tests for
issue 7 item 2: on the commit before, a changed image, a re-trained scorer under the same name and a changed
prompt kept (or duplicated) old rows, a folder given relative then absolute was scored twice, and failed rows
were never retried."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from imgpref.scorers.output import journal_path, read_journal, read_scores
from imgpref.scorers.score_paths import score_paths

RUN = {"num_workers": 0, "progress": False, "batch_size": 4}


def fresh_scores(paths, scorers, **kw) -> dict:
    """{(abs path, scorer): score} of a run without any output or resume."""
    t = score_paths(paths, scorers, **RUN, **kw)
    return {(os.path.abspath(p), s): v for p, s, v in zip(t["path"], t["scorer"], t["score"])}


def by_key(table) -> dict:
    return {(os.path.abspath(p), s): v for p, s, v in zip(table["path"], table["scorer"], table["score"])}


def assert_one_row_each(table, n_images, n_scorers):
    keys = [(os.path.abspath(p), s) for p, s in zip(table["path"], table["scorer"])]
    assert len(keys) == len(set(keys)) == n_images * n_scorers


def touch_later(path):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))  # also on coarse file-system clocks


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_changed_image_is_rescored(tmp_path, scorer_factory, good_images, suffix):
    files = good_images(tmp_path / "imgs", 4)
    _, scorers = scorer_factory(cosine=False)
    out = tmp_path / f"o{suffix}"
    score_paths(tmp_path / "imgs", scorers, out=out, **RUN)
    Image.fromarray(np.full((32, 40, 3), 200, np.uint8)).save(files[1])  # new content, same name
    touch_later(files[1])
    table = score_paths(tmp_path / "imgs", scorers, out=out, resume=True, **RUN)
    assert table.attrs["stats"]["rows_resumed"] == 3 * 2 and table.attrs["stats"]["rows_new"] == 2
    assert_one_row_each(read_scores(out), 4, 2)
    want = fresh_scores(tmp_path / "imgs", scorers)
    got = by_key(read_scores(out))
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k


def test_retrained_scorer_under_the_same_name_is_rescored(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 3)
    _, old = scorer_factory(cosine=False, seed=0)
    _, new = scorer_factory(cosine=False, seed=1)  # same names (lin1, lin2), other backbone weights
    assert [s.name for s in old] == [s.name for s in new]
    out = tmp_path / "o.jsonl"
    score_paths(tmp_path / "imgs", old, out=out, **RUN)
    table = score_paths(tmp_path / "imgs", new, out=out, resume=True, **RUN)
    assert table.attrs["stats"]["rows_resumed"] == 0
    assert_one_row_each(read_scores(out), 3, 2)
    want = fresh_scores(tmp_path / "imgs", new)
    for k, v in by_key(read_scores(out)).items():
        assert v == pytest.approx(want[k], rel=1e-5, abs=1e-5)


def test_changed_prompt_replaces_the_row(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 3)
    _, scorers = scorer_factory(n_linear=1, cosine=True)
    out = tmp_path / "o.csv"
    score_paths(tmp_path / "imgs", scorers, prompt="a red square", out=out, **RUN)
    score_paths(tmp_path / "imgs", scorers, prompt="a blue circle", out=out, resume=True, **RUN)
    back = read_scores(out)
    assert_one_row_each(back, 3, 2)
    assert set(back["prompt"]) == {"a blue circle"}
    want = fresh_scores(tmp_path / "imgs", scorers, prompt="a blue circle")
    for k, v in by_key(back).items():
        assert v == pytest.approx(want[k], rel=1e-5, abs=1e-5)


def test_same_folder_relative_then_absolute_is_not_duplicated(tmp_path, scorer_factory, good_images, monkeypatch):
    good_images(tmp_path / "imgs", 3)
    _, scorers = scorer_factory(cosine=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.csv"
    score_paths("imgs", scorers, out=out, **RUN)
    table = score_paths(str(tmp_path / "imgs"), scorers, out=out, resume=True, **RUN)
    assert table.attrs["stats"]["rows_resumed"] == 6 and table.attrs["stats"]["rows_new"] == 0
    assert_one_row_each(read_scores(out), 3, 2)


def test_failed_rows_are_retried_once_the_file_is_fixed(tmp_path, scorer_factory, good_images):
    files = good_images(tmp_path / "imgs", 3)
    files[2].write_bytes(files[2].read_bytes()[:40])  # truncated
    _, scorers = scorer_factory(cosine=False)
    out = tmp_path / "o.csv"
    first = score_paths(tmp_path / "imgs", scorers, out=out, **RUN)
    assert first["error"].notna().sum() == 2
    good_images(tmp_path / "fixed", 3)
    os.replace(tmp_path / "fixed" / files[2].name, files[2])
    touch_later(files[2])
    table = score_paths(tmp_path / "imgs", scorers, out=out, resume=True, **RUN)
    back = read_scores(out)
    assert back["error"].isna().all() and table.attrs["stats"]["rows_new"] == 2
    assert_one_row_each(back, 3, 2)


def test_identity_columns_are_journalled_and_written(tmp_path, scorer_factory, good_images, monkeypatch):
    from imgpref.scorers import output as outmod

    good_images(tmp_path / "imgs", 2)
    _, scorers = scorer_factory(cosine=False)
    out = tmp_path / "o.csv"
    seen: list[dict] = []
    real_append = outmod.Journal.append

    def spy(self, rows):  # what a kill right after this batch would leave on disk
        real_append(self, rows)
        seen[:] = read_journal(self.path)

    monkeypatch.setattr(outmod.Journal, "append", spy)
    score_paths(tmp_path / "imgs", scorers, out=out, **RUN)
    back = read_scores(out)
    for p, fid, ap in zip(back["path"], back["file_id"], back["abs_path"]):
        st = os.stat(p)
        assert fid == f"{st.st_size}:{st.st_mtime_ns}" and ap == os.path.abspath(p)
    fps = dict(zip(back["scorer"], back["fingerprint"]))
    assert len(set(fps.values())) == 2 and all(len(v) == 16 for v in fps.values())  # one per head
    assert len(seen) == 4 and not journal_path(out).exists()
    assert {(r["abs_path"], r["file_id"], r["fingerprint"]) for r in seen} == set(
        zip(back["abs_path"], back["file_id"], back["fingerprint"]))
