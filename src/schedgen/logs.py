"""One log schema for the API, the operator and the runner (docs/observability.md).

Every line is one JSON object: `ts` (RFC 3339, UTC), `level`, `logger`, `msg`,
`component` (api | operator | runner), then the context when known: `request_id` (API),
`parsejob_uid`, `parsejob` (namespace/name), `tenant`, and the line's own fields. It is a
formatter on the root logger (python-json-logger), so kopf's and uvicorn's lines come out
in the same schema. Context comes from `context()` (a contextvar: one request, one
handler) and from kopf's object reference on its records; a line's own fields from
`extra={"fields": {...}}`. `SCHEDGEN_LOG_FORMAT=text` gives readable lines instead.
Stdlib + python-json-logger only: the runner image imports this.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")
COMPONENTS = ("api", "operator", "runner")
CONTEXT_KEYS = ("request_id", "parsejob_uid", "parsejob", "tenant")
# record attributes that are not fields of the line: kopf's object reference (mapped to
# the context keys), its event-posting flags, uvicorn's coloured copy of the message
HIDDEN_ATTRS = ("fields", "k8s_ref", "k8s_skip", "settings", "color_message", "taskName")

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("schedgen_log_context", default={})


@contextlib.contextmanager
def context(**fields: str | None) -> Iterator[None]:
    """Add fields (None/"" skipped) to every line logged inside the block, in this task."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> contextvars.Token:
    """Like `context`, until the enclosing `context` ends (or `_context.reset(token)`)."""
    return _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v}})


def current() -> dict[str, str]:
    return dict(_context.get())


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The context of a record: the contextvar's, kopf's ParseJob reference, its own fields."""
    out: dict[str, Any] = dict(_context.get())
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping) and ref.get("kind") == "ParseJob":
        out.update(parsejob_uid=ref.get("uid"), parsejob=f"{ref.get('namespace')}/{ref.get('name')}")
    elif isinstance(ref, Mapping) and ref.get("name"):
        out["object"] = "/".join(str(p) for p in (ref.get("kind"), ref.get("namespace"), ref.get("name")) if p)
    out.update(getattr(record, "fields", None) or {})
    return out


def rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SchemaJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with the schema's names and order."""

    def __init__(self, component: str):
        super().__init__(["message"], rename_fields={"message": "msg", "exc_info": "exc", "stack_info": "stack"},
                         static_fields={"component": component}, reserved_attrs=[*RESERVED_ATTRS, *HIDDEN_ATTRS],
                         json_default=str)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data.update(ts=rfc3339(record.created), level=record.levelname.lower(), logger=record.name)
        super().add_fields(log_data, record, message_dict)
        log_data.update(record_fields(record))


class SchemaTextFormatter(logging.Formatter):
    """`time LEVEL logger: msg [key=value ...]` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record_fields(record).items())
        line = super().format(record)
        if not fields:
            return line
        first, sep, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{fields}]{sep}{rest}"


def configure(component: str, log_format: str = "json", level: str = "info",
              quiet: Mapping[str, int] | None = None) -> logging.Handler:
    """The root logger writes the schema to stderr at `level`; `quiet` sets loggers'
    own levels (libraries that are chatty at INFO). Replaces earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SchemaTextFormatter() if log_format == "text" else SchemaJsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet_level in (quiet or {}).items():
        logging.getLogger(name).setLevel(quiet_level)
    return handler


def valid_level(raw: str) -> str:
    """A SCHEDGEN_LOG_LEVEL value, lower case; ValueError naming the choices."""
    value = raw.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"{raw!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return value


def valid_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"{raw!r} is not a log format ({', '.join(LOG_FORMATS)})")
    return value
