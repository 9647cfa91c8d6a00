"""`imgpref world pretrain` and `imgpref world base`: build or export the world's base text-to-image model.

    imgpref world pretrain --out DIR [--seed 0] [--threads 2] [--pack]   # rebuild (Lightning, minutes on a CPU)
    imgpref world pretrain --out DIR --fast --processes 2               # the 10-minute recipe (another base)
    imgpref world pretrain --out DIR --fast --caption-noise 0.3         # a base that also learned mislabelled scenes
    imgpref world base --out DIR                                         # the committed base, in seconds
    imgpref world pretrain-flow --out DIR [--seed 0] [--threads 1]       # the SD3-style flow base (issue 10)

Both write DIR/pipeline (diffusers `save_pretrained`: `imgpref align --pipeline DIR/pipeline`) and DIR/clip (the
world CLIP: `scorer.backbone: {type: hf_clip, source: DIR/clip}` in `imgpref train` recipes).
"""
from __future__ import annotations

import json
from pathlib import Path

import typer


def _check_out_and_threads(out: Path, threads: int) -> None:
    """Usage errors for --out (a folder) and --threads (>= 1), then quiet Lightning logs; shared by both pretrains."""
    from imgpref.cli.errors import usage_error
    from imgpref.cli.lightning_logs import configure_lightning_logging

    if out.exists() and not out.is_dir():
        usage_error(f"--out {out} is a file; pass a folder (it is created if missing)")
    if threads < 1:
        usage_error(f"--threads must be >= 1; got {threads}")
    configure_lightning_logging()


def pretrain_command(
    out: Path = typer.Option(..., "--out", help="Folder for pipeline/, clip/ and pretrain.json."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scenes, the held-out combos and every weight."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads (results depend on the thread count)."),
    processes: int = typer.Option(1, "--processes", help="Data-parallel training ranks of one thread each "
                                  "(Lightning ddp_fork; 2 on 2 cores is ~2x faster than 2 threads). Results "
                                  "depend on it: the committed base was built with 1."),
    pack: bool = typer.Option(False, "--pack", help="Also write the fp16 pack into the package "
                              "(src/imgpref/world/pretrained/), replacing the committed base."),
    quick: bool = typer.Option(False, "--quick", help="A few steps per stage (a smoke test; the model is useless)."),
    fast: bool = typer.Option(False, "--fast", help="The 10-minute recipe (PretrainSizes.fast; use with --processes "
                              "2): another base, not the committed one."),
    caption_noise: float = typer.Option(0.0, "--caption-noise", help="Share of the UNet's training scenes rendered "
                                        "with a wrong colour, count or background that the caption does not say "
                                        "(mislabelled web data; CLIP and VAE still see clean scenes)."),
) -> None:
    """Pretrain the world CLIP, VAE and UNet with Lightning and save the base pipeline (deterministic from --seed)."""
    _check_out_and_threads(out, threads)
    from dataclasses import asdict, replace

    from imgpref.cli.errors import usage_error
    from imgpref.world.base_model import PretrainSizes, pretrain_world, sample_fidelity
    from imgpref.world.reward import world_prompts

    if quick and fast:
        usage_error("--quick and --fast are two different recipes; pass one")
    if not 0.0 <= caption_noise < 1.0:
        usage_error(f"--caption-noise must lie in [0, 1); got {caption_noise}")
    recipe = PretrainSizes.quick() if quick else PretrainSizes.fast() if fast else PretrainSizes()
    sizes = replace(recipe, caption_noise=caption_noise)
    try:
        sizes.check_processes(processes)
    except ValueError as exc:
        usage_error(exc)

    typer.echo(f"pretraining the world base into {out} (seed {seed}, {threads} threads, {processes} processes)")
    pipe, clip, report = pretrain_world(out, seed=seed, sizes=sizes, threads=threads, processes=processes,
                                        log=typer.echo)
    test = world_prompts(seed, 0, 0, 32, combo_seed=seed)["test"]
    fid = sample_fidelity(pipe, test, seeds=2)["fidelity"]
    report.metrics["heldout_fidelity"] = float(fid.mean())
    (out / "pretrain.json").write_text(json.dumps(asdict(report), indent=2))
    typer.echo(f"gold fidelity of samples on {len(test)} held-out prompts x 2 seeds: {fid.mean():.3f}")
    if pack:
        from imgpref.world.store import pack_world

        typer.echo(f"packed into {pack_world(pipe, clip, report=asdict(report))}")
    typer.echo(json.dumps({"seconds": report.seconds, "cpu_seconds": report.cpu_seconds}, indent=None))


def base_command(
    out: Path = typer.Option(..., "--out", help="Folder for pipeline/ and clip/ (save_pretrained folders)."),
) -> None:
    """Write the committed world base (fp16 pack in the package) as save_pretrained folders, without training."""
    from imgpref.cli.errors import usage_error
    from imgpref.world.base_model import save_world
    from imgpref.world.store import load_world

    if out.exists() and not out.is_dir():
        usage_error(f"--out {out} is a file; pass a folder (it is created if missing)")
    try:
        pipe, clip = load_world()
    except FileNotFoundError as exc:
        usage_error(exc)
    save_world(pipe, clip, out)
    typer.echo(f"wrote {out / 'pipeline'} and {out / 'clip'}")


def pretrain_flow_command(
    out: Path = typer.Option(..., "--out", help="Folder for pipeline/ (an SD3 pipeline) and pretrain_flow.json."),
    seed: int = typer.Option(0, "--seed", help="Seed of the scenes, the held-out combos and the transformer."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (results depend on the thread count)."),
    quick: bool = typer.Option(False, "--quick", help="A few steps of a 1-layer transformer (a smoke test)."),
) -> None:
    """Pretrain the flow-matching (SD3-style) world base on the committed world's CLIP and VAE (issue 10)."""
    _check_out_and_threads(out, threads)
    from dataclasses import asdict

    from imgpref.cli.errors import usage_error
    from imgpref.world.flow_base import (FLOW_SAMPLE_SETTINGS, FlowPretrainSizes, flow_sample_fidelity,
                                         pretrain_flow_world)
    from imgpref.world.reward import world_prompts

    try:
        from imgpref.world.store import load_world

        world = load_world()
    except FileNotFoundError as exc:
        usage_error(exc)
    typer.echo(f"pretraining the flow-matching world base into {out} (seed {seed}, {threads} threads)")
    pipe, report = pretrain_flow_world(world, out, seed=seed, sizes=FlowPretrainSizes.quick() if quick else None,
                                       threads=threads, log=typer.echo)
    test = world_prompts(seed, 0, 0, 32, combo_seed=seed)["test"]
    fid = flow_sample_fidelity(pipe, test, seeds=2)["fidelity"]
    report.metrics["heldout_fidelity"] = float(fid.mean())
    (out / "pretrain_flow.json").write_text(json.dumps(asdict(report), indent=2))
    typer.echo(f"gold fidelity of samples on {len(test)} held-out prompts x 2 seeds ({FLOW_SAMPLE_SETTINGS}): "
               f"{fid.mean():.3f}")
    typer.echo(json.dumps({"seconds": report.seconds, "cpu_seconds": report.cpu_seconds}, indent=None))


def add_pretrain(world_app: typer.Typer) -> None:
    """Attach `pretrain`, `base` and `pretrain-flow` to the `imgpref world` group."""
    world_app.command("pretrain")(pretrain_command)
    world_app.command("base")(base_command)
    world_app.command("pretrain-flow")(pretrain_flow_command)
