"""`imgpref score`: score image files and folders with one or more scorers.

Exit status: 0 when the run finished (images that could not be scored are listed in the summary and in the
`error` column); 1 with `--strict` when any image could not be scored (the output is still written);
2 for a usage error (bad option, missing path, unknown scorer, existing journal without --resume, ...).
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import List, Optional

import typer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _weights(specs: list[str], weights: list[str] | None):
    if not weights:
        return None
    if len(weights) == 1 and "=" not in weights[0]:
        if len(specs) != 1:
            raise ValueError("--weights PATH is ambiguous with several --scorer; write --weights SCORER=PATH")
        return {specs[0]: weights[0]}
    out = {}
    for w in weights:
        if "=" not in w:
            raise ValueError(f"--weights {w!r}: with several scorers write SCORER=PATH")
        name, path = w.split("=", 1)
        if name not in specs:
            raise ValueError(f"--weights {w!r}: {name!r} is not one of the --scorer values {specs}")
        out[name] = path
    return out


def printable(text: object) -> str:
    """`text` for the terminal: a file name that is not valid UTF-8 shows its bytes as \\xNN escapes."""
    return os.fsencode(str(text)).decode("utf-8", "backslashreplace") if isinstance(text, str) else str(text)


def check_output_options(out: Path | None, report: Path | None, cache: Path | None) -> None:
    """Usage errors of --out / --report / --cache, raised before any scorer is loaded or image scored."""
    from imgpref.scorers.output import check_output_path

    if out is not None:
        check_output_path(out)
    if report is not None and Path(report).expanduser().is_dir():
        raise ValueError(f"--report {report} is a folder; pass an HTML file name such as report.html")
    if cache is not None and Path(cache).expanduser().exists() and not Path(cache).expanduser().is_dir():
        raise ValueError(f"--cache {cache} is a file; pass a folder (it is created when missing)")


def uses_dataset_engine(paths, out, out_format: str | None, engine: str, save_embeddings: bool) -> bool:
    """True when the run needs the streaming dataset engine (`imgpref.scorers.score_dataset`): a table, tar
    shard, path list or glob among the inputs, a parts folder as output, --engine ray or --save-embeddings."""
    from imgpref.data.sources import is_dataset_input
    from imgpref.scorers.parts_output import is_parts_output

    if engine not in ("local", "ray"):
        raise ValueError(f"--engine {engine!r}: use local or ray")
    globbed = any(not os.path.exists(str(p)) and set("*?[") & set(str(p)) for p in paths)
    return (engine == "ray" or save_embeddings or is_parts_output(out, out_format) or globbed
            or any(is_dataset_input(p) for p in paths))


def load_scorers_for_cli(specs: list[str], weights: list[str] | None, device: str | None):
    """Load scorers (sharing backbones); a seam tests can replace."""
    from imgpref.scorers.registry import load_scorers

    return load_scorers(specs, weights=_weights(specs, weights))


def _print_summary(table, out: Path, seconds: float, stats: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from imgpref.scorers.score_paths import failures, summarize

    console = Console(stderr=False)
    summ = summarize(table)
    # names and paths are user data: escaped, so "[/x]" in them is shown, not parsed as rich markup
    t = Table(title=f"imgpref score: {stats.get('images', 0)} images, {seconds:.1f} s -> {escape(str(out))}")
    for col in ("scorer", "images", "scored", "failed", "mean", "median"):
        t.add_column(col, justify="left" if col == "scorer" else "right")

    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"

    for r in summ.itertuples(index=False):
        t.add_row(escape(str(r.scorer)), str(r.images), str(r.scored), str(r.failed), fmt(r.mean), fmt(r.median))
    console.print(t)
    console.print(
        f"new rows: {stats.get('rows_new', 0)}, resumed rows: {stats.get('rows_resumed', 0)}, "
        f"cache hits: {stats.get('cache_hits', 0)}, images decoded: {stats.get('decoded', 0)}",
        soft_wrap=True,
    )
    bad = failures(table)
    if len(bad):
        console.print(f"[bold red]{len(bad)} image(s) could not be scored:[/]")
        for r in bad.head(20).itertuples(index=False):
            console.print(f"  {printable(r.path)}: {printable(r.error)}", markup=False, highlight=False,
                          soft_wrap=True)
        if len(bad) > 20:
            console.print(f"  ... and {len(bad) - 20} more (see the 'error' column of {out})", soft_wrap=True,
                          markup=False, highlight=False)


def score(
    paths: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    scorer: List[str] = typer.Option(..., "--scorer", "-s", help="Preset name, scorer folder or hf-hub:org/repo; repeat for several."),
    out: str = typer.Option(..., "--out", "-o", help="Output table: .csv, .jsonl or .parquet (one row per image and scorer), or DIR/ for Parquet parts (str, not Path: a trailing slash means parts)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="One prompt for every image (wins over --prompts and sidecar .txt)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="CSV/JSONL with path (or file/image) and prompt columns; wins over sidecar .txt files."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per batch (default: 32 on CPU, 64 on CUDA)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader decode processes (default: min(4, CPUs) with CUDA, half the CPUs on CPU); 0 decodes in the main process."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto (fp32 on CPU; on CUDA each preset's reference precision, bf16 with --fast), fp32, fp16, bf16."),
    fast: bool = typer.Option(False, "--fast", help="Faster, not exact: reduced-size JPEG decoding and bf16 on CUDA (scores deviate slightly from the reference code; see README)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run: score only rows missing from OUT and its journal."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder of cached image embeddings (by file hash and backbone)."),
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 if any image could not be scored."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="Weights for a preset: PATH (one scorer) or SCORER=PATH."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    out_format: Optional[str] = typer.Option(None, "--format", help="file (one table) or parts (a folder of Parquet part files written as work completes; also implied by a trailing slash on --out)."),
    decode: str = typer.Option("cpu", "--decode", help="cpu (PIL, default) or gpu: JPEGs decoded in batches by nvJPEG and resized/normalised on the CUDA device (other files, CMYK and rotated JPEGs on the CPU path); needs --device cuda; with --engine ray the GPU actors decode."),
    engine: str = typer.Option("local", "--engine", help="local (default) or ray (Ray Data: decode on CPU tasks, models in an actor pool; needs imgpref[ray])."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: auto (join the running cluster) or HOST:PORT; none starts a local Ray."),
    save_embeddings: bool = typer.Option(False, "--save-embeddings", help="Also write each backbone's image embeddings (parts output: OUT/embeddings/)."),
    image_column: Optional[str] = typer.Option(None, "--image-column", help="Parquet/CSV inputs: the column holding image paths, bytes or HF image structs (default: found by name)."),
    prompt_column: Optional[str] = typer.Option(None, "--prompt-column", help="Parquet/CSV inputs: the prompt column (default: prompt, caption or text when present)."),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Pluralistic scorers: score with this annotator's mixture instead of the population's."),
    gpm_ranking: Optional[str] = typer.Option(None, "--gpm-ranking", help="Pairwise (GPM) scorers, which have no per-image score: 'borda' writes each image's Borda score within its folder (mean P(beats each other image of the folder))."),
) -> None:
    """Score images: one row per (image, scorer) with path, scorer, score, prompt, error.

    Prompts: --prompt TEXT wins over --prompts FILE, which wins over a sidecar .txt beside each image
    (img.png -> img.txt). Paths in FILE are absolute, relative to FILE's folder, or bare file names.
    Bad files never stop the run; each is listed with its reason. --resume continues a killed run from
    OUT.partial.jsonl. Exit status: 0 finished, 1 with --strict when any image failed, 2 usage error.
    """
    from imgpref.scorers.score_paths import ScoringFailed, score_paths

    try:
        if prompt is not None and prompts is not None:
            raise ValueError("pass either --prompt TEXT or --prompts FILE, not both")
        if report is not None and importlib.util.find_spec("imgpref.eval.report") is None:
            raise ValueError("--report needs imgpref.eval.report, which this installation lacks")
        dataset = uses_dataset_engine(paths, out, out_format, engine, save_embeddings) or decode != "cpu"
        if decode != "cpu":  # a usage error before any scorer is loaded
            from imgpref.scorers.gpu_decode import check_decode_mode, check_gpu_decode
            from imgpref.scorers.score_paths import resolve_device

            check_decode_mode(decode)
            check_gpu_decode(resolve_device(device))
        check_output_options(None if dataset else out, report, cache)
        specs = [str(s) for s in scorer]
        scorers = load_scorers_for_cli(specs, weights, device)
        from imgpref.scorers.pref_heads import per_image_scorers

        gpm = per_image_scorers(scorers, annotator=annotator, gpm_ranking=gpm_ranking)
        if gpm and dataset:
            raise ValueError("--gpm-ranking applies to files and folders on the local engine only")
        code = EXIT_OK
        if dataset:
            from imgpref.scorers.score_dataset import score_dataset

            if cache is not None or workers is not None:
                raise ValueError("--cache and --workers apply to folders on the local engine; datasets (tables, "
                                 "tar shards, --format parts, --engine ray) stream without them")
            table = score_dataset(
                [str(p) for p in paths], scorers, out=out, out_format=out_format, prompt=prompt, prompts=prompts,
                image_column=image_column, prompt_column=prompt_column, batch_size=batch_size, device=device,
                precision=precision, fast=fast, resume=resume, save_embeddings=save_embeddings, engine=engine,
                ray_address=ray_address, progress=not quiet, decode=decode,
            )
            if strict and table["error"].notna().any():
                code = EXIT_FAILED
        else:
            try:
                table = score_paths(
                    [str(p) for p in paths], scorers, prompt=prompt, prompts=prompts, out=out,
                    batch_size=batch_size, num_workers=workers, device=device, precision=precision, fast=fast,
                    resume=resume, cache=cache, strict=strict, progress=not quiet,
                )
            except ScoringFailed as exc:
                table, code = exc.table, EXIT_FAILED
            if gpm:  # pairwise heads: the documented ranking replaces the non-identifiable scalar
                from imgpref.eval.scoring import gpm_borda_scores
                from imgpref.scorers.output import write_scores

                for s in gpm:
                    table = gpm_borda_scores(table, s, batch_size=batch_size or 32)
                write_scores(table, out)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    stats = table.attrs.get("stats", {})
    if not quiet:
        _print_summary(table, out, stats.get("seconds", 0.0), stats)
    if report is not None:
        from imgpref.eval.report import write_report

        write_report(table, report, higher_is_better={s.name: s.higher_is_better for s in scorers})
        if not quiet:
            typer.echo(f"report: {report}")
    if code:
        typer.echo(f"error: {int(table['error'].notna().sum())} row(s) failed and --strict was given", err=True)
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the `score` command to the root app."""
    app.command("score")(score)
