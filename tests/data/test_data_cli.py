"""`imgpref data validate | convert | synth` through the root typer app."""
from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from imgpref.cli import app

runner = CliRunner()


def test_synth_then_validate_ok(tmp_path):
    out = tmp_path / "s"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--scenes", "4", "--seed", "1", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert "oracle" in result.output and (out / "manifest.csv").is_file() and (out / "utilities.csv").is_file()
    result = runner.invoke(app, ["data", "validate", str(out / "manifest.csv")])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "60" in result.output  # 4 scenes x 15 pairs


def test_validate_reports_problems(tmp_path, images):
    path = tmp_path / "bad.csv"
    pd.DataFrame([
        {"image_0": "img/0.png", "image_1": "img/nope.png", "votes_0": 1, "votes_1": 0, "votes_tie": 0},
        {"image_0": "img/0.png", "image_1": "img/2.png", "votes_0": -3, "votes_1": 0, "votes_tie": 0},
    ]).to_csv(path, index=False)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1
    assert "missing image file" in result.output and "negative votes" in result.output
    assert "2 problem(s)" in result.output


def test_convert_cli(tmp_path, save):
    src = tmp_path / "dear"
    save(src / "s1" / "original.jpg", 1)
    save(src / "s1" / "expertA.jpg", 2)
    pd.DataFrame({"scene": ["s1", "s1"], "left": ["original", "original"], "right": ["expertA", "expertA"],
                  "choice": ["left", "equal"]}).to_csv(src / "votes.csv", index=False)
    out = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "convert", "--from", "dear", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 pair row(s) written" in result.output
    df = pd.read_csv(out)
    assert df[["votes_0", "votes_1", "votes_tie"]].to_numpy().tolist() == [[1, 0, 1]]
    bad = runner.invoke(app, ["data", "convert", "--from", "flickr", str(src), "--out", str(out)])
    assert bad.exit_code != 0


def test_convert_cli_user_error(tmp_path):
    result = runner.invoke(app, ["data", "convert", "--from", "hpdv2", str(tmp_path / "none"), "--out",
                                 str(tmp_path / "m.csv")])
    assert result.exit_code == 1 and "HPDv2 source not found" in result.output
