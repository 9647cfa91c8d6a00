"""score_paths: correct scores, bad input recorded, shared backbone passes, cache, resume from a journal."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from imgpref.data.images import load_image
from imgpref.scorers.output import journal_path, read_scores
from imgpref.scorers.score_paths import (NO_PROMPT, ScoringFailed, collate_items, default_workers, resolve_precision,
                                         score_paths, summarize)

torch.set_num_threads(1)


def direct_scores(scorers, path, prompt):
    """What each scorer gives for this file, computed directly with Scorer.score (no engine)."""
    im = load_image(path)
    return {s.name: float(s.score([im], [prompt] if s.needs_prompt else None)[0]) for s in scorers}


def test_mixed_folder_scores_good_and_lists_every_bad_kind(tmp_path, odd_folder, scorer_factory, good_images):
    folder, expect = odd_folder
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    good_images(mixed / "good", 3)
    bb, scorers = scorer_factory()
    df = score_paths([mixed], scorers, prompt="a photo", out=tmp_path / "s.csv", batch_size=4, num_workers=2,
                     progress=False)
    n_files = len(expect) + 3
    assert len(df) == 3 * n_files and not df.duplicated(["path", "scorer"]).any()
    by_name = {p.split("/")[-1]: sub for p, sub in df.groupby("path")}
    for name, err in list(expect.items()) + [(f"img{k:03d}.png", None) for k in range(3)]:
        sub = by_name[name]
        if err is None:
            assert sub["error"].isna().all() and np.isfinite(sub["score"]).all(), name
            want = direct_scores(scorers, sub["path"].iloc[0], "a photo")
            got = dict(zip(sub["scorer"], sub["score"]))
            for k in want:
                assert got[k] == pytest.approx(want[k], abs=1e-4), (name, k)
        else:
            assert sub["score"].isna().all(), name
            assert all(err.lower() in e.lower() for e in sub["error"]), (name, list(sub["error"]))
    pd.testing.assert_frame_equal(read_scores(tmp_path / "s.csv"), df)
    assert not journal_path(tmp_path / "s.csv").exists()
    summ = summarize(df).set_index("scorer")
    n_bad = sum(e is not None for e in expect.values())
    assert summ.loc["lin1", "failed"] == n_bad and summ.loc["lin1", "scored"] == n_files - n_bad
    ok = df[(df.scorer == "lin1") & df.error.isna()]["score"]
    assert summ.loc["lin1", "mean"] == pytest.approx(ok.mean()) and summ.loc["lin1", "median"] == pytest.approx(ok.median())


def test_heads_share_one_backbone_pass_per_batch(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 10)
    bb, scorers = scorer_factory(n_linear=3, cosine=True)
    df = score_paths(tmp_path / "imgs", scorers, prompt="x", batch_size=4, num_workers=0, progress=False)
    assert len(df) == 40
    assert bb.calls == 3 and bb.images == 10  # ceil(10 / 4) batches, 4 heads, one pass each


def test_collate_separates_failures():
    t = torch.zeros(3, 2, 2)
    out = collate_items([(0, {"k": t}, None), (1, None, "broken"), (2, {"k": t + 1, "j": t}, None)])
    assert out["failed"] == [(1, "broken")]
    idx, x = out["inputs"]["k"]
    assert idx == [0, 2] and x.shape == (2, 3, 2, 2) and float(x[1].mean()) == 1.0
    assert out["inputs"]["j"][0] == [2]


def test_cache_hit_does_no_backbone_work_and_no_decoding(tmp_path, scorer_factory, good_images, monkeypatch):
    good_images(tmp_path / "imgs", 6)
    cache = tmp_path / "cache"
    bb, scorers = scorer_factory(n_linear=1, cosine=False)
    first = score_paths(tmp_path / "imgs", scorers, cache=cache, batch_size=4, num_workers=0, progress=False)
    assert bb.images == 6 and first.attrs["stats"]["cache_hits"] == 0

    import imgpref.scorers.score_paths as engine

    def no_decode(*a, **k):
        raise AssertionError("a cached image was decoded")

    monkeypatch.setattr(engine, "load_image", no_decode)
    bb2, scorers2 = scorer_factory(n_linear=2, cosine=False)  # a fresh backbone object, same key; a new head
    second = score_paths(tmp_path / "imgs", scorers2, cache=cache, batch_size=4, num_workers=0, progress=False)
    assert bb2.calls == 0 and second.attrs["stats"]["cache_hits"] == 6 and second.attrs["stats"]["decoded"] == 0
    pd.testing.assert_series_equal(second[second.scorer == "lin1"]["score"].reset_index(drop=True),
                                   first["score"].reset_index(drop=True), atol=1e-6, check_names=False)
    monkeypatch.undo()
    other, other_scorers = scorer_factory(n_linear=1, cosine=False, seed=1)  # another backbone key: misses
    score_paths(tmp_path / "imgs", other_scorers, cache=cache, num_workers=0, progress=False)
    assert other.images == 6


def test_prompts_missing_sidecar_and_file(tmp_path, scorer_factory, good_images):
    paths = good_images(tmp_path / "imgs", 3)
    paths[0].with_suffix(".txt").write_text("a sidecar prompt")
    bb, scorers = scorer_factory(n_linear=1, cosine=True)
    df = score_paths(tmp_path / "imgs", scorers, num_workers=0, progress=False)
    cos = df[df.scorer == "cos"].reset_index(drop=True)
    assert cos.loc[0, "prompt"] == "a sidecar prompt" and math.isfinite(cos.loc[0, "score"])
    assert cos.loc[1, "error"] == NO_PROMPT and math.isnan(cos.loc[1, "score"])
    assert df[df.scorer == "lin1"]["error"].isna().all()  # prompt-free scorers score them all
    assert cos.loc[0, "score"] == pytest.approx(direct_scores(scorers, paths[0], "a sidecar prompt")["cos"], abs=1e-4)
    pf = tmp_path / "prompts.csv"
    pf.write_text("file,prompt\nimg001.png,from the file\n")
    df2 = score_paths(tmp_path / "imgs", scorers, prompts=pf, num_workers=0, progress=False)
    assert list(df2[df2.scorer == "cos"]["prompt"]) == ["a sidecar prompt", "from the file", None]


def test_resume_from_a_torn_journal_scores_only_the_missing(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 8)
    out = tmp_path / "s.jsonl"
    bb, scorers = scorer_factory(n_linear=2, cosine=False)
    full = score_paths(tmp_path / "imgs", scorers, out=out, num_workers=0, progress=False)
    # pretend a run was killed after 3 images: their rows in the journal, then half a line
    rows = full.iloc[:6].to_dict("records")
    jp = journal_path(out)
    out.unlink()
    jp.write_text("".join(json.dumps({**r, "score": float(r["score"])}) + "\n" for r in rows) + '{"path": "x", "sco')
    with pytest.raises(ValueError, match="--resume"):
        score_paths(tmp_path / "imgs", scorers, out=out, num_workers=0, progress=False)
    bb2, scorers2 = scorer_factory(n_linear=2, cosine=False)
    again = score_paths(tmp_path / "imgs", scorers2, out=out, resume=True, num_workers=0, progress=False)
    assert bb2.images == 5 and again.attrs["stats"]["rows_resumed"] == 6
    pd.testing.assert_frame_equal(read_scores(out), full, atol=1e-6)
    assert not jp.exists()
    # resuming a finished run does nothing and changes nothing
    bb3, scorers3 = scorer_factory(n_linear=2, cosine=False)
    score_paths(tmp_path / "imgs", scorers3, out=out, resume=True, num_workers=0, progress=False)
    assert bb3.images == 0 and len(read_scores(out)) == 16


def test_strict_raises_after_writing(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bb, scorers = scorer_factory(n_linear=1, cosine=False)
    with pytest.raises(ScoringFailed) as info:
        score_paths(tmp_path / "imgs", scorers, out=tmp_path / "o.parquet", strict=True, num_workers=0, progress=False)
    assert info.value.n_failed == 1
    written = read_scores(tmp_path / "o.parquet")
    assert len(written) == 3 and written["error"].notna().sum() == 1


def test_bad_arguments(tmp_path, scorer_factory, good_images):
    good_images(tmp_path / "imgs", 1)
    bb, scorers = scorer_factory(n_linear=1, cosine=False)
    with pytest.raises(ValueError, match="unsupported extension"):
        score_paths(tmp_path / "imgs", scorers, out=tmp_path / "x.xlsx", progress=False)
    with pytest.raises(ValueError, match="needs an output"):
        score_paths(tmp_path / "imgs", scorers, resume=True, progress=False)
    with pytest.raises(ValueError, match="precision"):
        score_paths(tmp_path / "imgs", scorers, precision="fp8", progress=False)
    with pytest.raises(FileNotFoundError):
        score_paths(tmp_path / "nope", scorers, progress=False)
    with pytest.raises(ValueError, match="unique"):
        score_paths(tmp_path / "imgs", scorers + scorers, progress=False)


def test_defaults_for_workers_and_precision():
    assert 1 <= default_workers("cpu") <= default_workers("cuda") <= 4
    assert resolve_precision(None, torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
