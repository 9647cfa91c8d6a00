"""The `imgpref` command. Each subcommand group lives in its own module and is a thin layer over the API."""
from __future__ import annotations

import importlib
import logging
import os
import warnings

import typer

app = typer.Typer(
    name="imgpref",
    help="Image aesthetics and text-to-image preference scoring, training and alignment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# module -> how it is attached: a module exposing `register(app)` adds its commands itself.
_PARTS = ("score", "compare", "data", "train", "eval", "align", "demo", "world", "scorers", "bench", "annotator")


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


class _DropMessages(logging.Filter):
    """Drops library log lines that are noise for a command-line user (they stay visible to API users)."""

    NOISE = ("No pretrained weights loaded",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def quiet_libraries() -> None:
    """Keep the terminal for imgpref's own progress and results: libraries log at warning level and above."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropMessages())
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning's advice-level warnings (log intervals, eval-mode modules, tips) are not the user's concern here.
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    warnings.filterwarnings("ignore", category=FutureWarning)


def main() -> None:
    """Console-script entry point. Click's own usage errors (unknown option, missing argument) are printed as one
    `error:` line with exit status 2, like every other usage error of imgpref (not click's usage box)."""
    import sys

    try:  # typer >= 0.24 vendors click; its exceptions are not click's
        from typer._click import exceptions as cexc
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click import exceptions as cexc

    quiet_libraries()
    try:
        rc = app(standalone_mode=False)
    except cexc.NoArgsIsHelpError as exc:  # `imgpref data` alone: show that group's help
        exc.ctx.get_help() and typer.echo(exc.ctx.get_help())
        sys.exit(0)
    except cexc.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "imgpref"
        typer.echo(f"error: {cmd}: {exc.format_message()} (see `{cmd} --help`)", err=True)
        sys.exit(exc.exit_code)
    except cexc.ClickException as exc:
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
