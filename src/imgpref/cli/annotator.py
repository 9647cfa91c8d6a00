"""`imgpref annotator fit`: add a new annotator to a pluralistic scorer from a few of their pairs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from imgpref.cli.errors import usage_error

annotator_app = typer.Typer(help="Per-annotator (pluralistic) scorers: fit a new annotator's taste.",
                            no_args_is_help=True)


@annotator_app.command("fit")
def fit_command(
    scorer: Path = typer.Option(..., "--scorer", help="Scorer folder with a pluralistic head."),
    data: Path = typer.Option(..., "--data", help="Manifest with the new annotator's pairs (rows of annotator NAME "
                              "when its annotator column has any, else every row)."),
    name: str = typer.Option(..., "--name", help="Name of the new annotator."),
    out: Optional[Path] = typer.Option(None, "--out", help="New scorer folder to write (default: SCORER-NAME)."),
    split: Optional[str] = typer.Option(None, "--split", help="Use only this split's rows (default: all rows)."),
    include_in_population: bool = typer.Option(
        False, "--include-in-population", help="Let the new annotator count in the population mixture (it moves "
        "every default score); by default the population stays the earlier annotators' mean."),
    l2: float = typer.Option(0.01, "--l2", min=0.0, help="Pull of the mixture logits towards uniform weights."),
) -> None:
    """Fit only NAME's K mixture weights on DATA and write SCORER plus NAME as a new scorer folder."""
    from imgpref.scorers.annotators import fit_annotator
    from imgpref.scorers.folder import save_scorer
    from imgpref.scorers.registry import load_scorer

    dest = out if out is not None else scorer.with_name(f"{scorer.name}-{name}")
    try:
        if not (scorer / "scorer.yaml").is_file():
            raise FileNotFoundError(f"--scorer {scorer} is not a scorer folder (no scorer.yaml)")
        if dest.resolve() == scorer.resolve():
            raise ValueError(f"--out {dest} is the input scorer folder; write the new scorer to another folder")
        if dest.exists() and any(dest.iterdir()):
            raise ValueError(f"--out {dest} exists and is not empty; give a new folder")
        model = load_scorer(str(scorer))
        model.eval()
        info = fit_annotator(model, data, name, include_in_population=include_in_population, split=split, l2=l2)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    save_scorer(model, dest)
    typer.echo(json.dumps({**info, "scorer": str(dest)}, indent=2))


def register(app: typer.Typer) -> None:
    """Add `imgpref annotator ...` to the root app."""
    app.add_typer(annotator_app, name="annotator")
