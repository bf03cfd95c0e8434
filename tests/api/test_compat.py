"""The ScheduleGenerator web app's routes (SCHEDGEN_API_COMPAT_ROUTES) and CORS, in-process
against the real backends; a job "finishes" the way test_jobs_api does it."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from test_api import GROUP, PLURAL, VERSION, parsejobs, unique_pdf
from test_jobs_api import LECTURE, custom, finish

pytestmark = pytest.mark.cluster

ORIGIN = "https://schedule.example.org"
EXAM = dict(module="COS 301", activity="Exam", date="2026-06-02", start_time="08:00", venues=("IT 4-5", "IT 4-6"))


def compat_upload(client, data, **kw):
    return client.post("/api/upload", files={"file": ("s.pdf", data, "application/pdf")}, **kw)


def assert_nest_error(r, status, error):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"statusCode", "message", "error"} and body["statusCode"] == status, body
    assert body["error"] == error and body["message"]


def finish_when_created(k8s_api_client, pg_conn, ns, data, tenant, **kw):
    """A thread that finishes the ParseJob of `data` once the upload has created it."""
    sha = hashlib.sha256(data).hexdigest()

    def run():
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for pj in parsejobs(k8s_api_client, ns):
                if pj["metadata"]["annotations"].get("schedgen.io/content-sha256") == sha:
                    time.sleep(0.5)
                    job = {"id": pj["metadata"]["name"], "uid": pj["metadata"]["uid"], "tenant": tenant, "sha256": sha}
                    finish(k8s_api_client, pg_conn, ns, job, **kw)
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def compat_client(make_client, pg_conn):
    from schedgen.api.backends import postgres as api_db

    def make(tenant="compat-a", **overrides):
        key = api_db.add_key_sync(pg_conn, tenant)
        return make_client(key=key, compat_routes=True, cors_origins=(ORIGIN,), **overrides)

    return make


def test_compat_routes_are_off_by_default(client):
    for r in (client.post("/api/upload", files={"file": ("s.pdf", unique_pdf())}), client.get("/api/jobs/metrics"),
              client.get("/health")):
        assert r.status_code == 404 and r.json()["code"] == "NotFound"  # an unknown route, in the API's shape


def test_upload_answers_with_the_events_when_the_parse_ends_in_time(compat_client, k8s_api_client, pg_conn,
                                                                      api_namespace):
    client = compat_client()
    data = unique_pdf()
    thread = finish_when_created(k8s_api_client, pg_conn, api_namespace, data, "compat-a", events=(LECTURE,))
    try:
        r = compat_upload(client, data)
    finally:
        thread.join()
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "completed" and body["pdfType"] == "lecture" and body["message"]
    [event] = body["events"]
    assert event == {"id": event["id"], "module": "COS 301", "activity": "L1", "group": "G01", "day": "Monday",
                     "startTime": "08:30", "endTime": "09:20", "venue": "IT 2-27", "isRecurring": True}
    job = client.get(f"/api/jobs/{body['jobId']}").json()
    assert job["status"] == "completed" and job["pdfType"] == "lecture" and job["error"] is None
    assert job["id"] == body["jobId"] and job["createdAt"] and job["completedAt"]
    result = client.get(f"/api/jobs/{body['jobId']}/result").json()
    assert result == {"id": body["jobId"], "events": body["events"]}  # the same stable ids
    assert client.get("/api/jobs/metrics").json()["completed"] >= 1


def test_exam_events_join_venues_and_get_an_end(compat_client, k8s_api_client, pg_conn, api_namespace):
    client = compat_client(tenant="compat-exam")
    data = unique_pdf()
    thread = finish_when_created(k8s_api_client, pg_conn, api_namespace, data, "compat-exam", events=(EXAM,),
                                 kind="exam")
    try:
        body = compat_upload(client, data).json()
    finally:
        thread.join()
    [event] = body["events"]
    assert body["pdfType"] == "exam" and event["isRecurring"] is False
    assert event["venue"] == "IT 4-5, IT 4-6" and event["date"] == "2026-06-02" and "day" not in event
    assert (event["startTime"], event["endTime"]) == ("08:00", "11:00")


def test_upload_that_does_not_finish_in_time_is_202(compat_client, api_namespace):
    client = compat_client(tenant="compat-slow", compat_upload_wait_seconds=1)
    t0 = time.monotonic()
    r = compat_upload(client, unique_pdf())
    assert r.status_code == 202 and 0.9 <= time.monotonic() - t0 < 5, r.text
    body = r.json()
    assert body["status"] == "processing" and body["events"] == [] and body["pdfType"] is None
    job = client.get(f"/api/jobs/{body['jobId']}").json()
    assert job["status"] == "pending" and job["completedAt"] is None
    assert_nest_error(client.get(f"/api/jobs/{body['jobId']}/result"), 409, "Conflict")
    metrics = client.get("/api/jobs/metrics").json()
    assert metrics == {"waiting": 1, "active": 0, "completed": 0, "failed": 0, "delayed": 0, "total": 1}


@pytest.mark.usefixtures("one_rate_window")
def test_failed_job_and_errors_in_the_nest_shape(compat_client, make_client, k8s_api_client, api_namespace):
    client = compat_client(tenant="compat-fail", compat_upload_wait_seconds=0)
    job_id = compat_upload(client, unique_pdf()).json()["jobId"]
    custom(k8s_api_client).patch_namespaced_custom_object_status(
        GROUP, VERSION, api_namespace, PLURAL, job_id,
        {"status": {"phase": "Failed", "error": {"reason": "BadInput", "code": "NotAPDF", "message": "not a PDF"}}})
    deadline = time.monotonic() + 10
    while client.get(f"/api/jobs/{job_id}").json()["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get(f"/api/jobs/{job_id}").json()["error"] == "not a PDF"
    assert client.get("/api/jobs/metrics").json()["failed"] == 1
    assert_nest_error(client.get("/api/jobs/up-nothing-here"), 404, "Not Found")
    assert_nest_error(compat_upload(client, b"GIF89a"), 415, "Unsupported Media Type")
    anonymous = make_client(key=None, compat_routes=True)
    assert_nest_error(anonymous.get("/api/jobs/metrics"), 401, "Unauthorized")
    limited = compat_client(tenant="compat-rl", reads_per_minute=1)
    limited.get("/api/jobs/metrics")
    assert_nest_error(limited.get("/api/jobs/metrics"), 429, "Too Many Requests")


def test_health_routes(compat_client, make_client, closed_port):
    client = compat_client()
    r = client.get("/health", headers={"X-API-Key": ""})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert set(r.json()["details"]) == {"database", "storage", "kubernetes"}  # named, never described
    assert client.get("/health/db").json() == {"status": "ok", "info": {"database": {"status": "up"}}, "error": {},
                                               "details": {"database": {"status": "up"}}}
    down = make_client(compat_routes=True, database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/x")
    r = down.get("/health/db")
    assert r.status_code == 503 and r.json()["status"] == "error" and r.json()["error"]["database"] == {"status": "down"}


def test_cors_for_the_configured_origin_with_credentials(compat_client, make_client):
    client = compat_client()
    pre = client.options("/api/upload", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "x-api-key"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
    r = client.get("/api/jobs/metrics", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    # the Gate's own refusals carry the headers too, so the page can read them
    no_key = make_client(key=None, compat_routes=True, cors_origins=(ORIGIN,))
    r = no_key.get("/api/jobs/metrics", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
    # other origins get nothing
    evil = client.options("/api/upload", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in evil.headers
    r = client.get("/api/jobs/metrics", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    # without configured origins: no CORS at all
    plain = make_client(compat_routes=True)
    assert "access-control-allow-origin" not in plain.get("/api/jobs/metrics", headers={"Origin": ORIGIN}).headers
