"""How every `imgpref` command reports a usage error: one plain line on stderr, exit status 2, no traceback."""
from __future__ import annotations

from typing import NoReturn

import typer

EXIT_USAGE = 2


def one_line(exc: BaseException | str) -> str:
    """The message of `exc` on a single line (a multi-line message is joined with '; ')."""
    parts = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(parts) or type(exc).__name__


def usage_error(exc: BaseException | str) -> NoReturn:
    """Print `error: <message>` (no rich markup, so brackets in paths print as they are) and exit with status 2."""
    typer.echo(f"error: {one_line(exc)}", err=True)
    raise typer.Exit(EXIT_USAGE)
