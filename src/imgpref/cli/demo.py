"""`imgpref demo`: the whole toolkit end to end on bundled data, offline."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo writes."),
    quick: bool = typer.Option(False, "--quick", help="Smaller data and shorter training (about a minute)."),
) -> None:
    """Score bundled photos, train + evaluate a tiny rendering scorer, align a tiny diffusion pipeline."""
    from imgpref.demo import run_demo

    summary = run_demo(out, quick=quick, log=typer.echo)
    typer.echo(json.dumps({k: summary[k] for k in ("train", "align")}, indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
