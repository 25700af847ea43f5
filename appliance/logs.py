"""Logs with the request id on every line: JSON for machines, one readable line for people.

Log calls pass facts in ``extra`` (ids, counts, durations); never request bodies,
secrets or tenant content. The request id travels in a context variable. Both formats
carry the same facts: JSON as fields, the console format as ``key=value`` after the
message, so ``appliance.access`` reads ``GET /v1/models 200 3.1 ms`` either way.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "taskName"}

QUIET_LOGGERS = {
    # Each migration context says which dialect it found; nothing to act on.
    "alembic.runtime.migration": logging.WARNING,
    # "Loading SentenceTransformer model from <dir>" repeats our own "loading model" line.
    "sentence_transformers": logging.WARNING,
    # Start-up chatter ("Waiting for application startup", "Uvicorn running on ..."): the
    # start banner says where the server listens; errors (a port in use) still show.
    "uvicorn.error": logging.WARNING,
}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL [request id] logger: message key=value ...`` on one line."""

    _IN_MESSAGE = {"appliance.access": frozenset({"method", "route", "status", "duration_ms"})}
    """Facts a logger's message already spells out; JSON keeps them as fields all the same."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"  # outside a request
        line = super().format(record)
        shown = self._IN_MESSAGE.get(record.name, frozenset())
        facts = [
            f"{k}={_value(v)}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_FIELDS and k not in shown and v is not None
        ]
        if not facts:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the facts
        return f"{head} {' '.join(facts)}{newline}{rest}"


def _value(value: object) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() for c in text) else text


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would duplicate ours and knows no request id.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name, quiet in QUIET_LOGGERS.items():  # DEBUG shows them all again
        logging.getLogger(name).setLevel(logging.NOTSET if level == "DEBUG" else quiet)
