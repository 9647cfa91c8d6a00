"""`imgpref train`: train a reward model from a YAML recipe on a canonical manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def train_command(
    config: Path = typer.Option(..., "--config", help="Training recipe (YAML), e.g. configs/train/tiny_rendering.yaml."),
    data: Path = typer.Option(..., "--data", help="Canonical manifest with a split column (train/val rows are used)."),
    out: Path = typer.Option(..., "--out", help="Output folder: becomes a scorer folder (scorer.yaml + "
                             "model.safetensors) with checkpoints/, logs/ and train_summary.json."),
    overrides: Optional[List[str]] = typer.Option(
        None, "--set", help="Override a recipe value, key.sub=value (YAML value), e.g. --set trainer.max_epochs=5. "
        "Repeatable."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last.ckpt."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the Lightning progress bar."),
) -> None:
    """Train the scorer of CONFIG on DATA; write a scorer folder usable by `imgpref score/eval --scorer OUT`."""
    from imgpref.cli.lightning_logs import configure_lightning_logging
    from imgpref.train.run import train

    configure_lightning_logging()
    try:
        result = train(config, data, out, overrides=list(overrides or []), resume=resume, progress=progress)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2)
    typer.echo(json.dumps({"scorer": str(result.scorer_dir), "epochs": result.epochs, "steps": result.steps,
                           "seconds": round(result.seconds, 1), "bt_scale": round(result.bt_scale, 4),
                           **{k: round(v, 4) for k, v in result.metrics.items()}}, indent=2))
    typer.echo(f"wrote scorer folder {result.scorer_dir}")


def register(app: typer.Typer) -> None:
    """Add `imgpref train` to the root app."""
    app.command("train")(train_command)
