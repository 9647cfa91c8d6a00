"""Bad input gets a clear one-line error and nothing is lost. Regression tests for issue 7 items 4 and 5: on the
commit before, a file name that is not UTF-8 killed the run, `--out`/`--report` folders and a `--cache` file
failed after the work (or with a traceback), rich markup in names crashed the summary, a usage error left an
empty journal that blocked the next run, and CSV cells could run as spreadsheet formulas."""
from __future__ import annotations

import math
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from imgpref.cli import app
from imgpref.scorers.output import journal_path, read_scores, write_scores
from imgpref.scorers.score_paths import score_paths

runner = CliRunner()
RUN = {"num_workers": 0, "progress": False}


@pytest.fixture
def odd_names(tmp_path, good_images):
    """A folder with a good image and a broken file whose names are not valid UTF-8."""
    folder = tmp_path / "imgs"
    good_images(folder, 2)
    raw = os.fsencode(folder)
    good = raw + b"/caf\xe9-latin1.png"  # Latin-1 bytes: not UTF-8
    with open(os.fsencode(folder / "img000.png"), "rb") as src, open(good, "wb") as dst:
        dst.write(src.read())
    bad = raw + b"/broken-\xff.png"
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    return folder, os.fsdecode(good), os.fsdecode(bad)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_non_utf8_file_names_are_scored_written_losslessly_and_resumed(tmp_path, odd_names, suffix):
    folder, good, bad = odd_names
    out = tmp_path / f"o{suffix}"
    table = score_paths(folder, ["exposure"], out=out, **RUN)
    back = read_scores(out)
    assert set(back["path"]) == {str(folder / "img000.png"), str(folder / "img001.png"), good, bad}
    row = back[back["path"] == good].iloc[0]
    twin = back[back["path"] == str(folder / "img000.png")].iloc[0]
    assert row["error"] is None and row["score"] == pytest.approx(twin["score"])  # same bytes, same score
    assert back[back["path"] == bad].iloc[0]["error"] is not None
    assert os.path.exists(row["path"]) and os.fsencode(row["path"]).endswith(b"caf\xe9-latin1.png")
    again = score_paths(folder, ["exposure"], out=out, resume=True, **RUN)
    assert again.attrs["stats"]["rows_resumed"] == 3 and len(read_scores(out)) == 4 == len(table)


def test_cli_with_non_utf8_names_prints_them_and_exits_0(tmp_path, odd_names):
    folder, _, _ = odd_names
    res = runner.invoke(app, ["score", str(folder), "-s", "exposure", "--out", str(tmp_path / "o.csv"),
                              "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "broken-\\xff.png" in res.output  # the undecodable byte shown as an escape


@pytest.mark.parametrize("option", ["--out", "--report", "--cache"])
def test_output_options_pointing_at_the_wrong_kind_fail_before_work(tmp_path, good_images, option, monkeypatch):
    good_images(tmp_path / "imgs", 2)
    (tmp_path / "adir.csv").mkdir()
    (tmp_path / "adir.html").mkdir()
    (tmp_path / "afile").write_text("x")
    import imgpref.cli.score as cli_score

    def no_loading(*a, **k):  # "before any work": the scorers are not even loaded
        raise AssertionError("scorers loaded despite a usage error")

    monkeypatch.setattr(cli_score, "load_scorers_for_cli", no_loading)
    out = tmp_path / "adir.csv" if option == "--out" else tmp_path / "o.csv"
    args = ["score", str(tmp_path / "imgs"), "-s", "exposure", "--out", str(out), "--workers", "0", "-q"]
    if option == "--report":
        args += ["--report", str(tmp_path / "adir.html")]
    if option == "--cache":
        args += ["--cache", str(tmp_path / "afile")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in res.output
    assert not journal_path(out).exists()


def test_usage_error_found_while_planning_leaves_no_journal(tmp_path, good_images):
    good_images(tmp_path / "imgs", 2)
    prompts = tmp_path / "p.csv"
    prompts.write_text("file,prompt\nimg000.png,one\nimg000.png,two\n")  # ambiguous: two prompts for one image
    out = tmp_path / "o.csv"
    args = ["score", str(tmp_path / "imgs"), "-s", "exposure", "--out", str(out), "--workers", "0", "-q"]
    res = runner.invoke(app, args + ["--prompts", str(prompts)])
    assert res.exit_code == 2 and "several rows" in res.output
    assert not journal_path(out).exists()
    assert runner.invoke(app, args).exit_code == 0  # the next run is not blocked


def test_rich_markup_in_names_is_shown_not_parsed(tmp_path, good_images, monkeypatch):
    import imgpref.cli.score as cli_score
    from imgpref.scorers.registry import load_scorer

    good_images(tmp_path / "imgs", 2)
    (tmp_path / "imgs" / "bad[").mkdir()
    (tmp_path / "imgs" / "bad[" / "x].png").write_bytes(b"")  # the path holds "bad[/x].png"

    def load(specs, weights, device):
        s = load_scorer("exposure")
        s.info.name = "odd[/b]name[bold]"
        return [s]

    monkeypatch.setattr(cli_score, "load_scorers_for_cli", load)
    out = tmp_path / "[" / "x]" / "o.csv"  # "[/x]" inside the output path
    res = runner.invoke(app, ["score", str(tmp_path / "imgs"), "-s", "x", "--out", str(out), "--workers", "0"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "odd[/b]name[bold]" in text and "bad[/x].png" in text and "[/x]" in text


def test_score_csv_cells_cannot_run_as_formulas(tmp_path):
    table = pd.DataFrame({
        "path": ['=HYPERLINK("http://x")', "+1.png", "-2.png", "@SUM(A1).png", "'quoted.png", "plain.png"],
        "scorer": ["s"] * 6,
        "score": [-1.5, 2.0, -0.25, math.nan, 3.0, -7.0],
        "prompt": ["=1+1", None, "-", "ok", None, "@me"],
        "error": [None, None, None, "=cmd|' /C calc'!A0", None, None],
    })
    out = write_scores(table, tmp_path / "o.csv")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)  # what a spreadsheet program would see
    for col in ("path", "prompt", "error"):
        for cell in raw[col]:
            assert not cell.startswith(("=", "+", "-", "@")), (col, cell)
    assert list(raw["score"]) == ["-1.5", "2.0", "-0.25", "", "3.0", "-7.0"]  # numbers stay numbers
    back = read_scores(out)  # and our own reader restores every cell exactly
    assert list(back["path"]) == list(table["path"])
    assert list(back["prompt"]) == ["=1+1", None, "-", "ok", None, "@me"]
    assert back["error"].iloc[3] == "=cmd|' /C calc'!A0"


def test_compare_csv_cells_cannot_run_as_formulas(tmp_path, good_images):
    from imgpref.eval.compare import compare_folders, write_per_image

    for side in ("a", "b"):
        files = good_images(tmp_path / side, 2)
        files[0].rename(files[0].with_name("=2+3.png"))
    result = compare_folders(tmp_path / "a", tmp_path / "b", ["exposure"], n_boot=10, **RUN)
    write_per_image(result, tmp_path / "c.csv")
    raw = pd.read_csv(tmp_path / "c.csv", dtype=str, keep_default_na=False)
    assert "'=2+3.png" in list(raw["rel_path"])
    assert not any(c.startswith(("=", "+", "-", "@")) for col in raw.columns if col not in ("score_a", "score_b")
                   for c in raw[col])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_compare_with_non_utf8_names_writes_every_format(tmp_path, odd_names, suffix):
    import shutil

    from imgpref.eval.compare import compare_folders, write_per_image

    folder, good, _ = odd_names
    shutil.copytree(os.fsencode(folder), os.fsencode(tmp_path / "copy"))
    result = compare_folders(folder, tmp_path / "copy", ["exposure"], n_boot=10, **RUN)
    name = os.path.basename(good)
    row = result.per_image[result.per_image["rel_path"] == name].iloc[0]
    assert row["winner"] == "tie" and row["error"] == ""
    out = write_per_image(result, tmp_path / f"c{suffix}")
    if suffix == ".jsonl":
        import json

        names = [json.loads(line)["rel_path"] for line in out.read_text(encoding="utf-8").splitlines()]
        assert name in names and len(names) == 4
    elif suffix == ".parquet":
        back = pd.read_parquet(out)
        assert name.encode("utf-8", "surrogateescape") in list(back["rel_path"])
    else:
        assert name.encode("utf-8", "surrogateescape") in out.read_bytes()
