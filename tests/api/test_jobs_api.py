"""Listing, erasing and waiting for jobs; ETags; calendar feeds (issue #10), in-process
against real Postgres, S3 and the local control plane (no operator: a job "finishes"
by patching its ParseJob status and writing its rows as the operator would)."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
import uuid

import icalendar
import pytest
from api_harness import JobRef, write_events
from test_api import GROUP, PLURAL, VERSION, assert_error, parsejobs, unique_pdf, upload

pytestmark = pytest.mark.cluster

LECTURE = dict(module="COS 301", activity="L1", group="G01", day="Monday", start_time="08:30", end_time="09:20",
               venues=("IT 2-27",))


def custom(k8s_api_client):
    from kubernetes import client

    return client.CustomObjectsApi(k8s_api_client)


def record(pg_conn, ns, tenant, *, name=None, phase="Succeeded", created=None, events=(), kind="lecture",
           source_key=None, source_bucket="b"):
    """A job known only from Postgres (retention deleted its ParseJob): its row and events."""
    from schedgen.models import Event, ParseResult, ScheduleKind

    uid = str(uuid.uuid4())
    name = name or f"up-rec-{uid[:8]}"
    ref = JobRef(uid=uid, namespace=ns, name=name, tenant=tenant, source_bucket=source_bucket,
                 source_key=source_key or f"k/{uid}")
    write_events(pg_conn, ref, ParseResult(ScheduleKind(kind), [Event(**e) for e in events], pages=1))
    pg_conn.execute("UPDATE parse_jobs SET phase = %s, completed_at = %s, created_at = %s WHERE uid = %s",
                    (phase, created or dt.datetime.now(dt.timezone.utc), created or dt.datetime.now(dt.timezone.utc),
                     uid))
    return name, uid


def finish(k8s_api_client, pg_conn, ns, job, *, events=(LECTURE,), kind="lecture"):
    """What the operator does when a job succeeds: events and row, then the status."""
    from schedgen.models import Event, ParseResult, ScheduleKind

    ref = JobRef(uid=job["uid"], namespace=ns, name=job["id"], tenant=job["tenant"], source_bucket="b",
                    source_key=f"uploads/namespaces/{ns}/sha256/{job['sha256']}.pdf")
    write_events(pg_conn, ref, ParseResult(ScheduleKind(kind), [Event(**e) for e in events], pages=1))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    custom(k8s_api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, job["id"],
        {"status": {"phase": "Succeeded", "attempts": 1, "startedAt": now, "completedAt": now, "transitionSeq": 3,
                    "result": {"kind": kind, "events": len(events), "pages": 1, "parseSeconds": 0.1}}})


@pytest.fixture
def tenant_client(make_client, pg_conn):
    """Factory: (client, tenant) with a key of a new tenant of its own."""
    from schedgen.api.backends import postgres as api_db

    def make(**overrides):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        return make_client(key=api_db.add_key_sync(pg_conn, tenant, max_priority="high"), **overrides), tenant

    return make


# --- the list -------------------------------------------------------------------------------


def test_list_newest_first_paginated_stable_under_inserts(tenant_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    recorded = [record(pg_conn, api_namespace, tenant, created=old + dt.timedelta(hours=i))[0] for i in range(2)]
    failed, _ = record(pg_conn, api_namespace, tenant, phase="Failed", created=old - dt.timedelta(hours=1))
    record(pg_conn, api_namespace, "someone-else")  # never listed
    live = [upload(client, unique_pdf()).json()["id"] for _ in range(3)]
    # the operator recorded one live job: listed once, from its ParseJob
    pg_conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key, phase, created_at)"
                    " VALUES (gen_random_uuid(), %s, %s, %s, 'k', 'Queued', now() - interval '5 days')",
                    (api_namespace, live[0], tenant))
    pages, cursor = [], None
    while True:
        r = client.get("/api/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["nextCursor"]
        if len(pages) == 1:  # a job created after the first page does not shift the next ones
            inserted = upload(client, unique_pdf()).json()["id"]
        if cursor is None:
            break
    ids = [item["id"] for page in pages for item in page]
    assert [len(p) for p in pages] == [2, 2, 2]
    assert sorted(ids) == sorted(live + recorded + [failed]) and inserted not in ids
    assert ids[-3:] == [recorded[1], recorded[0], failed]  # the records are the oldest
    created = [item["createdAt"] for page in pages for item in page]
    assert created == sorted(created, reverse=True)
    by_id = {item["id"]: item for page in pages for item in page}
    assert by_id[live[0]]["source"] == "kubernetes" and by_id[failed]["source"] == "records"
    assert by_id[live[1]] == client.get(f"/api/v1/jobs/{live[1]}").json()  # the same document as GET
    first = client.get("/api/v1/jobs").json()  # default limit 50: everything, the new job first
    assert first["items"][0]["id"] == inserted and first["nextCursor"] is None and len(first["items"]) == 7
    assert [i["id"] for i in client.get("/api/v1/jobs?phase=Failed").json()["items"]] == [failed]
    assert {i["id"] for i in client.get("/api/v1/jobs?phase=Queued").json()["items"]} == set(live + [inserted])
    for bad in ("limit=0", "limit=201", "phase=Done", "cursor=not-a-cursor", "cursor=" + "A" * 500):
        assert_error(client.get(f"/api/v1/jobs?{bad}"), 422, "InvalidParameters")


# --- erasure --------------------------------------------------------------------------------


def rows_of(pg_conn, uid, name):
    counts = {}
    for table, where in (("parse_jobs", "uid = %s"), ("events", "job_uid = %s"),
                         ("parse_job_transitions", "job_uid = %s"), ("calendar_feeds", "job_uid = %s"),
                         ("idempotency_keys", "job_uid = %s OR job_name = %s")):
        params = (uid, name) if "OR" in where else (uid,)
        counts[table] = pg_conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
    return counts


def s3_has(s3, key) -> bool:
    try:
        s3.client.head_object(Bucket=s3.bucket, Key=key)
        return True
    except Exception:  # noqa: BLE001
        return False


def test_delete_erases_the_job_everywhere(tenant_client, make_client, pg_conn, s3, k8s_api_client, api_namespace):
    from schedgen.models import Event, ParseResult, ScheduleKind

    client, tenant = tenant_client()
    data = unique_pdf()
    job = upload(client, data, headers={"Idempotency-Key": f"erase-{uuid.uuid4()}"}).json()
    finish(k8s_api_client, pg_conn, api_namespace, job)
    pg_conn.execute("INSERT INTO parse_job_transitions VALUES (%s, 1, 'Queued', null, null, now())", (job["uid"],))
    pdf_key = f"uploads/namespaces/{api_namespace}/sha256/{job['sha256']}.pdf"
    result_key = f"results/{api_namespace}/{job['uid']}.json"
    s3.put(b"{}", result_key)
    feed = client.post(f"/api/v1/jobs/{job['id']}/feed?from=2026-02-09&until=2026-05-29").json()
    assert client.get(feed["url"].split("testserver")[1]).status_code == 200
    before = rows_of(pg_conn, job["uid"], job["id"])
    assert all(before.values()), before
    # another tenant cannot erase it (nor learn that it exists)
    other, _ = tenant_client()
    assert_error(other.delete(f"/api/v1/jobs/{job['id']}"), 404, "JobNotFound")
    assert rows_of(pg_conn, job["uid"], job["id"]) == before
    r = client.delete(f"/api/v1/jobs/{job['id']}")
    assert r.status_code == 204 and r.content == b"", r.text
    assert_error(client.get(f"/api/v1/jobs/{job['id']}"), 404, "JobNotFound")
    assert_error(client.delete(f"/api/v1/jobs/{job['id']}"), 404, "JobNotFound")
    assert job["id"] not in [pj["metadata"]["name"] for pj in parsejobs(k8s_api_client, api_namespace)]
    assert rows_of(pg_conn, job["uid"], job["id"]) == dict.fromkeys(before, 0)
    assert not s3_has(s3, pdf_key) and not s3_has(s3, result_key)
    assert_error(client.get(feed["url"].split("testserver")[1]), 404, "FeedNotFound")
    assert job["id"] not in [i["id"] for i in client.get("/api/v1/jobs").json()["items"]]
    # a late write of the operator for the erased job leaves nothing behind
    ref = JobRef(uid=job["uid"], namespace=api_namespace, name=job["id"], tenant=tenant, source_bucket="b",
                    source_key=pdf_key)
    write_events(pg_conn, ref, ParseResult(ScheduleKind.LECTURE, [Event(**LECTURE)], pages=1))
    assert rows_of(pg_conn, job["uid"], job["id"]) == dict.fromkeys(before, 0)
    assert_error(client.get(f"/api/v1/jobs/{job['id']}"), 404, "JobNotFound")


def test_delete_keeps_a_pdf_another_job_uses(tenant_client, pg_conn, s3, api_namespace):
    a, _ = tenant_client()
    b, _ = tenant_client()
    data = unique_pdf()
    first, second = upload(a, data).json(), upload(b, data).json()
    key = f"uploads/namespaces/{api_namespace}/sha256/{first['sha256']}.pdf"
    assert a.delete(f"/api/v1/jobs/{first['id']}").status_code == 204
    assert s3_has(s3, key)  # tenant b's job still needs it
    assert b.get(f"/api/v1/jobs/{second['id']}").status_code == 200
    assert b.delete(f"/api/v1/jobs/{second['id']}").status_code == 204
    assert not s3_has(s3, key)


def test_delete_erases_a_legacy_upload_and_only_the_apis_own(tenant_client, pg_conn, s3, api_namespace):
    """A record an older version wrote names `uploads/sha256/<sha>.pdf`: erasing its job
    (known only from its record) deletes that PDF too. A key under another namespace's
    prefix is not the API's to delete (nor may its S3 user): the job is erased, the object
    stays; so does the API's own key in another bucket."""
    client, tenant = tenant_client()
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    legacy, foreign = f"uploads/sha256/{sha}.pdf", f"uploads/namespaces/someone-else/sha256/{sha}.pdf"
    for key in (legacy, foreign):
        s3.put(b"%PDF-1.4 an older upload", key)  # written before the jobs were created
    own = f"uploads/namespaces/{api_namespace}/sha256/{sha}.pdf"
    s3.put(b"%PDF-1.4 an upload", own)
    old, _ = record(pg_conn, api_namespace, tenant, source_key=legacy, source_bucket=s3.bucket)
    other, _ = record(pg_conn, api_namespace, tenant, source_key=foreign, source_bucket=s3.bucket)
    elsewhere, _ = record(pg_conn, api_namespace, tenant, source_key=own, source_bucket="another-bucket")
    for name in (old, other, elsewhere):
        r = client.delete(f"/api/v1/jobs/{name}")
        assert r.status_code == 204, r.text
    assert not s3_has(s3, legacy) and s3_has(s3, foreign) and s3_has(s3, own)
    mine, _ = record(pg_conn, api_namespace, tenant, source_key=own, source_bucket=s3.bucket)
    assert client.delete(f"/api/v1/jobs/{mine}").status_code == 204
    assert not s3_has(s3, own)  # a record-only job's own upload too


def test_delete_of_a_record_only_job(tenant_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    name, uid = record(pg_conn, api_namespace, tenant, events=(LECTURE,))
    assert client.get(f"/api/v1/jobs/{name}").json()["source"] == "records"
    assert client.delete(f"/api/v1/jobs/{name}").status_code == 204
    assert rows_of(pg_conn, uid, name) == dict.fromkeys(rows_of(pg_conn, uid, name), 0)
    assert_error(client.get(f"/api/v1/jobs/{name}/events"), 404, "JobNotFound")


def test_delete_waits_for_the_finalizer_and_is_bounded(tenant_client, pg_conn, k8s_api_client, api_namespace):
    """With a finalizer that nobody removes (no operator), DELETE answers 503
    ErasurePending after the bounded wait: the rows are gone already; once the object
    goes, a repeated DELETE... finds nothing left (404)."""
    client, tenant = tenant_client(erase_wait_seconds=1.0)
    job = upload(client, unique_pdf()).json()
    api = custom(k8s_api_client)
    api.patch_namespaced_custom_object(GROUP, VERSION, api_namespace, PLURAL, job["id"],
                                       {"metadata": {"finalizers": ["schedgen.io/test-hold"]}})
    pg_conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key) VALUES (%s, %s, %s, %s, 'k')",
                    (job["uid"], api_namespace, job["id"], tenant))
    t0 = time.monotonic()
    r = client.delete(f"/api/v1/jobs/{job['id']}")
    assert_error(r, 503, "ErasurePending")
    assert 0.9 < time.monotonic() - t0 < 8 and r.headers["retry-after"] == "5"
    assert pg_conn.execute("SELECT count(*) FROM parse_jobs WHERE uid = %s", (job["uid"],)).fetchone() == (0,)
    api.patch_namespaced_custom_object(GROUP, VERSION, api_namespace, PLURAL, job["id"],
                                       {"metadata": {"finalizers": None}})
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/jobs/{job['id']}").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_error(client.delete(f"/api/v1/jobs/{job['id']}"), 404, "JobNotFound")


# --- waiting ----------------------------------------------------------------------------------


def test_wait_answers_when_the_job_finishes(tenant_client, pg_conn, k8s_api_client, api_namespace):
    client, _ = tenant_client()
    job = upload(client, unique_pdf()).json()
    t0 = time.monotonic()
    r = client.get(f"/api/v1/jobs/{job['id']}?wait=1")
    assert r.json()["phase"] == "Queued" and 0.9 <= time.monotonic() - t0 < 3
    timer = threading.Timer(1.0, finish, (k8s_api_client, pg_conn, api_namespace, job))
    timer.start()
    try:
        t0 = time.monotonic()
        r = client.get(f"/api/v1/jobs/{job['id']}?wait=20")
        took = time.monotonic() - t0
    finally:
        timer.join()
    assert r.status_code == 200 and r.json()["phase"] == "Succeeded", r.text
    assert 0.9 <= took < 4, took
    t0 = time.monotonic()
    assert client.get(f"/api/v1/jobs/{job['id']}?wait=20").json()["phase"] == "Succeeded"
    assert time.monotonic() - t0 < 1  # finished already: no wait
    for bad in ("wait=61", "wait=-1", "wait=soon"):
        assert_error(client.get(f"/api/v1/jobs/{job['id']}?{bad}"), 422, "InvalidParameters")


# --- ETags ------------------------------------------------------------------------------------


def test_etags_and_304(tenant_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    name, uid = record(pg_conn, api_namespace, tenant, events=(LECTURE,))
    for path in (f"/api/v1/jobs/{name}", f"/api/v1/jobs/{name}/events",
                 f"/api/v1/jobs/{name}/calendar.ics?from=2026-02-09&until=2026-05-29"):
        first = client.get(path)
        etag = first.headers["etag"]
        assert first.status_code == 200 and etag == '"' + hashlib.sha256(first.content).hexdigest()[:40] + '"'
        again = client.get(path)
        assert again.content == first.content and again.headers["etag"] == etag  # byte-identical
        cached = client.get(path, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    etag = client.get(f"/api/v1/jobs/{name}").headers["etag"]
    pg_conn.execute("UPDATE parse_jobs SET attempts = 2 WHERE uid = %s", (uid,))
    changed = client.get(f"/api/v1/jobs/{name}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and changed.json()["attempts"] == 2


# --- calendars and feeds ------------------------------------------------------------------------


def exdates(ics: bytes) -> list[dt.date]:
    out = []
    for v in icalendar.Calendar.from_ical(ics).walk("VEVENT"):
        ex = v.get("exdate")
        for x in ex if isinstance(ex, list) else [ex] if ex else []:
            out += [d.dt.date() for d in x.dts]
    return out


def test_calendar_exclude(tenant_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    name, _ = record(pg_conn, api_namespace, tenant, events=(LECTURE,))
    base = f"/api/v1/jobs/{name}/calendar.ics?from=2026-02-09&until=2026-05-29"
    r = client.get(base + "&exclude=2026-03-30..2026-04-03&exclude=2026-04-27")
    assert r.status_code == 200, r.text
    assert exdates(r.content) == [dt.date(2026, 3, 30), dt.date(2026, 4, 27)]
    assert b"EXDATE;TZID=Africa/Johannesburg:20260330T083000,20260427T083000" in r.content
    assert exdates(client.get(base).content) == []
    for bad in ("exclude=2026-04-03..2026-03-30", "exclude=tomorrow", "exclude=2026-01-01..2027-06-01",
                "&".join(["exclude=2026-04-27"] * 51)):
        assert_error(client.get(f"{base}&{bad}"), 422, "InvalidParameters")


def test_feeds(tenant_client, make_client, pg_conn, api_namespace):
    client, tenant = tenant_client(public_url="https://cal.example.org/schedgen")
    name, uid = record(pg_conn, api_namespace, tenant, events=(LECTURE,))
    r = client.post(f"/api/v1/jobs/{name}/feed?from=2026-02-09&until=2026-05-29&exclude=2026-04-27")
    assert r.status_code == 201, r.text
    feed = r.json()
    token = feed["token"]
    assert len(token) >= 43 and feed["url"] == f"https://cal.example.org/schedgen/feeds/{token}.ics"
    assert feed["webcal"] == f"webcal://cal.example.org/schedgen/feeds/{token}.ics"
    stored = pg_conn.execute("SELECT token_hash FROM calendar_feeds WHERE job_uid = %s", (uid,)).fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    anonymous = make_client(key=None)  # calendar apps send no key
    path = f"/feeds/{token}.ics"
    first = anonymous.get(path)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/calendar")
    assert exdates(first.content) == [dt.date(2026, 4, 27)]  # the stored parameters
    assert b"DTSTAMP:" in first.content and b"SEQUENCE:0" in first.content
    time.sleep(1.1)  # DTSTAMP is the job's completion, not the time of the request
    second = anonymous.get(path)
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    assert anonymous.get(path, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    assert exdates(anonymous.get(path + "?exclude=2026-03-02").content) == [dt.date(2026, 3, 2)]  # override
    # a new feed revokes the previous one
    newer = client.post(f"/api/v1/jobs/{name}/feed?from=2026-02-09&until=2026-05-29").json()
    assert_error(anonymous.get(path), 404, "FeedNotFound")
    assert anonymous.get(f"/feeds/{newer['token']}.ics").status_code == 200
    assert client.delete(f"/api/v1/jobs/{name}/feed").status_code == 204
    assert_error(anonymous.get(f"/feeds/{newer['token']}.ics"), 404, "FeedNotFound")
    assert_error(client.delete(f"/api/v1/jobs/{name}/feed"), 404, "FeedNotFound")
    assert_error(anonymous.get(f"/feeds/{'x' * 43}.ics"), 404, "FeedNotFound")
    assert_error(anonymous.get("/feeds/short.ics"), 422, "InvalidParameters")
    # another tenant cannot make a feed of this job; anonymous cannot at all
    other, _ = tenant_client()
    assert_error(other.post(f"/api/v1/jobs/{name}/feed"), 404, "JobNotFound")
    assert_error(anonymous.post(f"/api/v1/jobs/{name}/feed"), 401, "ApiKeyRequired")


@pytest.mark.usefixtures("one_rate_window")
def test_feeds_are_rate_limited_like_reads(tenant_client, make_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    name, _ = record(pg_conn, api_namespace, tenant, events=(LECTURE,))
    token = client.post(f"/api/v1/jobs/{name}/feed?from=2026-02-09&until=2026-05-29").json()["token"]
    limited = make_client(key=None, reads_per_minute=2)
    codes = [limited.get(f"/feeds/{token}.ics").status_code for _ in range(3)]
    assert codes[:2] == [200, 200]
    assert_error(limited.get(f"/feeds/{token}.ics"), 429, "RateLimited")


# --- the queue's last hour (the web page's chart) ----------------------------------------


def test_queue_history_counts_from_the_records(tenant_client, make_client, pg_conn, api_namespace):
    client, tenant = tenant_client()
    now = dt.datetime.now(dt.timezone.utc)
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)  # noqa: E731
    # waiting 50..30 min ago, then running until 10 min ago, then Succeeded
    _, done = record(pg_conn, api_namespace, tenant, created=ago(50))
    pg_conn.execute("UPDATE parse_jobs SET started_at = %s, completed_at = %s WHERE uid = %s",
                    (ago(30), ago(10), done))
    # created 20 min ago, still waiting
    _, waiting = record(pg_conn, api_namespace, tenant, phase="Queued", created=ago(20))
    pg_conn.execute("UPDATE parse_jobs SET completed_at = NULL WHERE uid = %s", (waiting,))
    body = client.get("/api/v1/queue/history", params={"minutes": 60, "step": 60}).json()
    assert body["minutes"] == 60 and body["stepSeconds"] == 60 and 60 <= len(body["points"]) <= 61

    def at(minutes_ago: float) -> dict:
        target = now - dt.timedelta(minutes=minutes_ago)
        return min(body["points"], key=lambda p: abs(dt.datetime.fromisoformat(p["at"].replace("Z", "+00:00"))
                                                    - target))

    assert (at(55)["waiting"], at(55)["running"]) == (0, 0)
    assert (at(40)["waiting"], at(40)["running"]) == (1, 0)
    assert (at(25)["waiting"], at(25)["running"]) == (0, 1)
    assert (at(15)["waiting"], at(15)["running"]) == (1, 1)
    assert (at(5)["waiting"], at(5)["running"]) == (1, 0)
    assert sum(p["finished"] for p in body["points"]) == 1
    # another tenant's key sees none of it; the admin key sees it among every tenant's
    other, _ = tenant_client()
    assert all(p["waiting"] == p["running"] == p["finished"] == 0
               for p in other.get("/api/v1/queue/history").json()["points"])
    admin = make_client().get("/api/v1/queue/history", params={"minutes": 60}).json()
    assert at(15)["running"] <= min(p["running"] for p in admin["points"]
                                    if abs((dt.datetime.fromisoformat(p["at"].replace("Z", "+00:00"))
                                            - ago(15)).total_seconds()) < 30)
    coarse = client.get("/api/v1/queue/history", params={"minutes": 1440, "step": 10}).json()
    assert coarse["stepSeconds"] == 120 and len(coarse["points"]) <= 721  # a day: one point per 2 min
    refused = client.get("/api/v1/queue/history", params={"minutes": 100000})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"


# --- a job's log --------------------------------------------------------------------------


def post_event(k8s_api_client, ns, *, uid, name, reason, message, type_="Normal", at=None, kind="ParseJob"):
    """A core/v1 Event about a ParseJob, shaped as kopf posts the operator's."""
    from kubernetes import client

    when = (at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.CoreV1Api(k8s_api_client).create_namespaced_event(ns, {
        "metadata": {"generateName": "schedgen-test-"}, "type": type_, "reason": reason, "message": message,
        "reportingComponent": "schedgen-operator", "reportingInstance": "schedgen-operator",
        "source": {"component": "schedgen-operator"}, "firstTimestamp": when, "lastTimestamp": when,
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "name": name, "namespace": ns,
                           "uid": uid}})


def test_log_reads_the_parsejobs_events_from_the_api_server(tenant_client, pg_conn, k8s_api_client, api_namespace):
    client, _ = tenant_client()
    other, _ = tenant_client()
    job = upload(client, unique_pdf()).json()
    log = client.get(f"/api/v1/jobs/{job['id']}/log")
    assert log.status_code == 200, log.text
    assert log.json() == {"id": job["id"], "phase": "Queued", "attempts": 0, "source": "kubernetes",
                          "summary": None, "events": []}
    early = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=2)
    post_event(k8s_api_client, api_namespace, uid=job["uid"], name=job["id"], reason="Succeeded",
               message="parsed lecture schedule: 1 events, 1 pages in 0.1 s")
    post_event(k8s_api_client, api_namespace, uid=job["uid"], name=job["id"], reason="BackoffLimitExceeded",
               message="retrying", type_="Warning", at=early)
    # not this job's: an earlier ParseJob of the same name (another uid), another kind with this uid
    post_event(k8s_api_client, api_namespace, uid=str(uuid.uuid4()), name=job["id"], reason="Stale", message="x")
    post_event(k8s_api_client, api_namespace, uid=job["uid"], name=job["id"], reason="NotMine", message="x",
               kind="Job")
    finish(k8s_api_client, pg_conn, api_namespace, job)
    body = client.get(f"/api/v1/jobs/{job['id']}/log").json()
    assert body["phase"] == "Succeeded" and body["attempts"] == 1
    assert body["summary"] == {"ok": True, "kind": "lecture", "events": 1, "pages": 1, "seconds": 0.1}
    assert [(e["type"], e["reason"]) for e in body["events"]] == [("Warning", "BackoffLimitExceeded"),
                                                                   ("Normal", "Succeeded")]  # oldest first
    first = body["events"][0]
    assert first["count"] == 1 and first["from"] == "schedgen-operator" and first["firstTime"] == first["lastTime"]
    assert first["firstTime"] == early.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_error(other.get(f"/api/v1/jobs/{job['id']}/log"), 404, "JobNotFound")  # another tenant's job
