"""The upload API in-process against real Postgres, S3 (moto server) and the local
Kubernetes control plane (no operator: ParseJobs stay unprocessed)."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
from api_harness import JobRef, write_events
from api_testlib import FIXTURES

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "schedgen.io", "v1alpha1", "parsejobs"
PDF = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()


def upload(client, data: bytes = PDF, *, filename="s.pdf", headers=None, **fields):
    return client.post("/api/v1/uploads", files={"file": (filename, data, "application/pdf")},
                       data=fields or None, headers=headers or {})


def unique_pdf() -> bytes:
    return PDF + f"\n% {uuid.uuid4().hex}\n".encode()


def parsejob(k8s_api_client, ns, name):
    from kubernetes import client

    return client.CustomObjectsApi(k8s_api_client).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def parsejobs(k8s_api_client, ns):
    from kubernetes import client

    return client.CustomObjectsApi(k8s_api_client).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]


def assert_error(response, status, code):
    """An RFC 9457 problem document with the stable `code`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert body["code"] == code, body
    assert body["type"] == f"https://schedgen.dev/problems/{code}" and body["status"] == status
    assert body["title"] and body["detail"] and body["instance"] == response.request.url.path


def test_upload_stores_pdf_and_creates_parsejob(client, s3, k8s_api_client, api_namespace):
    data = unique_pdf()
    r = upload(client, data, filename="../../etc/My Schedule.pdf", priority="high", scheduleType="exam")
    assert r.status_code == 202, r.text
    body = r.json()
    sha = hashlib.sha256(data).hexdigest()
    assert body["sha256"] == sha and body["size"] == len(data) and body["replayed"] is False
    assert body["id"].startswith(f"up-{sha[:10]}-")
    assert body["statusUrl"] == f"/api/v1/jobs/{body['id']}" == r.headers["location"]
    assert body["phase"] == "Queued" and body["priority"] == "high" and body["tenant"] == "default"
    key = f"uploads/namespaces/{api_namespace}/sha256/{sha}.pdf"  # the namespace's own prefix
    stored = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert stored == data
    pj = parsejob(k8s_api_client, api_namespace, body["id"])
    assert pj["metadata"]["uid"] == body["uid"]
    assert pj["spec"]["source"]["s3"] == {"bucket": s3.bucket, "key": key}
    assert pj["spec"]["priority"] == "high" and pj["spec"]["scheduleType"] == "exam"
    assert pj["spec"]["tenant"] == "default"
    assert (pj["spec"]["deadlineSeconds"], pj["spec"]["maxRetries"]) == (300, 3)
    assert pj["metadata"]["labels"]["schedgen.io/tenant"] == "default"
    assert pj["metadata"]["annotations"]["schedgen.io/original-filename"] == "My Schedule.pdf"
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert name in r.headers


def test_job_defaults_come_from_the_configuration(make_client, k8s_api_client, api_namespace):
    client = make_client(default_deadline_seconds=120, default_max_retries=1)
    body = upload(client, unique_pdf()).json()
    spec = parsejob(k8s_api_client, api_namespace, body["id"])["spec"]
    assert (spec["deadlineSeconds"], spec["maxRetries"]) == (120, 1)


def test_status_of_new_job_and_unknown_job(client):
    job = upload(client, unique_pdf()).json()
    r = client.get(job["statusUrl"])
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["id"] == job["id"] and s["phase"] == "Queued" and s["attempts"] == 0
    assert s["result"] is None and s["error"] is None and s["source"] == "kubernetes"
    assert_error(client.get("/api/v1/jobs/up-doesnotexist"), 404, "JobNotFound")
    assert_error(client.get("/api/v1/jobs/Not_A_Name"), 422, "InvalidParameters")
    assert_error(client.get("/api/v1/jobs/up-doesnotexist/events"), 404, "JobNotFound")
    assert_error(client.get("/api/v1/nothing-here"), 404, "NotFound")


def test_events_of_unfinished_job_is_409(client):
    job = upload(client, unique_pdf()).json()
    assert_error(client.get(job["eventsUrl"]), 409, "JobNotFinished")
    assert_error(client.get(job["calendarUrl"]), 409, "JobNotFinished")


def test_status_falls_back_to_postgres_records(client, pg_conn, api_namespace):
    """After retention deleted the ParseJob, the operator's row and the runner's events answer."""
    from schedgen.models import Event, ParseResult, ScheduleKind

    uid = str(uuid.uuid4())
    name = f"up-retained-{uid[:6]}"
    ref = JobRef(uid=uid, namespace=api_namespace, name=name, tenant="default", source_bucket="b",
                    source_key="k")
    events = [Event(module="COS 301", activity="Exam", date="2025-06-02", start_time="08:00",
                    venues=("IT 4-5",), campus="Hatfield", paper="1")]
    write_events(pg_conn, ref, ParseResult(ScheduleKind.EXAM, events, pages=1, seconds=0.2))
    pg_conn.execute("UPDATE parse_jobs SET phase = 'Succeeded', attempts = 1, transition_seq = 3,"
                    " completed_at = now() WHERE uid = %s", (uid,))
    s = client.get(f"/api/v1/jobs/{name}").json()
    assert s["source"] == "records" and s["phase"] == "Succeeded" and s["uid"] == uid
    assert s["result"]["kind"] == "exam" and s["result"]["events"] == 1
    ev = client.get(f"/api/v1/jobs/{name}/events").json()
    assert ev == {"kind": "exam", "events": [events[0].to_json()]}
    ics = client.get(f"/api/v1/jobs/{name}/calendar.ics")
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert b"SUMMARY:COS 301 Exam" in ics.content and b"DTSTART;TZID=Africa/Johannesburg:20250602T080000" in ics.content
    # another tenant does not see it
    pg_conn.execute("UPDATE parse_jobs SET tenant = 'someone-else' WHERE uid = %s", (uid,))
    assert_error(client.get(f"/api/v1/jobs/{name}"), 404, "JobNotFound")


def test_lecture_calendar_needs_a_range(client, pg_conn, api_namespace):
    from schedgen.models import Event, ParseResult, ScheduleKind

    uid = str(uuid.uuid4())
    name = f"up-lecture-{uid[:6]}"
    ref = JobRef(uid=uid, namespace=api_namespace, name=name, tenant="default", source_bucket="b",
                    source_key="k")
    events = [Event(module="COS 301", activity="L1", group="G01", day="Monday", start_time="08:30",
                    end_time="09:20", venues=("IT 2-27",))]
    write_events(pg_conn, ref, ParseResult(ScheduleKind.LECTURE, events, pages=1))
    pg_conn.execute("UPDATE parse_jobs SET phase = 'Succeeded' WHERE uid = %s", (uid,))
    assert_error(client.get(f"/api/v1/jobs/{name}/calendar.ics"), 400, "CalendarRangeRequired")
    assert_error(client.get(f"/api/v1/jobs/{name}/calendar.ics?from=2025-03-01&until=2025-02-01"), 400,
                 "CalendarRangeRequired")
    assert_error(client.get(f"/api/v1/jobs/{name}/calendar.ics?from=nope&until=2025-02-01"), 422,
                 "InvalidParameters")
    r = client.get(f"/api/v1/jobs/{name}/calendar.ics?from=2025-02-10&until=2025-05-30")
    assert r.status_code == 200, r.text
    assert b"RRULE:FREQ=WEEKLY;UNTIL=20250530T215959Z" in r.content


def test_too_large_is_413_without_creating_anything(make_client, k8s_api_client, api_namespace):
    client = make_client(max_upload_bytes=4096)
    before = len(parsejobs(k8s_api_client, api_namespace))
    big = PDF + b"0" * 5000
    assert_error(upload(client, big), 413, "PayloadTooLarge")
    # without a usable Content-Length (chunked), the streamed count stops it too
    def chunks():
        yield b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n"
        for _ in range(10):
            yield b"%PDF-1.4 " + b"0" * 1000
        yield b"\r\n--XX--\r\n"
    r = client.post("/api/v1/uploads", content=chunks(), headers={"content-type": "multipart/form-data; boundary=XX"})
    assert_error(r, 413, "PayloadTooLarge")
    r = client.post("/api/v1/uploads", content=b"x", headers={"content-type": "multipart/form-data; boundary=XX",
                                                              "content-length": "999999999"})
    assert_error(r, 413, "PayloadTooLarge")
    assert len(parsejobs(k8s_api_client, api_namespace)) == before


def test_not_a_pdf_is_415(client):
    assert_error(upload(client, b"GIF89a not a pdf"), 415, "NotAPDF")
    assert_error(upload(client, b""), 415, "NotAPDF")
    r = client.post("/api/v1/uploads", json={"file": "x"})
    assert_error(r, 415, "UnsupportedMediaType")


def test_form_validation(client):
    assert_error(upload(client, unique_pdf(), priority="urgent"), 422, "InvalidPriority")
    assert_error(upload(client, unique_pdf(), scheduleType="timetable"), 422, "InvalidScheduleType")
    r = client.post("/api/v1/uploads", data={"priority": "high"}, files={"other": ("x", b"%PDF-")})
    assert_error(r, 400, "UnexpectedField")
    r = client.post("/api/v1/uploads", content=b"--XX\r\nContent-Disposition: form-data; name=\"priority\""
                    b"\r\n\r\nhigh\r\n--XX--\r\n", headers={"content-type": "multipart/form-data; boundary=XX"})
    assert_error(r, 400, "MissingFile")
    r = client.post("/api/v1/uploads", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 400 and r.json()["code"] == "MalformedMultipart"
    r = upload(client, unique_pdf(), headers={"Idempotency-Key": "has space"})
    assert r.status_code in (400, 422) and r.json()["code"] in ("InvalidParameters", "InvalidIdempotencyKey")


def test_idempotent_retry_returns_the_same_job(client, k8s_api_client, api_namespace):
    data = unique_pdf()
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    first = upload(client, data, headers=key)
    assert first.status_code == 202, first.text
    second = upload(client, data, headers=key)
    assert second.status_code == 202 and second.headers.get("idempotent-replayed") == "true"
    assert second.json()["id"] == first.json()["id"] and second.json()["uid"] == first.json()["uid"]
    assert second.json()["replayed"] is True
    same = [pj for pj in parsejobs(k8s_api_client, api_namespace)
            if pj["metadata"]["annotations"].get("schedgen.io/content-sha256") == first.json()["sha256"]]
    assert len(same) == 1
    # the same key with another file is refused; a new key makes a new job
    assert_error(upload(client, unique_pdf(), headers=key), 422, "IdempotencyKeyReused")
    third = upload(client, data, headers={"Idempotency-Key": f"other-{uuid.uuid4()}"})
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]


def test_idempotency_after_the_parsejob_is_gone(client, k8s_api_client, api_namespace, pg_conn):
    """A replay never re-creates a job whose ParseJob retention deleted (its row answers)."""
    from kubernetes import client as k8s

    data = unique_pdf()
    key = {"Idempotency-Key": f"gone-{uuid.uuid4()}"}
    first = upload(client, data, headers=key).json()
    k8s.CustomObjectsApi(k8s_api_client).delete_namespaced_custom_object(GROUP, VERSION, api_namespace, PLURAL,
                                                                        first["id"])
    pg_conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key, phase)"
                    " VALUES (%s, %s, %s, 'default', 'k', 'Succeeded')", (first["uid"], api_namespace, first["id"]))
    deadline = time.monotonic() + 10  # the watch cache learns of the deletion
    while client.get(first["statusUrl"]).json()["source"] != "records" and time.monotonic() < deadline:
        time.sleep(0.05)
    again = upload(client, data, headers=key)
    assert again.status_code == 202 and again.json()["uid"] == first["uid"] and again.json()["phase"] == "Succeeded"
    names = [pj["metadata"]["name"] for pj in parsejobs(k8s_api_client, api_namespace)]
    assert first["id"] not in names


@pytest.mark.usefixtures("one_rate_window")
def test_rate_limits_headers_and_429(make_client):
    client = make_client(uploads_per_minute=2, reads_per_minute=3)
    seen = []
    for i in range(3):
        r = upload(client, unique_pdf())
        seen.append((r.status_code, r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"]))
    assert seen[:2] == [(202, "2", "1"), (202, "2", "0")]
    assert seen[2][0] == 429
    r = upload(client, unique_pdf())
    assert_error(r, 429, "RateLimited")
    reset = int(r.headers["ratelimit-reset"])
    assert 1 <= reset <= 60 and int(r.headers["retry-after"]) == reset
    # reads have their own budget
    reads = [client.get("/api/v1/queue") for _ in range(4)]
    assert [x.status_code for x in reads] == [200, 200, 200, 429]
    assert [x.headers["ratelimit-remaining"] for x in reads] == ["2", "1", "0", "0"]
    # probes are not limited
    assert client.get("/healthz").status_code == 200


@pytest.mark.usefixtures("one_rate_window")
def test_rate_limit_is_shared_between_replicas(make_client):
    """Two app instances (two replicas) count in the same Postgres window."""
    a = make_client(reads_per_minute=4)
    b = make_client(reads_per_minute=4)
    codes = [c.get("/api/v1/queue").status_code for c in (a, b, a, b, a)]
    assert codes == [200, 200, 200, 200, 429]


@pytest.mark.usefixtures("one_rate_window")
def test_forwarded_for_only_from_trusted_proxies(make_client):
    # the TestClient's peer is "testclient" (not an IP): never trusted; failed keys count per address
    untrusted = make_client(key=None, auth_failures_per_minute=2)
    for ip in ("10.0.0.1", "10.0.0.2"):
        untrusted.get("/api/v1/queue", headers={"X-Forwarded-For": ip})
    assert untrusted.get("/api/v1/queue", headers={"X-Forwarded-For": "10.0.0.3"}).status_code == 429


def test_api_keys_tenant_and_required(make_client, pg_conn, k8s_api_client, api_namespace):
    from schedgen.api.backends import postgres as api_db

    key = api_db.add_key_sync(pg_conn, "team-a", "test")
    stored = pg_conn.execute("SELECT key_hash, tenant, admin, max_priority FROM api_keys WHERE key_prefix = %s",
                             (key[:12],)).fetchone()
    assert stored == (api_db.hash_key(key), "team-a", False, "normal") and key not in stored[0]
    client = make_client(key=None)  # the default configuration: keys required
    r = client.get("/api/v1/queue")
    assert_error(r, 401, "ApiKeyRequired")
    assert r.headers["www-authenticate"] == "Bearer" and "ratelimit-limit" in r.headers
    assert_error(upload(client, unique_pdf()), 401, "ApiKeyRequired")
    assert_error(client.get("/api/v1/queue", headers={"Authorization": "Bearer sgk_wrong"}), 401, "InvalidApiKey")
    # the tenant comes from the key, never from the request
    r = upload(client, unique_pdf(), headers={"Authorization": f"Bearer {key}", "X-Tenant": "team-b"},
               tenant="team-b")
    assert_error(r, 400, "UnexpectedField")
    r = upload(client, unique_pdf(), headers={"Authorization": f"Bearer {key}", "X-Tenant": "team-b"})
    assert r.status_code == 202 and r.json()["tenant"] == "team-a"
    pj = parsejob(k8s_api_client, api_namespace, r.json()["id"])
    assert pj["spec"]["tenant"] == "team-a" and pj["metadata"]["labels"]["schedgen.io/tenant"] == "team-a"
    assert client.get(r.json()["statusUrl"], headers={"X-API-Key": key}).status_code == 200
    # another tenant's key cannot read team-a's job
    other = make_client()
    assert_error(other.get(r.json()["statusUrl"]), 404, "JobNotFound")
    # revoked keys stop working (after the cache: a new app has none)
    assert api_db.revoke_key_sync(pg_conn, key[:12]) == 1
    fresh = make_client(key=key)
    assert_error(fresh.get("/api/v1/queue"), 401, "InvalidApiKey")


def test_anonymous_only_when_allowed_explicitly(make_client, k8s_api_client, api_namespace):
    anonymous = make_client(key=None, allow_anonymous=True)
    r = upload(anonymous, unique_pdf())
    assert r.status_code == 202 and r.json()["tenant"] == "default" and r.json()["priority"] == "normal"
    # anonymous callers may use priority normal at most
    assert_error(upload(anonymous, unique_pdf(), priority="high"), 403, "PriorityNotAllowed")
    assert upload(anonymous, unique_pdf(), priority="low").status_code == 202
    # a key that is given must still be valid
    assert_error(anonymous.get("/api/v1/queue", headers={"X-API-Key": "sgk_unknown"}), 401, "InvalidApiKey")


def test_key_max_priority(make_client, pg_conn, k8s_api_client, api_namespace):
    from schedgen.api.backends import postgres as api_db

    low = make_client(key=api_db.add_key_sync(pg_conn, "team-low", max_priority="low"))
    for priority in ("high", "normal"):
        r = upload(low, unique_pdf(), priority=priority)
        assert_error(r, 403, "PriorityNotAllowed")
        assert "low" in r.json()["detail"]
    assert upload(low, unique_pdf(), priority="low").json()["priority"] == "low"
    normal = make_client(key=api_db.add_key_sync(pg_conn, "team-normal"))
    assert_error(upload(normal, unique_pdf(), priority="high"), 403, "PriorityNotAllowed")
    assert upload(normal, unique_pdf()).json()["priority"] == "normal"
    high = make_client(key=api_db.add_key_sync(pg_conn, "team-high", max_priority="high"))
    r = upload(high, unique_pdf(), priority="high")
    assert r.status_code == 202 and parsejob(k8s_api_client, api_namespace, r.json()["id"])["spec"]["priority"] == "high"
    # nothing was created for the refused uploads
    tenants = [pj["spec"]["tenant"] for pj in parsejobs(k8s_api_client, api_namespace)]
    assert tenants.count("team-low") == 1 and tenants.count("team-normal") == 1


def test_queue_shows_the_callers_tenant_unless_admin(make_client, pg_conn, api_namespace):
    from schedgen.api.backends import postgres as api_db

    key_a = api_db.add_key_sync(pg_conn, "queue-a", max_priority="high")
    key_b = api_db.add_key_sync(pg_conn, "queue-b")
    a, b = make_client(key=key_a, queue_cache_seconds=0), make_client(key=key_b, queue_cache_seconds=0)
    assert upload(a, unique_pdf()).status_code == 202 and upload(a, unique_pdf()).status_code == 202
    assert upload(b, unique_pdf()).status_code == 202
    qa, qb = a.get("/api/v1/queue").json(), b.get("/api/v1/queue").json()
    assert list(qa["tenants"]) == ["queue-a"] and qa["total"]["waiting"] == qa["tenants"]["queue-a"]["waiting"] == 2
    assert list(qb["tenants"]) == ["queue-b"] and qb["total"]["waiting"] == 1
    nothing = make_client(key=api_db.add_key_sync(pg_conn, "queue-c")).get("/api/v1/queue").json()
    assert nothing["tenants"] == {"queue-c": nothing["total"]} and nothing["total"]["waiting"] == 0
    admin = make_client(queue_cache_seconds=0).get("/api/v1/queue").json()  # the fixture's admin key
    assert {"queue-a", "queue-b"} <= set(admin["tenants"]) and admin["total"]["waiting"] >= 3


@pytest.mark.usefixtures("one_rate_window")
def test_unknown_keys_spend_the_address_failure_budget_not_a_keys(make_client, pg_conn):
    from schedgen.api.backends import postgres as api_db

    client = make_client(key=None, auth_failures_per_minute=3, reads_per_minute=3)
    codes = [client.get("/api/v1/queue", headers={"X-API-Key": f"sgk_made-up-{i}"}).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]  # counted by address, whatever key is sent
    # a valid key from the same address has its own quota, untouched by the failures
    key = api_db.add_key_sync(pg_conn, "team-rl")
    codes = [client.get("/api/v1/queue", headers={"X-API-Key": key}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_unknown_key_lookups_are_cached_briefly(make_client, pg_conn):
    from schedgen.api import gate
    from schedgen.api.backends import postgres as api_db

    key = api_db.new_key()
    client = make_client(key=key)
    assert_error(client.get("/api/v1/queue"), 401, "InvalidApiKey")
    # the key appears in the database: the negative answer is remembered a moment ...
    pg_conn.execute("INSERT INTO api_keys (key_hash, key_prefix, tenant) VALUES (%s, %s, 'late')",
                    (api_db.hash_key(key), key[:12]))
    t0 = time.monotonic()
    first = client.get("/api/v1/queue")
    if time.monotonic() - t0 < gate.NEGATIVE_KEY_SECONDS:
        assert_error(first, 401, "InvalidApiKey")
    # ... and only briefly
    time.sleep(gate.NEGATIVE_KEY_SECONDS + 0.2)
    assert client.get("/api/v1/queue").status_code == 200


def test_queue_counts(client, pg_conn, api_namespace):
    upload(client, unique_pdf())
    pg_conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key, phase) VALUES"
                    " (gen_random_uuid(), %s, 'old-1', 'default', 'k', 'Succeeded'),"
                    " (gen_random_uuid(), %s, 'old-2', 'team-z', 'k', 'Failed')", (api_namespace, api_namespace))
    q = client.get("/api/v1/queue").json()
    assert q["total"]["waiting"] >= 1 and q["total"]["oldestWaitingSeconds"] is not None
    assert q["tenants"]["default"]["succeeded"] >= 1 and q["tenants"]["team-z"]["failed"] == 1
    assert q["total"]["failed"] >= 1


def test_health_ready_metrics_openapi(client):
    from prometheus_client import generate_latest

    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok", "kubernetes": "ok"}}
    upload(client, b"not a pdf")
    assert client.get("/metrics").status_code == 404  # a listener of its own (SCHEDGEN_API_METRICS_PORT)
    text = generate_latest().decode()
    assert 'schedgen_api_requests_total{method="POST",route="/api/v1/uploads",status="415"}' in text
    assert 'schedgen_api_rejections_total{reason="NotAPDF"}' in text
    assert "schedgen_api_request_duration_seconds_bucket" in text
    doc = client.get("/openapi.json").json()
    assert "/api/v1/uploads" in doc["paths"] and "/api/v1/jobs/{job_id}/calendar.ics" in doc["paths"]


def test_s3_down_is_503_and_no_parsejob(make_client, closed_port, k8s_api_client, api_namespace, pg_conn):
    client = make_client(s3_endpoint_url=f"http://127.0.0.1:{closed_port}")
    before = len(parsejobs(k8s_api_client, api_namespace))
    key = f"s3-down-{uuid.uuid4()}"
    t0 = time.monotonic()
    r = upload(client, unique_pdf(), headers={"Idempotency-Key": key})
    assert_error(r, 503, "StorageUnavailable")
    assert time.monotonic() - t0 < 15 and r.headers["retry-after"]
    assert len(parsejobs(k8s_api_client, api_namespace)) == before
    assert pg_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0  # claim released
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "unavailable"


def test_postgres_down_is_503(make_client, closed_port):
    client = make_client(database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/schedgen")
    assert_error(upload(client, unique_pdf()), 503, "DatabaseUnavailable")
    assert_error(client.get("/api/v1/queue"), 503, "DatabaseUnavailable")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["checks"]["database"] == "unavailable"


def test_kubernetes_down_is_503_and_claim_released(make_client, closed_port, local_cluster, tmp_path, pg_conn):
    import yaml

    kubeconfig = yaml.safe_load(local_cluster.kubeconfig.read_text())
    for c in kubeconfig["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{closed_port}"
    path = tmp_path / "down.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    client = make_client(kubeconfig=str(path))
    r = upload(client, unique_pdf(), headers={"Idempotency-Key": "k8s-down"})
    assert_error(r, 503, "KubernetesUnavailable")
    assert pg_conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0] == 0
    assert client.get("/readyz").json()["checks"]["kubernetes"] == "unavailable"
