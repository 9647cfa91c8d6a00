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
    from imgpref.cli.errors import usage_error
    from imgpref.cli.lightning_logs import configure_lightning_logging
    from imgpref.demo import run_demo

    if out.exists() and not out.is_dir():
        usage_error(f"--out {out} is a file; pass a folder (it is created if missing)")
    configure_lightning_logging()
    try:
        summary = run_demo(out, quick=quick, log=typer.echo)
    except (ValueError, FileNotFoundError) as exc:  # e.g. the demo run outside a checkout (no configs/)
        usage_error(exc)
    typer.echo(json.dumps({k: summary[k] for k in ("train", "align")}, indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add `imgpref demo` to the root app."""
    app.command("demo")(demo)
