"""Calendar feeds that follow the timetable, and re-pointing a feed (migration 0008), over
real HTTP against the real Postgres (logged in as role `schedgen_api`: row-level security
applies) and MinIO, without a cluster (api_harness.py: the jobs are known from their
Postgres records, as after retention). The calendars are parsed with `icalendar`."""

from __future__ import annotations

import uuid

import httpx
import icalendar
import pytest
from api_harness import JobRef, write_events

from schedgen.models import Event, ParseResult, ScheduleKind

# Each recorded job gets a module of its own, so a calendar tells which job it came from.
KIND_DATES = {ScheduleKind.EXAM: "2026-06-02", ScheduleKind.TEST: "2026-03-10"}


def record_job(pg_conn, namespace: str, tenant: str, *, module: str, kind: ScheduleKind = ScheduleKind.EXAM,
               phase: str = "Succeeded", age_minutes: int = 10) -> str:
    """A job as the operator records it (written by the database owner), created
    `age_minutes` ago (the newer, the smaller) and finished now: its name."""
    uid = str(uuid.uuid4())
    ref = JobRef(uid, namespace, f"up-fol-{uid[:8]}", tenant, "b", f"k/{uid}")
    event = Event(module=module, activity="Exam", date=KIND_DATES[kind], start_time="08:30", venues=("IT 2-27",))
    write_events(pg_conn, ref, ParseResult(kind, [event], pages=1, seconds=0.1))
    pg_conn.execute("UPDATE parse_jobs SET phase = %s, attempts = 1,"
                    " created_at = now() - make_interval(mins => %s), started_at = now() - interval '30 seconds',"
                    " completed_at = now() - make_interval(secs => %s) WHERE uid = %s",
                    (phase, age_minutes, age_minutes, uid))
    return ref.name


class Tenant:
    """A tenant with its own API key, calling the server."""

    def __init__(self, server, make_key, prefix: str = "fol"):
        self.server = server
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.http = httpx.Client(base_url=server.url, headers={"X-API-Key": make_key(self.name)}, timeout=20)


def fetch(server, token: str, **headers) -> httpx.Response:
    return httpx.get(f"{server.url}/feeds/{token}.ics", headers=headers, timeout=20)  # no key, as calendar apps


def calendar(response: httpx.Response) -> icalendar.Calendar:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    return icalendar.Calendar.from_ical(response.content)


def modules(cal: icalendar.Calendar) -> list[str]:
    return sorted(str(e["summary"]).split(" Exam")[0] for e in cal.walk("VEVENT"))


def test_a_following_feed_serves_the_newest_succeeded_job_of_its_kind(serve_api, make_key, pg_conn):
    server = serve_api()
    ns = server.ctx.cfg.namespace
    me, other = Tenant(server, make_key), Tenant(server, make_key)
    made = me.http.post("/api/v1/feeds", json={"follow": {"scheduleType": "exam"}})
    assert made.status_code == 201, made.text
    feed = made.json()
    assert feed["follow"] == {"scheduleType": "exam"} and feed["jobId"] is None and feed["url"].endswith(".ics")
    # before any exam job: a valid, named calendar without events (subscribers keep it)
    empty = calendar(fetch(server, feed["token"]))
    assert modules(empty) == [] and str(empty["x-wr-calname"]) == f"UP exams ({me.name})"

    record_job(pg_conn, ns, me.name, module="EXA 100", age_minutes=30)
    first = fetch(server, feed["token"])
    assert modules(calendar(first)) == ["EXA 100"]
    # newer jobs that must not replace it: a Failed exam job, another kind, another tenant's exam job
    record_job(pg_conn, ns, me.name, module="BAD 100", phase="Failed", age_minutes=20)
    record_job(pg_conn, ns, me.name, module="TST 100", kind=ScheduleKind.TEST, age_minutes=19)
    record_job(pg_conn, ns, other.name, module="OTH 100", age_minutes=1)
    unchanged = fetch(server, feed["token"], **{"If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304, unchanged.text
    assert modules(calendar(fetch(server, feed["token"]))) == ["EXA 100"]

    # the timetable is republished: the newer Succeeded exam job, at the same URL
    newer = record_job(pg_conn, ns, me.name, module="EXA 200", age_minutes=5)
    second = fetch(server, feed["token"], **{"If-None-Match": first.headers["etag"]})
    assert modules(calendar(second)) == ["EXA 200"]
    assert second.headers["etag"] != first.headers["etag"]
    assert second.headers["last-modified"] != first.headers["last-modified"]
    # the other tenant's following feed serves its own job only
    theirs = other.http.post("/api/v1/feeds", json={"follow": {"scheduleType": "exam"}}).json()
    assert modules(calendar(fetch(server, theirs["token"]))) == ["OTH 100"]

    # erasing the newest job takes its events out of the feed: the one before serves again
    assert me.http.delete(f"/api/v1/jobs/{newer}").status_code == 204
    assert modules(calendar(fetch(server, feed["token"]))) == ["EXA 100"]


def test_calendars_carry_their_name_and_refresh_interval(serve_api, make_key, pg_conn):
    server = serve_api({"SCHEDGEN_API_FEED_REFRESH_MINUTES": "90"})
    me = Tenant(server, make_key)
    job = record_job(pg_conn, server.ctx.cfg.namespace, me.name, module="EXA 300")
    pinned = me.http.post(f"/api/v1/jobs/{job}/feed").json()
    following = me.http.post("/api/v1/feeds", json={"follow": {"scheduleType": "exam"}}).json()
    for token in (pinned["token"], following["token"]):
        raw = fetch(server, token).content.decode()
        cal = icalendar.Calendar.from_ical(raw)
        assert str(cal["name"]) == str(cal["x-wr-calname"]) == f"UP exams 2026 ({me.name})"
        assert "REFRESH-INTERVAL;VALUE=DURATION:PT1H30M\r\n" in raw  # RFC 7986 requires VALUE=DURATION
        assert str(cal["x-published-ttl"]) == "PT1H30M"
        assert cal["refresh-interval"].dt.total_seconds() == 90 * 60
    # the job's own calendar.ics is the same calendar
    direct = icalendar.Calendar.from_ical(me.http.get(f"/api/v1/jobs/{job}/calendar.ics").content)
    assert str(direct["x-wr-calname"]) == f"UP exams 2026 ({me.name})"

    quiet = serve_api({"SCHEDGEN_API_FEED_REFRESH_MINUTES": "0"})
    raw = fetch(quiet, pinned["token"]).content.decode()
    assert "REFRESH-INTERVAL" not in raw and "X-PUBLISHED-TTL" not in raw and "X-WR-CALNAME:" in raw


def test_a_pinned_feed_is_re_pointed_keeping_its_url(serve_api, make_key, pg_conn):
    server = serve_api()
    ns = server.ctx.cfg.namespace
    me, other = Tenant(server, make_key), Tenant(server, make_key)
    old = record_job(pg_conn, ns, me.name, module="OLD 100", age_minutes=30)
    new = record_job(pg_conn, ns, me.name, module="NEW 100", age_minutes=5)
    feed = me.http.post(f"/api/v1/jobs/{old}/feed").json()
    assert feed["jobId"] == old and feed["follow"] is None
    assert modules(calendar(fetch(server, feed["token"]))) == ["OLD 100"]

    pointed = me.http.put(f"/api/v1/feeds/{feed['id']}", json={"jobId": new})
    assert pointed.status_code == 200, pointed.text
    assert pointed.json()["jobId"] == new and pointed.json()["id"] == feed["id"]
    assert modules(calendar(fetch(server, feed["token"]))) == ["NEW 100"]  # same URL, the new job
    listed = me.http.get("/api/v1/feeds").json()["items"]
    assert [(f["id"], f["jobId"]) for f in listed] == [(feed["id"], new)]
    assert other.http.get("/api/v1/feeds").json()["items"] == []

    # another tenant's job does not exist for this key; this feed does not exist for theirs
    theirs = record_job(pg_conn, ns, other.name, module="OTH 200")
    refused = me.http.put(f"/api/v1/feeds/{feed['id']}", json={"jobId": theirs})
    assert refused.status_code == 404 and refused.json()["code"] == "JobNotFound", refused.text
    stolen = other.http.put(f"/api/v1/feeds/{feed['id']}", json={"jobId": theirs})
    assert stolen.status_code == 404 and stolen.json()["code"] == "FeedNotFound", stolen.text
    assert other.http.delete(f"/api/v1/feeds/{feed['id']}").status_code == 404
    # a job that did not succeed, or that has its own feed, is refused
    failed = record_job(pg_conn, ns, me.name, module="BAD 200", phase="Failed")
    assert me.http.put(f"/api/v1/feeds/{feed['id']}", json={"jobId": failed}).json()["code"] == "JobNotSucceeded"
    assert me.http.post(f"/api/v1/jobs/{old}/feed").status_code == 201
    taken = me.http.put(f"/api/v1/feeds/{feed['id']}", json={"jobId": old})
    assert taken.status_code == 409 and taken.json()["code"] == "FeedExists", taken.text
    assert modules(calendar(fetch(server, feed["token"]))) == ["NEW 100"]  # the refusals changed nothing

    # a pinned feed can be made to follow its kind; then revoked by its id
    following = me.http.put(f"/api/v1/feeds/{feed['id']}", json={"follow": {"scheduleType": "exam"}})
    assert following.json()["follow"] == {"scheduleType": "exam"} and following.json()["jobId"] is None
    assert me.http.delete(f"/api/v1/feeds/{feed['id']}").status_code == 204
    assert fetch(server, feed["token"]).status_code == 404


@pytest.mark.parametrize("body, query, code", [
    ({"jobId": "up-x", "follow": {"scheduleType": "exam"}}, "", "InvalidParameters"),
    ({}, "", "InvalidParameters"),
    ({"follow": {"scheduleType": "auto"}}, "", "InvalidParameters"),
    ({"follow": {"scheduleType": "exam", "tenant": "someone"}}, "", "InvalidParameters"),
    ({"follow": {"scheduleType": "lecture"}}, "", "CalendarRangeRequired"),
    ({"jobId": "up-nothing-here"}, "", "JobNotFound"),
])
def test_what_a_new_feed_may_serve(serve_api, make_key, body, query, code):
    server = serve_api()
    me = Tenant(server, make_key)
    refused = me.http.post(f"/api/v1/feeds{query}", json=body)
    assert refused.json()["code"] == code, refused.text
    assert me.http.get("/api/v1/feeds").json()["items"] == []
    lectures = me.http.post("/api/v1/feeds?from=2026-02-09&until=2026-05-29",
                            json={"follow": {"scheduleType": "lecture"}})
    assert lectures.status_code == 201, lectures.text
    cal = calendar(fetch(server, lectures.json()["token"]))
    assert str(cal["x-wr-calname"]) == f"UP lectures 2026 ({me.name})"
