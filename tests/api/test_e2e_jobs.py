"""Issue #10 end to end: the operator and the real runner behind the API over HTTP —
waiting for a parse, erasing a finished and a running job (the finalizer cancels it),
and the web app's upload answering with the events."""

from __future__ import annotations

import time

import httpx
import pytest
from api_testlib import FIXTURES
from test_e2e import stack  # noqa: F401 - the fixture

from operator_e2e import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def pdf(name: str, salt: str) -> bytes:
    """A real schedule with a unique trailer, so its content-addressed object is its own."""
    return (FIXTURES / "up" / name).read_bytes() + f"\n% {salt} {time.time_ns()}\n".encode()


def test_wait_then_erase_a_finished_and_a_running_job(stack):  # noqa: F811
    c, ns, api = stack
    server = api(SCHEDGEN_API_UPLOADS_PER_MINUTE=20)
    with httpx.Client(base_url=server.url, timeout=40) as http:
        job = http.post("/api/v1/uploads", files={"file": ("t.pdf", pdf("UP_TST_PDF.pdf", "wait"))}).json()
        t0 = time.monotonic()
        s = http.get(job["statusUrl"], params={"wait": 25}).json()
        assert s["phase"] == "Succeeded" and s["result"]["events"] == 12, s
        assert time.monotonic() - t0 < 25
        assert c.event_rows(job["uid"]) == 12 and c.row(job["uid"]) is not None
        pdf_key = f"uploads/namespaces/{ns}/sha256/{job['sha256']}.pdf"
        result_key = f"results/{ns}/{job['uid']}.json"
        c.s3.client.head_object(Bucket=c.s3.bucket, Key=result_key)  # the runner's result is there
        r = http.delete(job["statusUrl"])
        assert r.status_code == 204, r.text
        assert http.get(job["statusUrl"]).status_code == 404
        assert c.row(job["uid"]) is None and c.event_rows(job["uid"]) == 0 and c.transitions(job["uid"]) == []
        for key in (pdf_key, result_key):
            with pytest.raises(Exception):
                c.s3.client.head_object(Bucket=c.s3.bucket, Key=key)

        # a job erased while it waits or runs: the finalizer cancels it, nothing comes back
        running = http.post("/api/v1/uploads", files={"file": ("e.pdf", pdf("UP_EXAM_SS.pdf", "cancel"))}).json()
        r = http.delete(running["statusUrl"])
        assert r.status_code == 204, r.text
        assert running["id"] not in [p["metadata"]["name"] for p in c.parsejobs(ns)]
        time.sleep(3)  # the records daemon's next passes find nothing to write
        assert c.row(running["uid"]) is None and c.event_rows(running["uid"]) == 0
        assert http.get(running["statusUrl"]).status_code == 404
        listed = [i["id"] for i in http.get("/api/v1/jobs").json()["items"]]
        assert job["id"] not in listed and running["id"] not in listed


def test_compat_upload_answers_with_the_events(stack):  # noqa: F811
    c, ns, api = stack
    server = api(SCHEDGEN_API_COMPAT_ROUTES="true", SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS="25")
    with httpx.Client(base_url=server.url, timeout=40) as http:
        r = http.post("/api/upload", files={"file": ("exam.pdf", pdf("UP_EXAM_SS.pdf", "compat"))})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "completed" and body["pdfType"] == "exam" and len(body["events"]) == 5
        assert all(e["venue"] and e["startTime"] and e["endTime"] and e["isRecurring"] is False
                   for e in body["events"])
        assert len({e["id"] for e in body["events"]}) == 5
        assert http.get(f"/api/jobs/{body['jobId']}/result").json()["events"] == body["events"]
        assert http.get("/health").json()["status"] == "ok"
        wait_for(lambda: http.get("/api/jobs/metrics").json()["completed"] >= 1, 10, what="metrics")
