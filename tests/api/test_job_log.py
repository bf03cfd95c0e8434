"""`GET /api/v1/jobs/{id}/log` and `schedgen logs` over real HTTP (no cluster;
api_harness.py): the API logged in as role `schedgen_api` on the real Postgres and S3,
ParseJobs and their Events in memory (`MemoryParseJobs.kube_events`, selected by the
involved object's uid and kind as the API server's field selector does). The same route
against the real API server: test_jobs_api.py; with the real operator: tests/cli/test_cli_e2e.py."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import yaml
from api_harness import exam_record, multipart
from api_testlib import FIXTURES
from cli_testlib import cli_env, run_cli

from schedgen.client import EXIT_API, EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_OK

PDF = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()


def kube_event(uid: str, name: str, reason: str, message: str, at: str, *, type_: str = "Normal",
               count: int | None = None, kind: str = "ParseJob") -> dict:
    """A core/v1 Event as the API server lists the ones kopf posts for the operator."""
    event = {"metadata": {"name": f"schedgen-operator-{uuid.uuid4().hex[:5]}", "namespace": "api-local"},
             "type": type_, "reason": reason, "message": message, "reportingComponent": "schedgen-operator",
             "source": {"component": "schedgen-operator"}, "firstTimestamp": at, "lastTimestamp": at,
             "involvedObject": {"apiVersion": "schedgen.io/v1alpha1", "kind": kind, "name": name, "uid": uid}}
    if count is not None:
        event["count"] = count
    return event


def upload(server, key: str) -> dict:
    content_type, body = multipart(PDF + f"\n% {uuid.uuid4()}\n".encode())
    r = httpx.post(server.url + "/api/v1/uploads", content=body,
                   headers={"Content-Type": content_type, "X-API-Key": key}, timeout=20)
    assert r.status_code == 202, r.text
    return r.json()


def get_log(server, key: str, job_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/jobs/{job_id}/log", headers={"X-API-Key": key}, timeout=20)


FAILED = {"phase": "Failed", "attempts": 2, "startedAt": "2026-11-29T13:01:31Z", "completedAt": "2026-11-29T13:01:35Z",
          "error": {"reason": "InvalidPDF", "code": "NoTables", "message": "no ruled table was found in the PDF"}}


def test_log_summary_and_events_tenant_scoped(serve_api, make_key, pg_conn):
    server = serve_api()
    tenant, other = f"log-{uuid.uuid4().hex[:6]}", f"log-{uuid.uuid4().hex[:6]}"
    key, other_key = make_key(tenant), make_key(other)
    job = upload(server, key)
    # waiting: no summary, no Events yet
    r = get_log(server, key, job["id"])
    assert r.status_code == 200, r.text
    assert r.json() == {"id": job["id"], "phase": "Queued", "attempts": 0, "source": "kubernetes", "summary": None,
                        "events": []}
    # the operator's Events (listed in no particular order), and others' that must not show
    server.jobs.kube_events += [
        kube_event(job["uid"], job["id"], "InvalidPDF", "InvalidPDF (NoTables): no ruled table was found in the PDF",
                   "2026-11-29T13:01:35Z", type_="Warning"),
        kube_event(job["uid"], job["id"], "BackoffLimitExceeded", "the runner failed; retrying",
                   "2026-11-29T13:01:20Z", count=2),
        kube_event(str(uuid.uuid4()), job["id"], "Stale", "an earlier ParseJob of this name", "2026-11-29T13:00:00Z"),
        kube_event(job["uid"], job["id"], "NotAParseJob", "same uid, other kind", "2026-11-29T13:00:00Z", kind="Job"),
    ]
    server.jobs.objects[job["id"]]["status"] = FAILED
    body = get_log(server, key, job["id"]).json()
    assert body["phase"] == "Failed" and body["attempts"] == 2 and body["source"] == "kubernetes"
    assert body["summary"] == {"ok": False, "reason": "InvalidPDF", "code": "NoTables",
                               "message": "no ruled table was found in the PDF"}
    assert body["events"] == [
        {"type": "Normal", "reason": "BackoffLimitExceeded", "message": "the runner failed; retrying", "count": 2,
         "firstTime": "2026-11-29T13:01:20Z", "lastTime": "2026-11-29T13:01:20Z", "from": "schedgen-operator"},
        {"type": "Warning", "reason": "InvalidPDF",
         "message": "InvalidPDF (NoTables): no ruled table was found in the PDF", "count": 1,
         "firstTime": "2026-11-29T13:01:35Z", "lastTime": "2026-11-29T13:01:35Z", "from": "schedgen-operator"}]
    # another tenant's job does not exist for this key, and a missing job is 404 too
    for who, job_id in ((other_key, job["id"]), (key, "up-0000000000-000000000000")):
        r = get_log(server, who, job_id)
        assert r.status_code == 404 and r.json()["code"] == "JobNotFound", r.text
    assert httpx.get(f"{server.url}/api/v1/jobs/{job['id']}/log", timeout=20).status_code == 401  # no key
    # a success's summary
    server.jobs.objects[job["id"]]["status"] = {
        "phase": "Succeeded", "attempts": 1, "result": {"kind": "exam", "events": 5, "pages": 1, "parseSeconds": 0.03}}
    assert get_log(server, key, job["id"]).json()["summary"] == {"ok": True, "kind": "exam", "events": 5, "pages": 1,
                                                                 "seconds": 0.03}
    # known from its record only (retention deleted the ParseJob): the summary, no Events
    name, _ = exam_record(pg_conn, server.ctx.cfg.namespace, tenant)
    body = get_log(server, key, name).json()
    assert body["source"] == "records" and body["events"] == [] and body["summary"]["ok"] is True
    assert body["summary"]["kind"] == "exam" and body["summary"]["events"] == 1
    # the Kubernetes API down: 503 for a job whose Events live there
    server.jobs.down = "connection refused"
    r = get_log(server, key, job["id"])
    assert r.status_code == 503 and r.json()["code"] == "KubernetesUnavailable", r.text


def test_schedgen_logs_against_the_api(serve_api, make_key, tmp_path):
    server = serve_api()
    tenant = f"log-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant)
    job = upload(server, key)
    server.jobs.kube_events.append(
        kube_event(job["uid"], job["id"], "InvalidPDF", "InvalidPDF (NoTables): no ruled table was found in the PDF",
                   "2026-11-29T13:01:35Z", type_="Warning", count=3))
    server.jobs.objects[job["id"]]["status"] = FAILED
    env = cli_env(tmp_path, SCHEDGEN_API_URL=server.url, SCHEDGEN_API_KEY=key)
    api_doc = get_log(server, key, job["id"]).json()

    done = run_cli("logs", job["id"], "-o", "json", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout) == api_doc
    assert yaml.safe_load(run_cli("logs", job["id"], "-o", "yaml", env=env).stdout) == api_doc

    table = run_cli("logs", job["id"], env=env).stdout
    assert re.search(rf"Job\s+{job['id']}", table) and re.search(r"Phase\s+Failed", table), table
    assert re.search(r"Summary\s+InvalidPDF \(NoTables\): no ruled table was found in the PDF", table), table
    assert re.search(r"2026-11-29T13:01:35Z\s+Warning\s+InvalidPDF\s+InvalidPDF \(NoTables\)", table), table
    assert "Count" not in table and "From" not in table
    wide = run_cli("logs", job["id"], "-o", "wide", env=env).stdout
    assert re.search(r"Count\s+First seen\s+From", wide), wide
    assert re.search(r"\s3\s+2026-11-29T13:01:35Z\s+schedgen-operator", wide), wide

    # --follow on a finished job: its Events once, the summary, and the job's exit code
    followed = run_cli("logs", job["id"], "--follow", env=env)
    assert followed.returncode == EXIT_JOB_FAILED, followed.stderr
    lines = followed.stdout.splitlines()
    assert lines[0] == ("2026-11-29T13:01:35Z  Warning  InvalidPDF  "
                        "InvalidPDF (NoTables): no ruled table was found in the PDF")
    assert any(re.match(r"Summary\s+InvalidPDF \(NoTables\)", line) for line in lines[1:]), followed.stdout

    missing = run_cli("logs", "up-0000000000-000000000000", env=env)
    assert missing.returncode == EXIT_NOT_FOUND and "JobNotFound" in missing.stderr
    # a job still waiting: --follow gives up after --wait-timeout (exit 4, WaitTimeout)
    waiting = upload(server, key)
    done = run_cli("logs", waiting["id"], "--follow", "--wait-timeout", "1", env=env)
    assert done.returncode == EXIT_API and "WaitTimeout" in done.stderr and "Queued" in done.stderr
