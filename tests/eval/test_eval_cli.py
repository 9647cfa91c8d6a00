"""`imgpref eval` and `imgpref data audit` through typer's CliRunner, with the tiny scorer patched in."""
import json

import pytest
from typer.testing import CliRunner

import imgpref.eval.evaluate as evaluate_mod
from imgpref.cli import app


def _ensure_audit_registered():
    """Until the lead lists "audit" in imgpref.cli._PARTS, attach it here (once)."""
    for group in app.registered_groups:
        if group.name == "data" and any(c.name == "audit" for c in group.typer_instance.registered_commands):
            return
    from imgpref.cli.audit import register

    register(app)


@pytest.fixture
def manifest(tmp_path, kit):
    img = tmp_path / "img"
    a, b, c = kit.solid(img, "a.png", 204), kit.solid(img, "b.png", 102), kit.solid(img, "c.png", 0)
    rows = [
        dict(image_0=f"img/{a}", image_1=f"img/{b}", votes_0=8, votes_1=1, votes_tie=1, group="A", split="test"),
        dict(image_0=f"img/{b}", image_1=f"img/{c}", votes_0=3, votes_1=5, votes_tie=2, group="A", split="test"),
        dict(image_0=f"img/{a}", image_1=f"img/{c}", votes_0=1, votes_1=24, votes_tie=0, group="A", split="test"),
    ]
    return kit.write_manifest_csv(tmp_path / "m.csv", rows)


def test_eval_cli_writes_metrics(manifest, tmp_path, kit, monkeypatch):
    seen = []
    monkeypatch.setattr(evaluate_mod, "load_scorer", lambda spec: seen.append(spec) or kit.make_scorer())
    out = tmp_path / "res" / "metrics.json"
    res = CliRunner().invoke(app, ["eval", "--scorer", "tiny-red", "--data", str(manifest), "--out", str(out),
                                   "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    assert seen == ["tiny-red"]
    m = json.loads(out.read_text())
    # (a,b) right, (b,c) wrong (majority c), (a,c) wrong (majority c) -> 1/3
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["n_pairs"] == 3 and m["protocol"] == "votes" and m["split"] == "test"
    assert (out.parent / "metrics_reliability.png").exists() and (out.parent / "metrics_groups.csv").exists()


def test_eval_cli_reports_user_errors(manifest, tmp_path, kit, monkeypatch):
    monkeypatch.setattr(evaluate_mod, "load_scorer", lambda spec: kit.make_scorer())
    res = CliRunner().invoke(app, ["eval", "--scorer", "x", "--data", str(manifest), "--split", "val",
                                   "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 2
    assert "no rows in split 'val'" in res.output


def test_audit_cli(manifest, tmp_path, kit, monkeypatch):
    _ensure_audit_registered()
    monkeypatch.setattr(evaluate_mod, "load_scorer", lambda spec: kit.make_scorer(bt_scale=5.0))
    out = tmp_path / "audit.csv"
    res = CliRunner().invoke(app, ["data", "audit", str(manifest), "--scorer", "x", "--out", str(out)])
    assert res.exit_code == 0, res.output
    # only (a,c): 24 of 25 votes for c, model P(c) = sig(-4) = 0.018 -> 1 flagged
    assert "3 pairs, 3 with a majority, 1 flagged" in res.output
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[1].startswith("3,")
