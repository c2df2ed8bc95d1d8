"""Log lines for operators: text (the default) or one JSON object a line, each carrying
the tenant, namespace, run, step, attempt and worker it concerns.

Who works on a run says so once, with :func:`bound` (a context manager over a
``ContextVar``: asyncio tasks created inside inherit it, and a sync step's thread runs in a
copy of it); every line logged meanwhile carries those fields, whatever logger wrote it.
``NATCHET_LOG_FORMAT=json`` (or ``natchet --log-format json``) turns on the JSON lines;
the fields are also readable by any other formatter as ``record.natchet``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import orjson

from eventstore.errors import ConfigError

ENV = "NATCHET_LOG_FORMAT"
FORMATS = ("text", "json")
# What a line may say about what it concerns, in the order JSON lines show them.
FIELDS = ("tenant", "namespace", "run_id", "step", "attempt", "worker_id", "worker")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "natchet_log_fields", default=MappingProxyType({})
)


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Every line logged inside (in this task, the tasks it starts, and threads started
    in a copy of its context) carries ``fields`` (None: left out), besides those already
    bound outside."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> Mapping[str, object]:
    """The fields bound where this is called."""
    return _context.get()


class ContextFilter(logging.Filter):
    """Puts the bound fields on each record as ``record.natchet`` (fields given with
    ``extra=`` win), when it is logged, in the task or thread that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_context.get())
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                fields[name] = value
        record.natchet = fields
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, the fields it concerns,
    and the error with its traceback when one is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields: Mapping[str, object] = getattr(record, "natchet", None) or _context.get()
        for name in FIELDS:
            if name in fields:
                line[name] = fields[name]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            line["traceback"] = "".join(traceback.format_exception(exc))
        return orjson.dumps(line, default=str).decode()


def log_format(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``explicit`` (a ``--log-format``), else ``NATCHET_LOG_FORMAT``, else text."""
    value = explicit or (os.environ if env is None else env).get(ENV) or "text"
    if value not in FORMATS:
        source = "--log-format" if explicit else ENV
        raise ConfigError(f"{source}={value!r} is not a log format: use text or json")
    return value


def configure(level: int, fmt: str = "text", text: str = TEXT) -> None:
    """Log to stderr at ``level`` in ``fmt`` (:data:`FORMATS`), unless logging was
    configured already (as ``logging.basicConfig``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level, handlers=[handler])
