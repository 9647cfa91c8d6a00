"""`imgpref score` through typer's CliRunner: outputs, summary, exit statuses, cache, report."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imgpref.cli import app
from imgpref.data.images import load_image
from imgpref.scorers.output import journal_path, read_scores
from imgpref.scorers.registry import load_scorer

runner = CliRunner()


@pytest.fixture
def folder(tmp_path, good_images):
    good_images(tmp_path / "imgs", 3, size=(64, 48))
    (tmp_path / "imgs" / "zero.png").write_bytes(b"")
    (tmp_path / "imgs" / "notes.jpg").write_text("not an image")
    return tmp_path / "imgs"


def test_cli_scores_a_folder(tmp_path, folder):
    out = tmp_path / "scores.jsonl"
    res = runner.invoke(app, ["score", str(folder), "--scorer", "colorfulness", "-s", "contrast", "--out", str(out),
                              "--workers", "0", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    df = read_scores(out)
    assert len(df) == 10 and set(df["scorer"]) == {"colorfulness", "contrast"}
    assert "2 image(s) could not be scored" in res.output and "empty file" in res.output
    ref = load_scorer("colorfulness")
    for path, score in df[(df.scorer == "colorfulness") & df.error.isna()][["path", "score"]].itertuples(index=False):
        assert score == pytest.approx(float(ref.score([load_image(path)])[0]), rel=1e-5)
    # --strict: same run, exit status 1, output still written
    res = runner.invoke(app, ["score", str(folder), "-s", "contrast", "--out", str(tmp_path / "s.csv"), "--strict",
                              "--workers", "0", "-q"])
    assert res.exit_code == 1 and (tmp_path / "s.csv").exists()
    good_only = runner.invoke(app, ["score", str(folder / "img000.png"), "-s", "contrast", "--strict", "-q",
                                    "--out", str(tmp_path / "g.csv"), "--workers", "0"])
    assert good_only.exit_code == 0, good_only.output


def test_cli_cache_and_report(tmp_path, folder):
    args = ["score", str(folder), "-s", "exposure", "--out", str(tmp_path / "o.parquet"), "--cache", str(tmp_path / "c"),
            "--workers", "0"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args + ["--report", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "cache hits: 3" in res.output and "images decoded: 0" in res.output
    assert "<html" in (tmp_path / "r.html").read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("extra, message", [
    (["--scorer", "colorfullness"], "colorfulness"),  # close-name suggestion
    (["--scorer", "contrast", "--prompt", "x", "--prompts", "p.csv"], "not both"),
    (["--scorer", "contrast", "--precision", "fp8"], "precision"),
])
def test_cli_usage_errors_exit_2(tmp_path, folder, extra, message):
    res = runner.invoke(app, ["score", str(folder), "--out", str(tmp_path / "o.csv"), *extra])
    assert res.exit_code == 2 and message in res.output


def test_cli_missing_path_bad_out_and_leftover_journal(tmp_path, folder):
    res = runner.invoke(app, ["score", str(tmp_path / "nope"), "-s", "contrast", "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["score", str(folder), "-s", "contrast", "--out", str(tmp_path / "o.xlsx")])
    assert res.exit_code == 2 and "unsupported extension" in res.output
    journal_path(tmp_path / "o.csv").write_text("")
    res = runner.invoke(app, ["score", str(folder), "-s", "contrast", "--out", str(tmp_path / "o.csv"), "--workers", "0"])
    assert res.exit_code == 2 and "--resume" in res.output
