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
    assert bad.exit_code == 2 and "flickr" in bad.output


def test_convert_cli_user_error(tmp_path):
    result = runner.invoke(app, ["data", "convert", "--from", "hpdv2", str(tmp_path / "none"), "--out",
                                 str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "HPDv2 source not found" in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output


def test_validate_missing_manifest_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "none.csv")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: manifest not found: {tmp_path / 'none.csv'} (pass a .csv, .jsonl or .parquet file)"


def test_synth_into_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "f" / "s"), "--scenes", "1"])
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_rich_markup_in_paths_and_cells_prints_verbatim(tmp_path):
    # a folder named "a[" holding "x]b.csv": the path contains "[/x]", which rich would parse as a closing tag
    folder = tmp_path / "a["
    folder.mkdir()
    path = folder / "x]b.csv"
    pd.DataFrame([{"image_0": "[bold]0.png", "image_1": "[/x]1.png", "votes_0": 1, "votes_1": 0,
                   "votes_tie": 0}]).to_csv(path, index=False)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 1, result.output  # problems found (missing images), not a crash in rich
    assert f"2 problem(s) in {path}" in result.output
    assert "missing image file '[bold]0.png'" in result.output and "missing image file '[/x]1.png'" in result.output
