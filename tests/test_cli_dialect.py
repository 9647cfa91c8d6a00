"""One CLI dialect across every command group: option names, usage errors (exit 2, one line, no traceback),
`imgpref align` never resuming unasked, and Lightning's terminal lines printed once, without tips."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from imgpref.cli import app
from tiny_recipe import small_overrides  # tests/tiny_recipe.py

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _commands():
    """(path, command) for every command and group of the root app, depth first."""
    root = typer.main.get_command(app)

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    return list(walk(root, []))


def test_every_command_group_is_reachable():
    names = {" ".join(p) for p, _ in _commands()}
    assert {"score", "compare", "train", "eval", "demo", "data", "data validate", "data convert", "data synth",
            "data audit", "align", "align pairs", "align eval"} <= names


def test_one_name_per_option_everywhere():
    seen = {}
    for path, cmd in _commands():
        for param in cmd.params:
            for opt in param.opts:
                seen.setdefault(opt, []).append(" ".join(path))
    assert "--bootstrap" not in seen, seen.get("--bootstrap")  # bootstrap resamples are --n-boot everywhere
    assert "--weight" not in seen, seen.get("--weight")  # reward weights: --reward-weight; files: --weights
    assert {"eval", "compare", "align eval"} <= set(seen["--n-boot"])
    assert {"align pairs", "align eval"} <= set(seen["--reward-weight"])
    assert "--no-resume" not in seen and {"align", "train"} <= set(seen["--resume"])


def _assert_usage_error(result, needle: str) -> None:
    """Exit 2, no traceback, and exactly one line that holds the message."""
    out = result.output
    assert result.exit_code == 2, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if needle in line]
    assert len(lines) == 1, out


# One bad path for every command group (our own errors: the whole output is one "error: ..." line).
BAD_PATHS = [
    (["score", "{tmp}/none", "--scorer", "exposure", "--out", "{tmp}/s.csv"], "none"),
    (["compare", "{tmp}/none", "{tmp}/none2", "--scorer", "exposure"], "none"),
    (["data", "validate", "{tmp}/none.csv"], "none.csv"),
    (["data", "convert", "{tmp}/none", "--from", "dear", "--out", "{tmp}/m.csv"], "none"),
    (["data", "synth", "--out", "{tmp}/file/s", "--scenes", "1"], "file"),
    (["data", "audit", "{tmp}/none.csv", "--scorer", "exposure"], "none.csv"),
    (["eval", "--scorer", "exposure", "--data", "{tmp}/none.csv", "--out", "{tmp}/m.json"], "none.csv"),
    (["train", "--config", "{tmp}/none.yaml", "--data", "{tmp}/none.csv", "--out", "{tmp}/t"], "none"),
    (["align", "--config", "{tmp}/none.yaml", "--out", "{tmp}/a"], "none.yaml"),
    (["align", "pairs", "--pipeline", "tiny", "--prompts", "{tmp}/none.txt", "--scorer", "exposure", "--out",
      "{tmp}/p"], "none.txt"),
    (["align", "eval", "--base", "tiny", "--aligned", "{tmp}/a", "--prompts", "{tmp}/none.txt", "--scorer",
      "exposure", "--out", "{tmp}/e"], "none.txt"),
    (["demo", "--out", "{tmp}/file"], "file"),
]


@pytest.mark.parametrize("args,needle", BAD_PATHS, ids=[" ".join(a[:2]) for a, _ in BAD_PATHS])
def test_bad_path_is_one_line_exit_2(args, needle, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = runner.invoke(app, [a.format(tmp=tmp_path) for a in args])
    _assert_usage_error(result, needle)
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output


GROUPS = [["score"], ["compare"], ["data", "validate"], ["data", "convert"], ["data", "synth"], ["data", "audit"],
          ["eval"], ["train"], ["align"], ["align", "pairs"], ["align", "eval"], ["demo"]]


@pytest.mark.parametrize("group", GROUPS, ids=" ".join)
def test_bad_option_exits_2_without_traceback(group):
    # click's own parse errors: a usage hint plus one line naming the option
    _assert_usage_error(runner.invoke(app, [*group, "--no-such-option"]), "--no-such-option")


# ---------------------------------------------------------------------------------------------- align resume
RECIPE = ROOT / "configs" / "align" / "tiny_dpo.yaml"


def test_align_does_not_resume_unasked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    result = runner.invoke(app, ["align", "--config", str(RECIPE), "--data", str(tmp_path / "m.csv"),
                                 "--out", str(run)])
    _assert_usage_error(result, "pass --resume")
    assert f"--out {run} holds an earlier run" in result.output


def test_align_into_a_non_empty_folder_is_a_usage_error(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["align", "--config", str(RECIPE), "--out", str(tmp_path)])
    _assert_usage_error(result, "is not an empty folder")
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "config.yaml").exists()


def test_align_resume_needs_a_checkpoint(tmp_path):
    result = runner.invoke(app, ["align", "--config", str(RECIPE), "--out", str(tmp_path / "new"), "--resume"])
    _assert_usage_error(result, "--resume: no checkpoint")
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------------ Lightning lines
_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    torch.set_num_threads(1)
    from imgpref.cli import main
    for argv in {runs!r}:
        print("=== " + argv[0], file=sys.stderr, flush=True)
        sys.argv = ["imgpref", *argv]
        try:
            main()
        except SystemExit as exc:
            print("=== exit", exc.code, file=sys.stderr, flush=True)
""")


@pytest.mark.slow
def test_lightning_lines_once_and_no_tips(tmp_path, light_dark_pairs):
    """`imgpref train` and `imgpref align` (through the console-script entry point) print each Lightning line
    at most once and none of its advertising tips."""
    from imgpref.data.synth import make_rendering_dataset

    make_rendering_dataset(tmp_path / "syn", scenes=6, seed=3, size=32)
    manifest = light_dark_pairs(tmp_path / "pairs", n=2, tie=False)
    train = ["train", "--config", str(ROOT / "configs" / "train" / "tiny_rendering.yaml"), "--data",
             str(tmp_path / "syn" / "manifest.csv"), "--out", str(tmp_path / "t"), "--no-progress"]
    for o in small_overrides("imgpref-tiny-dialect-test", "trainer.max_epochs=1", batch_size=32):
        train += ["--set", o]
    align = ["align", "--config", str(RECIPE), "--data", str(manifest), "--out", str(tmp_path / "a"),
             "--set", "trainer.max_steps=1", "--set", "data.latents=null", "--set", "data.batch_size=2"]
    proc = subprocess.run([sys.executable, "-u", "-c", _SCRIPT.format(runs=[train, align])], cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    out = proc.stdout
    sections = out.split("=== ")[1:]
    assert [s.split()[0] for s in sections] == ["train", "exit", "align", "exit"], out
    assert sections[1].split()[1] == "0" and sections[3].split()[1] == "0", out
    assert "Tip:" not in out and "litlogger" not in out and "litmodels" not in out, out
    for section in (sections[0], sections[2]):
        lines = [line for line in section.splitlines() if line.strip()]
        assert sum("GPU available" in line for line in lines) == 1, section  # shown, once
        assert len(lines) == len(set(lines)), section  # no line printed twice
