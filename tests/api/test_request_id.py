"""X-Request-ID: the Gate takes the caller's (a sane token) or makes one, answers with it,
and every log line written while the request runs carries it, with the caller's tenant
once the key is known (schedgen.logs). Over real HTTP without a cluster (api_harness)."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid

import httpx

from schedgen import logs


class Captured:
    """The schema's JSON lines of the `schedgen.api` loggers while in the block."""

    def __enter__(self) -> "Captured":
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(logs.SchemaJsonFormatter("api"))
        self.logger = logging.getLogger("schedgen.api")
        self.logger.addHandler(self.handler)
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


def test_the_request_id_is_answered_and_in_the_requests_log_lines(serve_api, make_key):
    server = serve_api()
    tenant = f"rid-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant)
    server.jobs.down = "connection refused"  # the job list fails: the API logs why (errors.py)
    with Captured() as captured, httpx.Client(base_url=server.url, timeout=20) as http:
        given = http.get("/api/v1/jobs", headers={"X-API-Key": key, "X-Request-ID": "trace-4711.a"})
        made = http.get("/api/v1/jobs", headers={"X-API-Key": key})
        refused = http.get("/api/v1/jobs", headers={"X-API-Key": key, "X-Request-ID": "x" * 129})
        anonymous = http.get("/healthz", headers={"X-Request-ID": "probe-1"})
    assert given.status_code == made.status_code == 503, given.text
    assert given.headers["x-request-id"] == "trace-4711.a"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])  # too long: replaced
    assert anonymous.status_code == 200 and anonymous.headers["x-request-id"] == "probe-1"
    by_request = {}
    for line in captured.lines():
        by_request.setdefault(line.get("request_id"), []).append(line)
    for response in (given, made, refused):
        lines = by_request.get(response.headers["x-request-id"])
        assert lines, captured.lines()
        assert all(line["tenant"] == tenant and line["component"] == "api" for line in lines), lines
        assert any("unavailable" in line["msg"] for line in lines), lines
