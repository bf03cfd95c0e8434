"""Reading a runner's result object: untrusted input (a PDF may have compromised the
runner, and anyone holding the PUT URL can write it). Size cap, bounded nesting, a
schema check of every event field and an event-count cap; anything else the decoder
raises is an InvalidResult too, never an error of the operator's tick.

Two shapes: a parse result `{"kind", "pages", "seconds", "events": [...]}`, or (batch
runner) a failure document `{"ok": false, "code", "message", "retry", "killed"}`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from typing import Any

from schedgen import db
from schedgen.models import Event, ParseResult, ScheduleKind, camel_case
from schedgen.parsejob import SCHEDULE_KINDS, RunnerSummary

MAX_FIELD_CHARS = 1000
MAX_VENUES = 50
MAX_DEPTH = 8  # the deepest a runner writes is 4 (document, events, event, venues)
_EVENT_FIELDS = {camel_case(f.name): f.name for f in fields(Event)}
_REQUIRED = {"module", "activity"}


class InvalidResult(Exception):
    """The result object is not what a runner writes (too big, bad JSON, bad fields)."""


@dataclass(frozen=True)
class RunnerFailure:
    """A failure document: the batch runner's word that one member failed."""

    doc: dict[str, Any]


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Nesting beyond `limit`, counted on the raw bytes (brackets inside strings count
    too: a false alarm costs only an InvalidResult for a document no runner writes)."""
    depth = 0
    for byte in data.translate(None, delete=_NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def read(data: bytes, max_bytes: int) -> dict[str, Any]:
    """The document as a JSON object; InvalidResult otherwise."""
    if len(data) > max_bytes:
        raise InvalidResult(f"the result object is {len(data)} bytes; the limit is {max_bytes}")
    if too_deep(data):
        raise InvalidResult(f"the result object nests deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(data)
    except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, the object is bad
        raise InvalidResult(f"the result object is not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise InvalidResult("the result object is not a JSON object")
    return doc


def parse(data: bytes, max_bytes: int, max_events: int) -> ParseResult | RunnerFailure:
    doc = read(data, max_bytes)
    if doc.get("ok") is False:
        return RunnerFailure(doc)
    return parse_result(doc, max_events)


def parse_result(doc: dict[str, Any], max_events: int) -> ParseResult:
    """Validate a parse result; raises InvalidResult saying what is wrong."""
    kind = doc.get("kind")
    if kind not in SCHEDULE_KINDS:
        raise InvalidResult(f"kind must be one of {', '.join(SCHEDULE_KINDS)}")
    pages, seconds, events = doc.get("pages"), doc.get("seconds"), doc.get("events")
    if not isinstance(pages, int) or isinstance(pages, bool) or not 0 <= pages <= 100000:
        raise InvalidResult("pages must be a whole number")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
        raise InvalidResult("seconds must be a number of seconds")
    if not isinstance(events, list):
        raise InvalidResult("events must be a list")
    if len(events) > max_events:
        raise InvalidResult(f"{len(events)} events; the limit is {max_events}")
    parsed = [_event(i, e) for i, e in enumerate(events)]
    return ParseResult(kind=ScheduleKind(kind), events=parsed, pages=pages, seconds=float(seconds))


def status_result(result: ParseResult) -> dict[str, Any]:
    """The ParseJob's status.result of a checked parse result."""
    return RunnerSummary(ok=True, kind=result.kind.value, events=len(result.events), pages=result.pages,
                         seconds=result.seconds).result()


def _event(i: int, data: Any) -> Event:
    if not isinstance(data, dict):
        raise InvalidResult(f"event {i} is not an object")
    unknown = set(data) - set(_EVENT_FIELDS)
    if unknown:
        raise InvalidResult(f"event {i} has unknown fields: {', '.join(sorted(unknown))[:200]}")
    for key, value in data.items():
        if key == "venues":
            if not isinstance(value, list) or len(value) > MAX_VENUES or not all(
                    isinstance(v, str) and len(v) <= MAX_FIELD_CHARS for v in value):
                raise InvalidResult(f"event {i}: venues must be a list of at most {MAX_VENUES} short strings")
        elif value is None and key not in _REQUIRED:
            continue
        elif not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
            raise InvalidResult(f"event {i}: {key} must be a string of at most {MAX_FIELD_CHARS} characters")
    missing = _REQUIRED - set(data)
    if missing:
        raise InvalidResult(f"event {i} lacks {', '.join(sorted(missing))}")
    event = Event.from_json(data)
    try:  # the columns' own types: a date and HH:MM times
        db.event_row(uuid.UUID(int=0), i, event)
    except ValueError as exc:
        raise InvalidResult(f"event {i}: {str(exc)[:200]}") from None
    return event
