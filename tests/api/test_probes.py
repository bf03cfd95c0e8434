"""What the API says without a key (no cluster; api_harness.py): probes and health checks
in generic words only, the metrics on a listener of their own, the OpenAPI document and
/docs without deployment details, and 503s that name no host, user or bucket."""

from __future__ import annotations

import hashlib
import uuid

import httpx
from api_testlib import ApiProcess, api_env
from psycopg import conninfo

READY = {"status": "ready", "checks": {"database": "ok", "storage": "ok", "kubernetes": "ok"}}


def secrets_of(server, *more: str) -> list[str]:
    """What must never reach an unauthenticated caller: the DSN's user, host and port,
    the bucket, the namespace, the S3 endpoint's host."""
    cfg = server.ctx.cfg
    dsn = conninfo.conninfo_to_dict(cfg.database_url.get_secret_value())
    return [dsn["user"], f"{dsn.get('host')}:{dsn.get('port')}", cfg.s3_bucket, cfg.namespace,
            cfg.s3_endpoint_url.split("//", 1)[1], *more]


def assert_says_nothing(response: httpx.Response, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in response.text, (secret, response.text)
        assert secret not in str(response.headers), (secret, response.headers)


def test_probes_answer_in_generic_words(serve_api):
    server = serve_api(compat_routes=True)
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == READY
    assert httpx.get(server.url + "/health").json()["info"] == {
        "database": {"status": "up"}, "storage": {"status": "up"}, "kubernetes": {"status": "up"}}


def test_failed_backends_are_named_not_described(serve_api, closed_port):
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    server = serve_api(s3_bucket=bucket, compat_routes=True)
    server.jobs.down = "Kubernetes API unreachable: https://10.96.0.1:443 (kube-apiserver.internal.example)"
    secrets = secrets_of(server, "10.96.0.1", "internal.example")
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable",
                            "checks": {"database": "ok", "storage": "unavailable", "kubernetes": "unavailable"}}
    health = httpx.get(server.url + "/health")
    assert health.status_code == 503 and set(health.json()["error"]) == {"storage", "kubernetes"}
    for r in (ready, health, httpx.get(server.url + "/health/db")):
        assert_says_nothing(r, secrets)
    # Postgres down: the probes and the Gate's own 503 (before any key is checked) say so, no more
    down = serve_api(database_url=f"postgresql://schedgen_api_login@127.0.0.1:{closed_port}/schedgen",
                     compat_routes=True)
    secrets = secrets_of(down, "schedgen_api_login", str(closed_port))
    for path in ("/readyz", "/health", "/health/db", "/api/v1/queue", "/api/jobs/metrics"):
        r = httpx.get(down.url + path, timeout=20)
        assert r.status_code == 503, (path, r.text)
        assert_says_nothing(r, secrets)
    assert httpx.get(down.url + "/readyz").json()["checks"]["database"] == "unavailable"


def test_a_refused_parsejob_is_its_own_500_not_unavailable(serve_api, make_key, pg_conn, caplog):
    """The API server answered and refused the upload's ParseJob (here as the chart's source
    policy would): not `KubernetesUnavailable` (retrying will not help, so no Retry-After),
    the detail says only that the cluster refused it, the log has the server's message; the
    idempotency claim is released, so a retry once the cluster is fixed creates the job."""
    server = serve_api()
    refusal = ("ValidatingAdmissionPolicy 'sg-schedgen-parsejob-source' with binding 'sg-schedgen-parsejob-source'"
               f" denied request: spec.source.s3.key must be under uploads/namespaces/{server.ctx.cfg.namespace}/")
    key = make_key(f"refused-{uuid.uuid4().hex[:6]}")
    data = b"%PDF-1.4 refused " + uuid.uuid4().hex.encode()
    for status in (403, 422, 400):
        server.jobs.refuse = (status, refusal)
        with caplog.at_level("ERROR", logger="schedgen.api"):
            r = httpx.post(server.url + "/api/v1/uploads", files={"file": ("s.pdf", data, "application/pdf")},
                           headers={"X-API-Key": key, "Idempotency-Key": "refused-once"}, timeout=10)
        assert r.status_code == 500, r.text
        body = r.json()
        assert (body["code"], body["status"]) == ("ParseJobRefused", 500) and "retry-after" not in r.headers
        assert "refused" in body["detail"]
        assert_says_nothing(r, secrets_of(server, "parsejob-source", "uploads/", "ValidatingAdmissionPolicy"))
        assert refusal in caplog.text and f"(HTTP {status})" in caplog.text
        caplog.clear()
    assert pg_conn.execute("SELECT count(*) FROM idempotency_keys WHERE content_sha256 = %s",
                           (hashlib.sha256(data).hexdigest(),)).fetchone() == (0,)
    server.jobs.refuse = None
    r = httpx.post(server.url + "/api/v1/uploads", files={"file": ("s.pdf", data, "application/pdf")},
                   headers={"X-API-Key": key, "Idempotency-Key": "refused-once"}, timeout=10)
    assert r.status_code == 202, r.text


def test_metrics_and_docs_on_the_public_port(serve_api):
    server = serve_api(compat_routes=True, public_url="https://calendar.internal.example")
    assert httpx.get(server.url + "/metrics").status_code == 404  # its own listener (below)
    doc = httpx.get(server.url + "/openapi.json")
    assert doc.status_code == 200 and "/api/v1/uploads" in doc.json()["paths"]
    assert "/metrics" not in doc.json()["paths"]
    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    for r in (doc, docs):
        assert_says_nothing(r, secrets_of(server, "calendar.internal.example"))


def test_metrics_are_served_on_their_own_port(postgres, s3, tmp_path, closed_port):
    from api_harness import closed_kubeconfig, free_port

    env = api_env(database_url=postgres.dsn, s3_endpoint_url=s3.endpoint_url, s3_credentials=s3.credentials_for("api", "api-local"),
                  bucket=s3.bucket, namespace="api-local",
                  kubeconfig=str(closed_kubeconfig(tmp_path / "closed.kubeconfig", closed_port)),
                  SCHEDGEN_API_WATCH_CACHE="false")
    metrics_port = free_port()
    api = ApiProcess(env, tmp_path / "api.log", metrics_port=metrics_port).start()
    try:
        assert httpx.get(api.url + "/healthz").status_code == 200
        assert httpx.get(api.url + "/metrics").status_code == 404
        assert api.metrics_url == f"http://127.0.0.1:{metrics_port}/metrics"
        scraped = httpx.get(api.metrics_url, timeout=5)
        assert scraped.status_code == 200, api.log_tail()
        assert 'schedgen_api_requests_total{method="GET",route="/healthz",status="200"}' in scraped.text
        assert 'route="unmatched",status="404"' in scraped.text  # the refused public /metrics
    finally:
        api.stop()
