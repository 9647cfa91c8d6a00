"""`imgpref data ...`: validate manifests, convert published formats, synthesise rendering preferences.

`imgpref data audit` lives in imgpref.cli.audit; when that module exists, its `register(data_app)` (or a
function named `audit`) is attached to this sub-command group.

Exit status (as for every imgpref command): 0 done; 1 `validate` found problems in the manifest (listed);
2 usage error (missing file, bad option or value), reported on one line.
"""
from __future__ import annotations

import importlib
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imgpref.cli.errors import usage_error

data_app = typer.Typer(help="Preference data: validate, convert, synthesise.", no_args_is_help=True)
_MAX_SHOWN = 500


class Format(str, Enum):
    """Published formats `data convert` reads."""

    dear = "dear"
    pickapic = "pickapic"
    hpdv2 = "hpdv2"
    hpdv3 = "hpdv3"
    imagereward = "imagereward"


@data_app.command("validate")
def validate(manifest: Path = typer.Argument(..., help="Manifest (.csv, .jsonl or .parquet).")) -> None:
    """Check every row of a manifest; exit 1 and list each problem (file, row, column, reason) if any."""
    from imgpref.data.manifest import read_manifest, validate_manifest

    if not manifest.is_file():
        usage_error(f"manifest not found: {manifest} (pass a .csv, .jsonl or .parquet file)")
    console = Console(width=160)
    problems = validate_manifest(manifest)
    if problems:
        table = Table(title=f"{len(problems)} problem(s) in {escape(str(manifest))}")
        for col in ("file", "row", "column", "reason"):
            table.add_column(col, overflow="fold")
        for p in problems[:_MAX_SHOWN]:
            table.add_row(escape(p.file), str(p.row) if p.row else "-", escape(p.column or "-"), escape(p.reason))
        console.print(table)
        if len(problems) > _MAX_SHOWN:
            console.print(f"... and {len(problems) - _MAX_SHOWN} more")
        raise typer.Exit(code=1)
    df = read_manifest(manifest, validate=False)
    votes = df[["votes_0", "votes_1", "votes_tie"]].to_numpy()
    splits = df["split"].replace("", "(none)").value_counts().to_dict()
    table = Table(title=f"{escape(str(manifest))}: valid")
    table.add_column("what")
    table.add_column("value")
    table.add_row("rows (pairs)", str(len(df)))
    table.add_row("splits", escape(", ".join(f"{k}: {v}" for k, v in sorted(splits.items()))))
    table.add_row("groups", str(df["group"].nunique()))
    table.add_row("votes", str(int(votes.sum())))
    table.add_row("tie votes", f"{int(votes[:, 2].sum())} ({votes[:, 2].sum() / max(votes.sum(), 1):.1%})")
    table.add_row("pairs with q = 0.5", str(int(((votes[:, 0] + 0.5 * votes[:, 2]) * 2 == votes.sum(1)).sum())))
    console.print(table)


@data_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Source file or folder in the published layout (see data_cards/)."),
    fmt: Format = typer.Option(..., "--from", help="Source format."),
    out: Path = typer.Option(..., "--out", help="Canonical manifest to write (.csv, .jsonl or .parquet)."),
    images: Path = typer.Option(None, "--images", help="Folder of the images, where the release ships none: "
                                "pickapic no_images (<uid>.<ext>), hpdv2 (per-annotator table), imagereward."),
    per_annotator: bool = typer.Option(False, "--per-annotator", help="dear: one row per annotator and pair "
                                       "(annotator = worker id) instead of votes summed over annotators."),
) -> None:
    """Convert a published preference dataset into the canonical manifest."""
    from imgpref.data.readers import convert as run_convert

    try:
        report = run_convert(fmt.value, src, out, images=images, per_annotator=per_annotator)
    except (ValueError, FileNotFoundError) as exc:  # user-input errors: say what is wrong, no traceback
        usage_error(exc)
    typer.echo(str(report))


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Output folder."),
    scenes: int = typer.Option(60, "--scenes", min=1, help="Number of scenes (6 renderings, 15 pairs each)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (the output is deterministic given it)."),
    size: int = typer.Option(64, "--size", min=8, help="Image side in pixels."),
) -> None:
    """Synthesise a DEAR-style rendering-preference set with known true utilities."""
    from imgpref.data.synth import make_rendering_dataset

    try:
        summary = make_rendering_dataset(out, scenes=scenes, seed=seed, size=size)
    except (ValueError, OSError) as exc:
        usage_error(exc)
    table = Table(title=f"synthetic rendering preferences in {escape(str(out))}")
    for col in ("split", "scenes", "pairs", "oracle acc. vs majority", "human ceiling", "tie share"):
        table.add_column(col)
    for name, s in list(summary["splits"].items()) + [("all", {**summary, "scenes": summary["scenes"]})]:
        table.add_row(name, str(s["scenes"]), str(s["n_pairs"]), f"{s['oracle_accuracy']:.3f}",
                      f"{s['human_ceiling']:.3f}", f"{s['tie_share']:.3f}")
    Console(width=160).print(table)


def _attach_audit() -> None:
    try:
        mod = importlib.import_module("imgpref.cli.audit")
    except ModuleNotFoundError as exc:  # audit not written yet: the other commands still work
        if exc.name == "imgpref.cli.audit":
            return
        raise
    if any(getattr(c, "name", None) == "audit" for c in data_app.registered_commands):
        return
    if hasattr(mod, "register"):
        mod.register(data_app)
    elif hasattr(mod, "audit"):
        data_app.command("audit")(mod.audit)


def register(app: typer.Typer) -> None:
    """Attach `imgpref data ...` to the root app."""
    _attach_audit()
    app.add_typer(data_app, name="data")
