"""`imgpref eval`: evaluate a scorer on a manifest with one of the published protocols."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from imgpref.cli.errors import usage_error


def eval_command(
    scorer: str = typer.Option(..., "--scorer", help="Preset name (e.g. pickscore) or scorer folder."),
    data: Path = typer.Option(..., "--data", help="Canonical manifest (CSV, JSONL or Parquet)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val, test, or 'all' rows."),
    protocol: str = typer.Option(
        "votes", "--protocol", help="votes (DEAR-style vote metrics) | pickapic | hpd | imagereward."
    ),
    out: Path = typer.Option(Path("metrics.json"), "--out", help="metrics.json to write (votes also writes "
                             "<stem>_reliability.png and <stem>_groups.csv next to it)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per scorer call."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="pickapic only: fixed tie threshold instead of tuning it on the val split."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=1, help="Bootstrap resamples (groups) for the CI."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    annotator: Optional[str] = typer.Option(
        None, "--annotator", help="Pluralistic heads: predict with this annotator's mixture (on their rows)."),
    per_annotator: bool = typer.Option(
        False, "--per-annotator", help="Each row predicted by its own annotator's mixture (pluralistic heads) and "
        "per-annotator accuracy / NLL / ECE with bootstrap CIs next to the population numbers (any head)."),
) -> None:
    """Evaluate SCORER on the rows of DATA in SPLIT and write metrics.json."""
    from imgpref.eval.evaluate import evaluate

    try:
        metrics = evaluate(scorer, data, split=split, protocol=protocol, out=out, batch_size=batch_size,
                           n_resamples=n_boot, seed=seed, threshold=threshold, progress=True,
                           annotator=annotator, per_annotator=per_annotator)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    shown = {k: metrics.get(k) for k in ("protocol", "split", "scorer", "prediction", "accuracy", "accuracy_ci",
                                          "human_ceiling", "nll", "brier", "ece", "kendall_tau", "cyclic_triad_rate",
                                          "model_cyclic_triad_rate", "n_pairs", "n_groups", "per_annotator")
             if k in metrics}
    typer.echo(json.dumps(shown, indent=2))
    if metrics.get("n_skipped_pairs"):
        typer.echo(f"warning: {metrics['n_skipped_pairs']} pair(s) skipped for unreadable images "
                   f"(see image_errors in {out})", err=True)
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add `imgpref eval` to the root app."""
    app.command("eval")(eval_command)
