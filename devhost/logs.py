"""Console logging for the host: one line per record with its ``extra=`` fields as key=value."""

from __future__ import annotations

import logging
import sys
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 0, "m", None, None)).keys()
) | {"message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed through ``extra=``."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _render(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message key=value ...``, tracebacks on following lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        head, sep, rest = line.partition("\n")
        rendered = " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        return f"{head} {rendered}{sep}{rest}"


def setup_console_logging(level: str = "INFO") -> None:
    """Send every log record to stderr through ``ConsoleFormatter`` at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The console line shows none of the caller's file and line, thread or process, which
    # logging otherwise works out for every record (a walk up the stack, a system call).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # The storage SDK logs every HTTP request at INFO; the poller makes many.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # yoyo logs every statement of every migration; the host logs one line per migration.
    logging.getLogger("yoyo").setLevel(logging.WARNING)
