"""Lightning's log lines on the terminal of `imgpref train / align / demo`: each line once, no advertising tips.

Importing `lightning` gives the "lightning" logger its own console handler and lets it propagate to the root
logger, which `imgpref.cli.main` gives a handler too: every Lightning line ("GPU available: ...") printed twice.
Lightning also logs "💡 Tip: ... try installing litlogger / litmodels" at info level on every fit.
"""
from __future__ import annotations

import logging

# The loggers through which Lightning's rank_zero_info / rank_zero_warn lines pass.
_RANK_ZERO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_CHILDREN = ("lightning.pytorch", "lightning.fabric")


class DropTips(logging.Filter):
    """Drops Lightning's advertising lines ("💡 Tip: For seamless cloud logging ... litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Tip:" in msg and ("litlogger" in msg or "litmodels" in msg or "💡" in msg))


def configure_lightning_logging(level: int = logging.INFO) -> None:
    """Route every Lightning log line through exactly one handler and drop the tips (idempotent; CLI use only).

    The one handler is Lightning's own console handler on the "lightning" logger, which stops propagating to
    the root logger; the subpackage loggers lose the extra handlers they add when the root had none at import.
    `level` is set on Lightning's loggers here because importing Lightning resets them to INFO, so a level set
    before the import would hold only for the commands that happen to import Lightning earlier. INFO keeps the
    lines that say which accelerator a run uses ("GPU available: True (cuda), used: True").
    """
    import lightning  # noqa: F401  - importing it installs the handlers that are configured here
    import lightning.pytorch  # noqa: F401

    for name in ("lightning", *_CHILDREN):
        logging.getLogger(name).setLevel(level)

    for name in _RANK_ZERO:
        lg = logging.getLogger(name)
        if not any(isinstance(f, DropTips) for f in lg.filters):
            lg.addFilter(DropTips())
    top = logging.getLogger("lightning")
    if not top.handlers:  # nothing of Lightning's own: leave the lines to the root handler
        return
    top.propagate = False
    for name in _CHILDREN:
        lg = logging.getLogger(name)
        for handler in list(lg.handlers):
            lg.removeHandler(handler)
        lg.propagate = True
