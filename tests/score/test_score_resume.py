"""A real `imgpref score` run in a subprocess, SIGKILLed after some batches, then resumed with --resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from imgpref.scorers.output import journal_path, read_journal, read_scores

# The CLI as a user runs it, with the scorer loader pointed at two heads on a tiny CLIP whose image tower
# sleeps per batch (so the kill lands mid-run) and counts the images it embeds.
SCRIPT = textwrap.dedent('''
    import os, sys, time, torch, typer
    import imgpref.cli.score as cli_score
    from imgpref.scorers.backbones.open_clip_backbone import OpenClipBackbone
    from imgpref.scorers.base import Scorer, ScorerInfo
    from imgpref.scorers.heads import LinearHead
    from imgpref.scorers.tiny import tiny_open_clip_model

    torch.set_num_threads(1)
    DELAY = float(os.environ["SCORE_DELAY"])
    embedded = [0]

    class Slow(OpenClipBackbone):
        def embed_images(self, pixels):
            time.sleep(DELAY)
            embedded[0] += pixels.shape[0]
            return super().embed_images(pixels)

    def load(specs, weights, device):
        model, name = tiny_open_clip_model(0)
        bb = Slow.from_model(model, name)
        out = []
        for k, spec in enumerate(specs):
            torch.manual_seed(k)
            out.append(Scorer(bb, LinearHead(bb.embed_dim).eval(), ScorerInfo(name=spec)))
        return out

    cli_score.load_scorers_for_cli = load
    app = typer.Typer()  # only the score command: the other parts' imports would slow the test down
    app.callback()(lambda: None)
    cli_score.register(app)
    try:
        app(sys.argv[1:])
    finally:
        with open(os.environ["SCORE_COUNT"], "w") as fh:
            fh.write(str(embedded[0]))
''')


def run(tmp_path, args, delay):
    env = dict(os.environ, SCORE_DELAY=str(delay), SCORE_COUNT=str(tmp_path / "count.txt"))
    script = tmp_path / "run_score.py"
    script.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_with_exactly_one_row_each(tmp_path, good_images):
    n = 20
    good_images(tmp_path / "imgs", n)
    out = tmp_path / "scores.csv"
    args = ["score", str(tmp_path / "imgs"), "-s", "a", "-s", "b", "--out", str(out), "--batch-size", "2",
            "--workers", "1", "-q"]
    proc = run(tmp_path, args, delay=0.25)
    jp = journal_path(out)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:  # wait for >= 2 batches (2 images x 2 scorers each) in the journal
            if jp.exists() and len(read_journal(jp)) >= 8:
                break
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
            time.sleep(0.05)
        else:
            pytest.fail("no batches were journaled in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # the final output is only ever written whole
    rows = read_journal(jp)
    done = {r["path"] for r in rows}
    assert 4 <= len(done) < n and len(rows) == 2 * len(done)

    from typer.testing import CliRunner

    from imgpref.cli import app

    refused = CliRunner().invoke(app, args[:3] + ["contrast"] + args[6:])  # the same run without --resume
    assert refused.exit_code == 2 and "--resume" in refused.output

    proc = run(tmp_path, args + ["--resume"], delay=0.0)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert int((tmp_path / "count.txt").read_text()) == n - len(done)  # only the missing images were scored
    df = read_scores(out)
    assert len(df) == 2 * n and not df.duplicated(["path", "scorer"]).any() and df["error"].isna().all()
    assert not jp.exists()
    before = {(r["path"], r["scorer"]): r["score"] for r in rows}
    after = {(p, s): v for p, s, v in df[["path", "scorer", "score"]].itertuples(index=False)}
    assert all(after[k] == pytest.approx(v, rel=1e-6) for k, v in before.items())
