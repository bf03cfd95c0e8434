"""Pure functions behind the job list, ETags, compat events and error shapes (no backends)."""

from __future__ import annotations

import datetime as dt

import pytest

from schedgen.api import httpcache
from schedgen.api.errors import ApiError
from schedgen.api.services import compat, listing
from schedgen.models import Event


def test_cursor_round_trip_and_refusals():
    key = (dt.datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=dt.timezone.utc), "up-abc")
    cursor = listing.encode_cursor(key)
    assert "=" not in cursor and listing.decode_cursor(cursor) == key
    for bad in ("", "!!!", listing.encode_cursor(key)[:-3], "W10",  # "[]"
                "WyIyMDI2LTAzLTAxVDA4OjAwOjAwIiwgInVwIl0"):  # a naive timestamp
        with pytest.raises(ApiError) as err:
            listing.decode_cursor(bad)
        assert (err.value.status, err.value.code) == (422, "InvalidParameters")


def test_if_none_match():
    tag = httpcache.etag_of(b"body")
    assert tag.startswith('"') and tag == httpcache.etag_of(b"body") != httpcache.etag_of(b"other")
    assert httpcache.matches(tag, tag) and httpcache.matches(f'"x", W/{tag}', tag) and httpcache.matches("*", tag)
    assert not httpcache.matches(None, tag) and not httpcache.matches('"x"', tag)
    assert not httpcache.matches(tag[:-2] + '"', tag)


def test_compat_event_ids_are_stable_and_per_job():
    event = Event(module="COS 301", activity="L1", group="G01", day="Monday", start_time="08:30",
                  end_time="09:20", venues=("IT 2-27", "IT 2-28"))
    a = compat.compat_event("up-1", event, "lecture")
    assert a == compat.compat_event("up-1", event, "lecture")
    assert a["id"] != compat.compat_event("up-2", event, "lecture")["id"]
    assert a["venue"] == "IT 2-27, IT 2-28" and a["isRecurring"] is True and "date" not in a
    exam = compat.compat_event("up-1", Event(module="X", activity="Exam", date="2026-06-02", start_time="22:30"),
                               "exam")
    assert exam["endTime"] == "01:30" and exam["isRecurring"] is False and exam["venue"] == ""


def test_problem_and_nest_shapes():
    err = ApiError(404, "JobNotFound", "no job 'x'")
    assert err.body("/api/v1/jobs/x") == {"type": "https://schedgen.dev/problems/JobNotFound", "title": "Not Found",
                                          "status": 404, "detail": "no job 'x'", "code": "JobNotFound",
                                          "instance": "/api/v1/jobs/x"}
    assert err.compat_body() == {"statusCode": 404, "message": "no job 'x'", "error": "Not Found"}


def test_an_erased_job_leaves_the_watch_cache_at_once():
    import types

    from schedgen.api.backends.kube import ParseJobs
    from schedgen.api.config import ApiConfig

    jobs = ParseJobs(ApiConfig(), client=types.SimpleNamespace())
    other = {"metadata": {"name": "b", "uid": "u2"}}
    jobs._cache, jobs._synced = {"a": {"metadata": {"name": "a", "uid": "u1"}}, "b": other}, True
    jobs.forget("a", "u1")
    jobs.forget("b", "u-other")  # a different object under that name stays
    assert jobs.cached("a") is None and jobs.cached("b") is other
