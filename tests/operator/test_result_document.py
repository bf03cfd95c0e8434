"""A runner's result object read as untrusted input (result_document.py): what a runner
writes is accepted; anything else is an InvalidResult, never an error of the tick."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator.result_document import InvalidResult, RunnerFailure, parse, status_result, too_deep
from schedgen.runner.run import result_document

LECTURE = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
                end_time="09:20", venues=("Centenary 6",), campus="HATFIELD", language="E")
MAX = 4 * 1024 * 1024


def valid() -> dict:
    return result_document(ParseResult(kind=ScheduleKind.LECTURE, events=[LECTURE] * 3, pages=1, seconds=0.5))


def test_the_runners_document_is_accepted():
    result = parse(json.dumps(valid()).encode(), MAX, 5000)
    assert result.kind == ScheduleKind.LECTURE and result.events == [LECTURE] * 3 and result.pages == 1
    assert status_result(result) == {"kind": "lecture", "events": 3, "pages": 1, "parseSeconds": 0.5}


def test_a_failure_document_is_the_runners_word_on_a_member():
    doc = {"ok": False, "code": "NotAPDF", "message": "no", "retry": False, "killed": None}
    assert parse(json.dumps(doc).encode(), MAX, 5000) == RunnerFailure(doc)


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d.update(kind="timetable"), "kind must be one of"),
    (lambda d: d.update(pages="1"), "pages"),
    (lambda d: d.update(events={}), "events must be a list"),
    (lambda d: d["events"].append([]), "event 3 is not an object"),
    (lambda d: d["events"][0].update(admin=True), "unknown fields: admin"),
    (lambda d: d["events"][0].update(module=None), "module must be a string"),
    (lambda d: d["events"][1].pop("activity"), "event 1 lacks activity"),
    (lambda d: d["events"][0].update(campus="x" * 1001), "campus must be a string of at most 1000"),
    (lambda d: d["events"][0].update(venues=[1]), "venues"),
    (lambda d: d["events"][0].update(startTime="8 o'clock"), "not HH:MM"),
    (lambda d: d["events"][0].update(date="2025-02-30"), "event 0"),
    (lambda d: d.update(events=d["events"] * 2), "6 events; the limit is 5"),
])
def test_invalid_documents_are_refused(change, fragment):
    doc = valid()
    change(doc)
    with pytest.raises(InvalidResult, match=fragment):
        parse(json.dumps(doc).encode(), MAX, 5)


def test_size_cap_and_bytes_that_are_not_json():
    data = json.dumps(valid()).encode()
    with pytest.raises(InvalidResult, match=f"{len(data)} bytes; the limit is 100"):
        parse(data, 100, 5000)
    with pytest.raises(InvalidResult, match="not JSON"):
        parse(b"\xff\xfe", MAX, 5000)


@pytest.mark.parametrize("data", [b"[" * 100_000, b"{\"a\":" * 50_000, b"[" * 1_000_000 + b"]" * 1_000_000])
def test_deep_nesting_is_an_invalid_result_not_a_recursion_error(data):
    """`json.loads(b"[" * 100000)` raises RecursionError (not a ValueError); a document
    like that, far below the size cap, must end its own ParseJob, not every tick."""
    with pytest.raises(RecursionError):
        json.loads(b"[" * 100_000)
    with pytest.raises(InvalidResult, match="nests deeper"):
        parse(data, 4 * 1024 * 1024, 5000)


def test_depth_is_counted_on_brackets():
    assert not too_deep(json.dumps(valid()).encode())
    assert not too_deep(b"[" * 8 + b"]" * 8) and too_deep(b"[" * 9)
    assert not too_deep(b'{"a": "[[[[[[[[[[[["}', limit=13)


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=2000) | hs.text(alphabet="[]{}\":,0123456789aeflnrstu ", max_size=2000).map(str.encode))
def test_any_bytes_end_as_a_result_or_an_invalid_result(data):
    """Whatever a compromised runner writes: a checked result, a failure document, or
    InvalidResult; no other exception escapes."""
    try:
        parse(data, 1000, 50)
    except InvalidResult:
        pass
