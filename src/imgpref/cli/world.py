"""`imgpref world`: the procedural text-to-image world (issue 8), where alignment is proven against a gold judge.

    imgpref world loop --out DIR [--base BASE_DIR] [--seed S] [--quick] [--methods dpo,mapo]

Other world commands (e.g. `pretrain`) attach themselves from their own module through `add_pretrain(world_app)`
when it exists. Nothing heavy is imported until a command runs (the CLI starts without torch).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Optional

import typer

from imgpref.cli.errors import usage_error

world_app = typer.Typer(name="world", help="The procedural T2I world: gold judge, simulated votes, the whole loop.",
                        no_args_is_help=True)


@world_app.command("loop")
def loop_command(
    out: Path = typer.Option(..., "--out", help="Folder for every output of the loop (loop_summary.json, ...)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base model folder (pipeline/ + clip/); default: the "
                                        "committed base. A missing folder is filled once (committed or pretrained)."),
    seed: int = typer.Option(0, "--seed", help="Seed of prompts, votes, reward model and alignment."),
    quick: bool = typer.Option(False, "--quick", help="A shortened loop (minutes; noisier numbers)."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated subset of dpo,mapo."),
) -> None:
    """Base samples -> simulated votes -> reward model -> RM-labelled pairs -> DPO / MaPO -> gold and proxy eval."""
    from imgpref.world.loop import METHODS, LoopConfig, run_loop

    cfg = LoopConfig.quick(seed) if quick else LoopConfig(seed=seed)
    if methods:
        chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
        bad = [m for m in chosen if m not in METHODS]
        if bad or not chosen:
            usage_error(f"--methods {methods!r}: choose from {','.join(METHODS)}")
        from dataclasses import replace

        cfg = replace(cfg, methods=chosen)
    try:
        summary = run_loop(out, base=base, config=cfg, echo=typer.echo)
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    typer.echo(json.dumps({"rm_ratio_to_oracle": summary["rm_eval"]["ratio"], "final": summary["final"],
                           "seconds": summary["seconds"]}, indent=2))
    typer.echo(f"wrote {Path(out) / 'loop_summary.json'}")


def register(app: typer.Typer) -> None:
    """Attach the `world` group to the root app (and the world commands other modules provide)."""
    try:
        mod = importlib.import_module("imgpref.cli.world_pretrain")
    except ModuleNotFoundError as exc:
        if exc.name != "imgpref.cli.world_pretrain":
            raise
    else:
        mod.add_pretrain(world_app)
    app.add_typer(world_app, name="world")
