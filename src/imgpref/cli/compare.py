"""`imgpref compare DIR_A DIR_B`: win rate of folder A over folder B per scorer, images matched by relative path.

Exit status: 0 when the comparison finished (failed images are listed and left out of the win rate);
2 for a usage error (missing folder, unknown scorer, bad option).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

EXIT_OK, EXIT_USAGE = 0, 2


def _print_result(result, seconds: float) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from imgpref.cli.score import printable

    console = Console() if Console().is_terminal else Console(width=120)  # pipes default to 80 columns

    def fmt(v) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"

    # folder and scorer names are user data: escaped so "[/x]" is shown, not parsed as rich markup
    t = Table(title=f"imgpref compare: A={escape(str(result.dir_a))}  B={escape(str(result.dir_b))}  "
                    f"({result.n_matched} matched, {seconds:.1f} s)")
    for col in ("scorer", "pairs", "A / tie / B", "win rate A [95% CI]", "mean A", "mean B", "failed"):
        t.add_column(col, justify="left" if col == "scorer" else "right", no_wrap=True)
    for r in result.win_rates.itertuples(index=False):
        arrow = "" if r.higher_is_better else " (lower better)"
        t.add_row(escape(f"{r.scorer}{arrow}"), str(r.n), f"{r.wins_a} / {r.ties} / {r.wins_b}",
                  f"{fmt(r.win_rate)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]", fmt(r.mean_a), fmt(r.mean_b),
                  str(r.n_failed))
    console.print(t)
    for label, items in (("only in A", result.only_a), ("only in B", result.only_b)):
        if items:
            shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
            console.print(f"{len(items)} image(s) {label}, not compared: {shown}", markup=False, highlight=False)
    bad = result.results[result.results["error"].notna() & (result.results["error"].astype(str) != "")]
    if len(bad):
        files = bad.drop_duplicates(["side", "path"])
        console.print(f"[bold red]{len(files)} image(s) could not be scored:[/]")
        for r in files.head(20).itertuples(index=False):
            console.print(f"  {r.side}: {printable(r.path)}: {printable(r.error)}", markup=False, highlight=False)


def compare(
    dir_a: Path = typer.Argument(..., help="Folder A (e.g. images of model A)."),
    dir_b: Path = typer.Argument(..., help="Folder B, with the same relative paths as A (same prompts)."),
    scorer: List[str] = typer.Option(..., "--scorer", "-s", help="Preset name, scorer folder or hf-hub:org/repo; repeat for several."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Per-image table (.csv, .jsonl or .parquet): rel_path, scorer, score_a, score_b, winner, ..."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="One prompt for every image (wins over --prompts and sidecar .txt)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="CSV/JSONL with path and prompt columns; wins over sidecar .txt files."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images per batch (default: 32 on CPU, 64 on CUDA)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader decode processes (default: min(4, CPUs)); 0 decodes in the main process."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if available), cpu, cuda, cuda:N."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder of cached image embeddings (by file hash and backbone)."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help="Weights for a preset: PATH (one scorer) or SCORER=PATH."),
    n_boot: int = typer.Option(2000, "--n-boot", min=1, help="Bootstrap resamples for the 95% interval."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary table."),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Pluralistic scorers: compare with this annotator's mixture instead of the population's."),
) -> None:
    """Compare two folders image by image: win rate of A over B per scorer with a bootstrap 95% interval.

    Images are matched by path relative to each folder; unmatched ones are listed and not compared. Ties count
    half. Exit status: 0 finished, 2 usage error.
    """
    import time

    from imgpref.cli.score import check_output_options, load_scorers_for_cli
    from imgpref.eval.compare import compare_folders, write_per_image

    t0 = time.perf_counter()
    try:
        if prompt is not None and prompts is not None:
            raise ValueError("pass either --prompt TEXT or --prompts FILE, not both")
        if out is not None and out.suffix.lower() not in (".csv", ".jsonl", ".parquet"):
            raise ValueError(f"--out {str(out)!r}: use a .csv, .jsonl or .parquet file name")
        check_output_options(out, report, cache)
        for label, d in (("DIR_A", dir_a), ("DIR_B", dir_b)):
            if not d.is_dir():
                raise FileNotFoundError(f"{label} {str(d)!r} is not an existing folder; pass a folder of images")
        specs = [str(s) for s in scorer]
        scorers = load_scorers_for_cli(specs, weights, device)
        from imgpref.scorers.pref_heads import per_image_scorers

        per_image_scorers(scorers, annotator=annotator, command="compare")  # GPM heads have no per-image score
        result = compare_folders(
            dir_a, dir_b, scorers, n_boot=n_boot, seed=seed, prompt=prompt, prompts=prompts,
            batch_size=batch_size, num_workers=workers, device=device, precision=precision, cache=cache,
            progress=not quiet,
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if not quiet:
        _print_result(result, time.perf_counter() - t0)
    if out is not None:
        write_per_image(result, out)
        if not quiet:
            typer.echo(f"per-image table: {out}")
    if report is not None:
        from imgpref.eval.report import write_report

        write_report(None, report, compare=result, title=f"imgpref compare: {dir_a.name} vs {dir_b.name}")
        if not quiet:
            typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add the `compare` command to the root app."""
    app.command("compare")(compare)
