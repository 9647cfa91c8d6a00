"""`win_rate`, `compare_scores`, `compare_folders` and `imgpref compare`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imgpref.eval.compare import compare_folders, compare_scores, pair_outcomes, win_rate, write_per_image
from imgpref.eval.report import write_report


# win_rate -------------------------------------------------------------------------------------------------------
def test_win_rate_by_hand_with_ties_and_direction():
    a, b = [3.0, 2.0, 1.0, 5.0], [1.0, 2.0, 3.0, 4.0]  # A wins, tie, B wins, A wins
    assert pair_outcomes(np.array(a), np.array(b)).tolist() == [1.0, 0.5, 0.0, 1.0]
    rate, lo, hi = win_rate(a, b)
    assert rate == pytest.approx(2.5 / 4)
    assert 0.0 <= lo <= rate <= hi <= 1.0
    assert win_rate(a, b, higher_is_better=False)[0] == pytest.approx(1.5 / 4)
    assert win_rate([1, 2, 3], [0, 0, 0]) == (1.0, 1.0, 1.0)
    assert win_rate([1, 1], [1, 1]) == (0.5, 0.5, 0.5)


def test_win_rate_interval_is_the_percentile_bootstrap_over_images():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=50) - 0.3
    rate, lo, hi = win_rate(a, b, n_boot=500, seed=7)
    # Direct computation: resample images with replacement, 2.5% and 97.5% quantiles of the mean outcome.
    w = np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
    idx = np.random.default_rng(7).integers(0, 50, size=(500, 50))
    boot = w[idx].mean(axis=1)
    assert rate == pytest.approx(w.mean())
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_win_rate_interval_width_matches_the_binomial_standard_error():
    n, p = 400, 0.7
    a = np.r_[np.ones(int(n * p)), np.zeros(n - int(n * p))]
    rate, lo, hi = win_rate(a, np.full(n, 0.5), n_boot=2000, seed=0)
    assert rate == pytest.approx(p)
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.12)


def test_win_rate_rejects_bad_input():
    assert all(np.isnan(win_rate([], [])))
    with pytest.raises(ValueError, match="same length"):
        win_rate([1, 2], [1])
    with pytest.raises(ValueError, match="NaN"):
        win_rate([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="n_boot"):
        win_rate([1], [2], n_boot=0)


# compare_scores on hand-made tables -----------------------------------------------------------------------------
def _table(root, rows):
    return pd.DataFrame(
        [{"path": f"{root}/{p}", "scorer": s, "score": v, "prompt": f"prompt {p}", "error": e} for p, s, v, e in rows]
    )


def test_compare_scores_matches_by_relative_path_and_skips_failures(tmp_path):
    ra, rb = tmp_path / "A", tmp_path / "B"
    nan = float("nan")
    ta = _table(ra, [
        ("x.png", "q", 3.0, None), ("sub/y.png", "q", 1.0, None), ("z.png", "q", 2.0, None),
        ("w.png", "q", 5.0, None), ("only_a.png", "q", 9.0, None),
        ("x.png", "n", 0.1, None), ("sub/y.png", "n", 0.5, None), ("z.png", "n", 0.2, None),
        ("w.png", "n", 0.3, None), ("only_a.png", "n", 0.9, None),
    ])
    tb = _table(rb, [
        ("x.png", "q", 1.0, None), ("sub/y.png", "q", 2.0, None), ("z.png", "q", 2.0, None),
        ("w.png", "q", nan, "truncated file"), ("only_b.png", "q", 0.0, None),
        ("x.png", "n", 0.2, None), ("sub/y.png", "n", 0.4, None), ("z.png", "n", 0.2, None),
        ("w.png", "n", nan, "truncated file"), ("only_b.png", "n", 0.0, None),
    ])
    r = compare_scores(ta, tb, ra, rb, higher_is_better={"n": False}, n_boot=200)
    assert r.only_a == ["only_a.png"] and r.only_b == ["only_b.png"] and r.n_matched == 4
    pi = r.per_image.set_index(["scorer", "rel_path"])
    assert pi.loc[("q", "x.png"), "winner"] == "A"
    assert pi.loc[("q", "sub/y.png"), "winner"] == "B"
    assert pi.loc[("q", "z.png"), "winner"] == "tie"
    assert pi.loc[("q", "w.png"), "winner"] == "" and pi.loc[("q", "w.png"), "error"] == "B: truncated file"
    assert pi.loc[("n", "x.png"), "winner"] == "A"  # lower is better for n: 0.1 beats 0.2
    assert pi.loc[("n", "sub/y.png"), "winner"] == "B"
    assert pi.loc[("q", "x.png"), "path_b"] == f"{rb}/x.png"
    wr = r.win_rates.set_index("scorer")
    assert list(r.win_rates["scorer"]) == ["q", "n"]  # order of table A
    for s in ("q", "n"):
        assert wr.loc[s, "n"] == 3 and wr.loc[s, "n_failed"] == 1
        assert (wr.loc[s, "wins_a"], wr.loc[s, "ties"], wr.loc[s, "wins_b"]) == (1, 1, 1)
        assert wr.loc[s, "win_rate"] == pytest.approx(0.5)
    assert wr.loc["q", "mean_a"] == pytest.approx(2.0) and wr.loc["q", "mean_b"] == pytest.approx(5 / 3)
    assert set(r.results["side"]) == {"A", "B"} and len(r.results) == 20

    # The per-image table round-trips through every format.
    for ext in ("csv", "jsonl", "parquet"):
        out = write_per_image(r, tmp_path / f"per.{ext}")
        back = pd.read_csv(out) if ext == "csv" else pd.read_json(out, lines=True) if ext == "jsonl" else \
            pd.read_parquet(out)
        assert list(back.columns)[:5] == ["rel_path", "scorer", "score_a", "score_b", "winner"] and len(back) == 8
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl or \.parquet"):
        write_per_image(r, tmp_path / "per.txt")

    # And the report shows it: win-rate rows, side-by-side rows, unmatched lists, the failure.
    page = write_report(None, tmp_path / "c.html", compare=r).read_text("utf-8")
    winrates = page.split('<table class="winrates">')[1].split("</table>")[0]
    assert winrates.count("<tr><td>q</td>") == 1 and winrates.count("<tr><td>n</td>") == 1
    assert "only_a.png" in page and "only_b.png" in page
    assert "truncated file" in page and 'id="side-by-side"' in page


def test_compare_scores_rejects_duplicate_rows(tmp_path):
    t = _table(tmp_path, [("x.png", "q", 1.0, None), ("x.png", "q", 2.0, None)])
    with pytest.raises(ValueError, match="several rows for 'x.png'"):
        compare_scores(t, t, tmp_path, tmp_path)


# compare_folders + CLI on real files with weight-free scorers --------------------------------------------------
@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """A: colour photos (+ grey camera); B: the same in grey with added noise; one failure, one unmatched each."""
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("cmp")
    a, b = root / "A", root / "B"
    rng = np.random.default_rng(0)
    srcs = {"astronaut.png": skdata.astronaut(), "cats/chelsea.jpg": skdata.chelsea(), "coffee.jpg": skdata.coffee(),
            "camera.png": skdata.camera()}
    for rel, arr in srcs.items():
        im = Image.fromarray(arr)
        im = im.resize((im.width // 2, im.height // 2))
        for d in (a, b):
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(a / rel, quality=95) if rel.endswith(".jpg") else im.save(a / rel)
        grey = np.asarray(im.convert("L"), dtype=np.float64) + rng.normal(0, 25, (im.height, im.width))
        Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), mode="L").save(b / rel, **(
            {"quality": 95} if rel.endswith(".jpg") else {}))
    Image.fromarray(skdata.rocket()[::4, ::4]).save(a / "rocket.jpg")
    (b / "rocket.jpg").write_bytes(b"")  # matched, but B cannot be scored
    Image.new("RGB", (32, 32), (200, 10, 10)).save(a / "only_a.png")
    Image.new("RGB", (32, 32), (10, 200, 10)).save(b / "only_b.png")
    return a, b


def _check_result(r):
    assert r.only_a == ["only_a.png"] and r.only_b == ["only_b.png"] and r.n_matched == 5
    wr = r.win_rates.set_index("scorer")
    # colorfulness: B is grey (0); A wins 3 colour photos and ties on the grey camera; rocket failed in B.
    assert (wr.loc["colorfulness", "n"], wr.loc["colorfulness", "n_failed"]) == (4, 1)
    assert wr.loc["colorfulness", "win_rate"] == pytest.approx(3.5 / 4)
    assert wr.loc["colorfulness", "mean_b"] == 0.0
    # noise is lower-is-better (from the preset, not passed in): the clean A wins every pair.
    assert not wr.loc["noise", "higher_is_better"]
    assert tuple(wr.loc["noise", ["win_rate", "ci_low", "ci_high"]]) == (1.0, 1.0, 1.0)
    pi = r.per_image.set_index(["scorer", "rel_path"])
    assert pi.loc[("colorfulness", "camera.png"), "winner"] == "tie"
    assert "empty" in pi.loc[("noise", "rocket.jpg"), "error"]


def test_compare_folders_end_to_end(two_folders):
    a, b = two_folders
    r = compare_folders(a, b, ["colorfulness", "noise"], n_boot=300, progress=False, num_workers=0)
    _check_result(r)
    with pytest.raises(ValueError, match="overlap"):
        compare_folders(a, a, ["colorfulness"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare_folders(a, a.parent / "nope", ["colorfulness"])


def test_cli_compare_writes_table_and_report(two_folders, tmp_path):
    from typer.testing import CliRunner

    from imgpref.cli import app

    a, b = two_folders
    out, rep = tmp_path / "per.jsonl", tmp_path / "cmp.html"
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "-s", "colorfulness", "-s", "noise", "--out", str(out),
                                   "--report", str(rep), "--workers", "0", "--n-boot", "200"])
    assert res.exit_code == 0, res.output
    assert "only in A" in res.output and "colorfulness" in res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and {r["winner"] for r in rows} >= {"A", "tie", ""}
    page = rep.read_text("utf-8")
    assert page.count("<svg class=\"histogram\"") == 2
    assert page.count("<img ") == 9  # 5 matched x (A, B), less the empty B/rocket.jpg (a placeholder)
    bad = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "missing"), "-s", "colorfulness"])
    assert bad.exit_code == 2 and "not an existing folder" in bad.output
