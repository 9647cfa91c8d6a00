"""`imgpref scorers`: every preset with its licence, backbone, size, input, score range and published accuracy."""
from __future__ import annotations

import json

import typer

_BENCH_COLS = (("imagereward_test", "IR test"), ("pickapic_test", "Pick test"), ("hpdv2_test", "HPDv2"),
               ("hpdv3_test", "HPDv3"))


def scorers_table() -> list[dict]:
    """One dict per registered preset: name, needs_prompt and its metadata (None fields when unknown)."""
    from imgpref.scorers.metadata import all_metadata
    from imgpref.scorers.registry import get_preset

    rows = []
    for name, meta in all_metadata().items():
        row = {"name": name, "needs_prompt": bool(get_preset(name).info.needs_prompt)}
        row.update(meta.to_dict() if meta is not None else {"licence": None, "published": {}})
        rows.append(row)
    return rows


def scorers_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON (a list of objects) on stdout."),
) -> None:
    """List the scorer presets: licence of the weights, backbone, parameters, input size, score range,
    higher-is-better, and the published pairwise accuracy (%) per benchmark (sources: `--json`)."""
    rows = scorers_table()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="imgpref scorer presets (published accuracy %, source in --json)", show_lines=False)
    for col in ("name", "licence", "backbone", "params", "input", "score range", "higher", "prompt"):
        table.add_column(col, overflow="fold")
    for _, label in _BENCH_COLS:
        table.add_column(label, justify="right")
    for r in rows:
        pub = r.get("published") or {}
        lic = str(r.get("licence") or "?")
        if r.get("restriction"):
            lic = f"[bold red]{lic}[/] ({r['restriction']})"
        table.add_row(r["name"], lic, str(r.get("backbone") or ""), str(r.get("params") or ""),
                      str(r.get("input_size") or ""), str(r.get("score_range") or ""),
                      "yes" if r.get("higher_is_better", True) else "no", "yes" if r["needs_prompt"] else "no",
                      *[f"{pub[k]['accuracy']:.1f}" if k in pub else "-" for k, _ in _BENCH_COLS])
    Console(width=max(160, Console().width)).print(table)


def register(app: typer.Typer) -> None:
    """Add `imgpref scorers` to the root app."""
    app.command("scorers")(scorers_command)
