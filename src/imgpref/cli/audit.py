"""`imgpref data audit`: per-pair vote confidence and the pairs a scorer strongly disagrees with."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgpref.cli.errors import usage_error


def audit_command(
    manifest: Path = typer.Argument(..., help="Canonical manifest (CSV, JSONL or Parquet)."),
    scorer: str = typer.Option(..., "--scorer", help="Preset name or scorer folder."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV with one row per pair, most suspicious first."),
    split: str = typer.Option("all", "--split", help="train, val, test, or 'all' rows."),
    threshold: float = typer.Option(0.2, "--threshold", help="Flag when the scorer's P(majority side) is below this."),
    min_confidence: float = typer.Option(
        0.9, "--min-confidence",
        help="Only flag pairs whose votes give at least this posterior P(majority right); one hard vote gives 0.75.",
    ),
    ensemble: int = typer.Option(0, "--ensemble", min=0, help="K logistic heads on cached embeddings (0 = none)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    top: int = typer.Option(10, "--top", min=0, help="How many flagged pairs to print."),
) -> None:
    """Audit MANIFEST's labels: vote confidence per pair and where the scorer strongly disagrees."""
    from imgpref.eval.audit import audit

    try:
        table = audit(scorer, manifest, split=split, out=out, threshold=threshold, min_confidence=min_confidence,
                      ensemble=ensemble, seed=seed, batch_size=batch_size)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    flagged = table[table["flagged"]]
    typer.echo(f"{len(table)} pairs, {int((table['majority'] != 'tie').sum())} with a majority, "
               f"{len(flagged)} flagged (confidence >= {min_confidence}, scorer P(majority) < {threshold})")
    cols = ["row", "image_0", "image_1", "votes_0", "votes_1", "votes_tie", "confidence", "p_model_majority"]
    if top and len(flagged):
        typer.echo(flagged[cols].head(top).to_string(index=False))
    if out is not None:
        typer.echo(f"wrote {out}")


def add_audit(data_app: typer.Typer) -> None:
    """Add the `audit` command to the `data` sub-typer (once)."""
    if any(getattr(c, "name", None) == "audit" for c in data_app.registered_commands):
        return
    data_app.command("audit")(audit_command)


def register(app: typer.Typer) -> None:
    """Attach `audit` to the `data` sub-typer.

    Accepts either the `data` sub-typer itself (what `imgpref.cli.data` passes) or the root app (where it finds
    the registered `data` group, or creates one if `imgpref.cli.data` is not loaded). Calling it twice is harmless.
    """
    try:
        from imgpref.cli.data import data_app as known_data_app
    except ImportError:
        known_data_app = None
    if app is known_data_app:
        add_audit(app)
        return
    for group in app.registered_groups:
        name = group.name or (group.typer_instance.info.name if group.typer_instance is not None else None)
        if name == "data" and group.typer_instance is not None:
            add_audit(group.typer_instance)
            return
    data_app = typer.Typer(help="Preference data: validate, convert, synthesise, audit.", no_args_is_help=True)
    add_audit(data_app)
    app.add_typer(data_app, name="data")
