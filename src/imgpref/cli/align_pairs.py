"""`imgpref align pairs` (scorer-labelled on-policy pairs) and `imgpref align eval` (aligned vs base win rate).

Attached to the `imgpref align` group by `imgpref.cli.align` through `add_commands`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List, Optional

import typer

from imgpref.align.defaults import DEFAULT_GUIDANCE, DEFAULT_STEPS
from imgpref.cli.errors import usage_error

# Not "--weight": `--weights` names weight files of a preset (imgpref score, compare).
_REWARD_WEIGHT_HELP = ("Weight of each --scorer, in order, in the sum of z-scored rewards (default 1 each; ignored "
                       "for a single scorer). Repeatable.")


def pairs(
    pipeline: str = typer.Option(..., "--pipeline", help="Pipeline folder (save_pretrained; SD1.5, SDXL, SD3/SD3.5 or FLUX), or 'tiny' / 'tiny-sdxl' / 'tiny-sd3' / 'tiny-flux' for the offline test pipelines."),
    prompts: Path = typer.Option(..., "--prompts", help="Prompts: .txt (one per line) or CSV/JSONL with a 'prompt' column."),
    n: int = typer.Option(4, "--n", help="Images generated per prompt (K >= 2)."),
    scorer: List[str] = typer.Option(..., "--scorer", help="Scorer name or folder (repeatable), e.g. exposure, pickscore."),
    reward_weight: Optional[List[float]] = typer.Option(None, "--reward-weight", help=_REWARD_WEIGHT_HELP),
    mode: str = typer.Option("best-worst", "--mode", help="best-worst: one pair per prompt; all: every ranked pair."),
    out: Path = typer.Option(..., "--out", help="Output folder: images/, manifest.csv, generations.csv, latents.safetensors."),
    min_margin: float = typer.Option(0.0, "--min-margin", help="Drop (and count) pairs whose reward difference is below this."),
    keep_ties: bool = typer.Option(False, "--keep-ties", help="Write tied pairs as votes 0/0/1 rows instead of dropping them."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="Share of prompts held out as split 'val' (whole prompts)."),
    seed: int = typer.Option(0, "--seed", help="Base seed: image k of prompt i uses seed + i*n + k."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help="Sampler steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, "--guidance", help="Classifier-free guidance scale (<= 1 disables it)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per pipeline call."),
    height: Optional[int] = typer.Option(None, "--height", help="Image height (default: the pipeline's)."),
    width: Optional[int] = typer.Option(None, "--width", help="Image width (default: the pipeline's)."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: where the pipeline loads)."),
    lists: bool = typer.Option(False, "--lists", help="Keep all N images per prompt with their RankDPO gains (win rate over scorers and images) for `model.method: rankdpo` with `data.lists: true` (data_cards/align_lists.md)."),
) -> None:
    """Generate N images per prompt, score them, and write best-vs-worst (or all ranked) pairs as a manifest."""
    from imgpref.align.pairs import label_pairs
    from imgpref.align.prompts import read_prompts

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = label_pairs(
            pipeline, read_prompts(prompts), list(scorer), out, n=n, weights=reward_weight or None, mode=mode,
            min_margin=min_margin, keep_ties=keep_ties, val_fraction=val_fraction, base_seed=seed,
            batch_size=batch_size, num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
            device=device, progress=True, lists=lists,
        )
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    typer.echo(report.summary())
    recipe = suggested_recipe(pipeline)
    extra = " --set model.method=rankdpo --set data.lists=true" if lists else ""
    typer.echo(f"train on it: imgpref align --config {recipe} --data {report.manifest} --set pipeline={pipeline} "
               f"--set data.latents=auto{extra} --out RUN")


# The DPO recipe that fits each pipeline class (configs/align/); the tiny pipelines have their own.
_RECIPES = {"tiny": "tiny_dpo.yaml", "tiny-sdxl": "tiny_dpo.yaml", "tiny-sd3": "tiny_dpo_sd3.yaml",
            "tiny-flux": "tiny_dpo_flux.yaml", "StableDiffusionPipeline": "dpo_sd15.yaml",
            "StableDiffusionXLPipeline": "dpo_sdxl.yaml", "StableDiffusion3Pipeline": "dpo_sd35.yaml",
            "FluxPipeline": "dpo_flux.yaml"}


def suggested_recipe(pipeline: str) -> str:
    """configs/align/<recipe> for a `--pipeline` value: a tiny name, or a folder whose model_index.json names the
    diffusers class (unknown classes fall back to the SD1.5 recipe, whose keys every UNet pipeline shares)."""
    name = _RECIPES.get(pipeline)
    if name is None:
        index = Path(pipeline) / "model_index.json"
        cls = json.loads(index.read_text()).get("_class_name", "") if index.is_file() else ""
        name = _RECIPES.get(cls, "dpo_sd15.yaml")
    return f"configs/align/{name}"


def eval_(
    base: str = typer.Option(..., "--base", help="Base pipeline folder, or 'tiny' / 'tiny-sdxl' / 'tiny-sd3' / 'tiny-flux'."),
    aligned: Path = typer.Option(..., "--aligned", help="Output of `imgpref align` (run folder or its aligned/): LoRA or full UNet."),
    prompts: Path = typer.Option(..., "--prompts", help="Held-out prompts: .txt or CSV/JSONL with a 'prompt' column."),
    scorer: List[str] = typer.Option(..., "--scorer", help="Scorer name or folder (repeatable)."),
    reward_weight: Optional[List[float]] = typer.Option(None, "--reward-weight", help=_REWARD_WEIGHT_HELP),
    seeds: int = typer.Option(4, "--seeds", help="Images (seeds) per prompt, identical for base and aligned."),
    out: Path = typer.Option(..., "--out", help="Output folder: metrics.json, grid.png, report.html."),
    seed: int = typer.Option(1_000_000, "--seed", help="Base seed of the evaluation images."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", help="Sampler steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, "--guidance", help="Classifier-free guidance scale."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per pipeline call."),
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="Bootstrap resamples for the 95% interval."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ..."),
) -> None:
    """Generate from base and aligned with the same seeds; report the win rate with a bootstrap 95% interval."""
    from imgpref.align.evaluate import evaluate_alignment
    from imgpref.align.prompts import read_prompts

    try:
        result = evaluate_alignment(
            base, aligned, read_prompts(prompts), list(scorer), out, weights=reward_weight or None, seeds=seeds,
            base_seed=seed, batch_size=batch_size, num_inference_steps=steps, guidance_scale=guidance,
            n_boot=n_boot, device=device, progress=True,
        )
    except (ValueError, FileNotFoundError) as exc:
        usage_error(exc)
    typer.echo(result.summary())
    typer.echo(json.dumps(result.files, indent=2))


def add_commands(align_app: typer.Typer) -> None:
    """Add `pairs` and `eval` to the `imgpref align` group."""
    align_app.command("pairs")(pairs)
    align_app.command("eval")(eval_)
