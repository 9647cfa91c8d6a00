"""The `imgpref` command. Each subcommand group lives in its own module and is a thin layer over the API."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="imgpref",
    help="Image aesthetics and text-to-image preference scoring, training and alignment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# module -> how it is attached: a module exposing `register(app)` adds its commands itself.
_PARTS = ("score", "compare", "data", "train", "eval", "align", "demo")


def _attach() -> None:
    for part in _PARTS:
        try:
            mod = importlib.import_module(f"imgpref.cli.{part}")
        except ModuleNotFoundError as exc:  # a part not written yet must not break the others
            if exc.name == f"imgpref.cli.{part}":
                continue
            raise
        mod.register(app)


_attach()


def main() -> None:
    """Console-script entry point."""
    app()
