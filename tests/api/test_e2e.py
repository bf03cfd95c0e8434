"""End to end over HTTP: the API as a uvicorn subprocess, the operator, the real runner in
Jobs on the local control plane, Postgres and S3."""

from __future__ import annotations

import socket
import time
import uuid

import httpx
import pytest
from api_testlib import FIXTURES, REAL, ApiProcess, api_env

from operator_e2e import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def stack(operator_cluster, start_operator, tmp_path, pg_conn):
    """Operator running; an API process serving a namespace with the runner's Secret.
    Anonymous access is switched on explicitly (SCHEDGEN_API_ALLOW_ANONYMOUS); the keys
    are tested in test_api.py and test_api_keys_over_http below."""
    pg_conn.execute("TRUNCATE rate_limit_windows")
    c = operator_cluster
    ns = c.tenant_namespace("api")
    start_operator()  # no SCHEDGEN_API_NAMESPACES: the API's uploads are under the namespace's own prefix
    started = []

    def api(**overrides) -> ApiProcess:
        env = api_env(database_url=c.postgres.dsn, s3_endpoint_url=c.s3.endpoint_url,
                      s3_credentials=c.s3.credentials_for("api", ns), bucket=c.s3.bucket,
                      namespace=ns, kubeconfig=str(c.cluster.kubeconfig),
                      **{"SCHEDGEN_API_ALLOW_ANONYMOUS": "true", **overrides})
        proc = ApiProcess(env, tmp_path / f"api-{len(started)}.log")
        started.append(proc)
        return proc.start()

    yield c, ns, api
    for p in started:
        p.stop()
        print(f"--- api log {p.log_path} ---\n{p.log_tail(30)}")


def test_real_pdfs_through_http(stack):
    c, ns, api = stack
    server = api(SCHEDGEN_API_UPLOADS_PER_MINUTE=20)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/readyz").status_code == 200
        jobs = {}
        for pdf, kind, count in REAL:
            key = {"Idempotency-Key": f"e2e-{pdf}-{uuid.uuid4().hex[:6]}"}
            files = {"file": (pdf, (FIXTURES / "up" / pdf).read_bytes(), "application/pdf")}
            r = http.post("/api/v1/uploads", files=files, headers=key)
            assert r.status_code == 202, r.text
            # an idempotent retry: the same job, no second ParseJob
            again = http.post("/api/v1/uploads", files=files, headers=key)
            assert again.status_code == 202 and again.json()["id"] == r.json()["id"], again.text
            jobs[pdf] = (r.json(), kind, count)
        assert len(c.parsejobs(ns)) == 3

        for pdf, (job, kind, count) in jobs.items():
            def done():
                s = http.get(job["statusUrl"]).json()
                return s if s["phase"] in ("Succeeded", "Failed", "Cancelled") else None
            s = wait_for(done, 180, interval=0.5, what=f"{pdf} to finish")
            assert s["phase"] == "Succeeded", s
            assert s["result"]["kind"] == kind and s["result"]["events"] == count and s["attempts"] == 1
            ev = http.get(job["eventsUrl"])
            assert ev.status_code == 200, ev.text
            body = ev.json()
            assert body["kind"] == kind and len(body["events"]) == count
            assert all(e["module"] and e["activity"] for e in body["events"])
            params = {"from": "2025-02-10", "until": "2025-05-30"} if kind == "lecture" else {}
            ics = http.get(job["calendarUrl"], params=params)
            assert ics.status_code == 200, ics.text
            assert ics.headers["content-type"].startswith("text/calendar")
            assert ics.text.count("BEGIN:VEVENT") == count
            if kind == "lecture":
                assert "RRULE:FREQ=WEEKLY" in ics.text
                assert http.get(job["calendarUrl"]).json()["code"] == "CalendarRangeRequired"
        q = http.get("/api/v1/queue").json()
        assert q["total"]["succeeded"] >= 3 and q["total"]["waiting"] == 0


@pytest.mark.usefixtures("one_rate_window")
def test_http_error_paths(stack):
    c, ns, api = stack
    server = api(SCHEDGEN_API_UPLOADS_PER_MINUTE=2, SCHEDGEN_API_MAX_UPLOAD_BYTES=8192)
    pdf = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/api/v1/uploads", files={"file": ("x.pdf", pdf + b"0" * 10000)})
        assert r.status_code == 413 and r.json()["code"] == "PayloadTooLarge"
        r = http.post("/api/v1/uploads", files={"file": ("x.pdf", b"PK\x03\x04 a zip")})
        assert r.status_code == 415 and r.json()["code"] == "NotAPDF"
        r = http.post("/api/v1/uploads", files={"file": ("x.pdf", pdf)})
        assert r.status_code == 429 and r.json()["code"] == "RateLimited"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-remaining"] == "0"
        r = http.get("/api/v1/jobs/up-missing-job")
        assert r.status_code == 404 and r.json()["code"] == "JobNotFound"
        assert c.parsejobs(ns) == []


def test_request_timeout_on_a_slow_body(stack):
    """A client that never finishes its body gets 408 once the request timeout passes."""
    c, ns, api = stack
    server = api(SCHEDGEN_API_REQUEST_TIMEOUT_SECONDS=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
                     b"Content-Length: 5000\r\n\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n%PDF-")
        t0 = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 408"), data
        assert b"RequestTimeout" in data and time.monotonic() - t0 < 5


def test_503_when_a_backend_is_down(stack, closed_port):
    c, ns, api = stack
    server = api(SCHEDGEN_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed_port}")
    pdf = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/api/v1/uploads", files={"file": ("x.pdf", pdf)})
        assert r.status_code == 503 and r.json()["code"] == "StorageUnavailable"
        assert http.get("/readyz").status_code == 503
    assert c.parsejobs(ns) == []
