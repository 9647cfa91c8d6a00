"""`imgpref align`: Diffusion-DPO / MaPO training on a preference manifest.

`imgpref align --config FILE [--data MANIFEST] --out DIR [--set key=value ...]` trains; the subcommands
`imgpref align pairs ...` and `imgpref align eval ...` live in `imgpref.cli.align_pairs` (added when present).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import List, Optional

import typer

from imgpref.cli.errors import usage_error

align_app = typer.Typer(
    help="Align a diffusion pipeline with preference pairs (Diffusion-DPO, MaPO). Without a subcommand: train.",
    invoke_without_command=True,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
)


@align_app.callback()
def align_train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Align recipe (YAML), e.g. configs/align/tiny_dpo.yaml."),
    data: Optional[Path] = typer.Option(None, "--data", help="Preference manifest (overrides data.manifest of the recipe)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder: checkpoints/, logs/, aligned/ (the export)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key, e.g. --set model.beta=1000 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from OUT/checkpoints/last.ckpt."),
) -> None:
    """Train with --config on --data and export to --out/aligned; --resume continues the run already in --out."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None or out is None:
        usage_error("training needs --config FILE and --out DIR (or a subcommand: pairs, eval); "
                    "see imgpref align --help")
    try:
        _check_out(out, resume)  # before the heavy imports: a usage error answers at once
        from imgpref.align.train import align, parse_set
        from imgpref.cli.lightning_logs import configure_lightning_logging

        overrides = parse_set(set_)
        overrides["resume"] = resume  # the flag decides, not the recipe: a run never resumes unasked
        configure_lightning_logging()
        result = align(config, data, out, **overrides)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    d = result.data
    typer.echo(f"pairs: {d['pairs']} from {d['rows']} rows; ties dropped: {d['ties_dropped']}, kept: "
               f"{d['ties_kept']}; unreadable pairs left out: {d['unreadable_pairs']}")
    typer.echo(json.dumps({"steps": result.steps, "export": str(result.export_dir),
                           "resumed_from": result.resumed_from,
                           **{k: round(v, 6) for k, v in result.metrics.items()}}, indent=2))


def _check_out(out: Path, resume: bool) -> None:
    """A new run needs an empty (or new) --out; --resume needs the checkpoint of an earlier run there."""
    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {last}; run without --resume to start a new run")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds an earlier run" if last.is_file() else "is not an empty folder"
        raise ValueError(f"--out {out} {what}; pass --resume to continue it, or choose a new --out")


def _attach_subcommands() -> None:
    try:
        mod = importlib.import_module("imgpref.cli.align_pairs")
    except ModuleNotFoundError as exc:  # the pairs/eval commands are optional until written
        if exc.name != "imgpref.cli.align_pairs":
            raise
        return
    mod.add_commands(align_app)


_attach_subcommands()


def register(app: typer.Typer) -> None:
    """Attach `imgpref align` (training) and its subcommands to the root app."""
    app.add_typer(align_app, name="align")
