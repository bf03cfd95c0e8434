"""The API's pure functions on plain inputs: no cluster, no database, no server."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ipaddress
import uuid

import pytest
from prometheus_client import REGISTRY

from schedgen.api import gate
from schedgen.api.backends import BackendUnavailable
from schedgen.api.backends.postgres import RateDecision
from schedgen.api.config import ApiConfig
from schedgen.api.errors import ApiError, backend_unavailable
from schedgen.api.multipart import Upload
from schedgen.api.services import lookup, queue, uploads
from schedgen.errors import DatabaseUnavailable

UTC = dt.timezone.utc
TRUSTED = (ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("127.0.0.1/32"),
           ipaddress.ip_network("fd00::/8"))


# --- client address -------------------------------------------------------------------------


def address(peer, forwarded=None, trusted=TRUSTED):
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return gate.client_address({"client": (peer, 5000)} if peer else {}, headers, trusted)


def test_client_address_takes_the_nearest_untrusted_hop_behind_a_trusted_proxy():
    assert address("10.1.2.3", "203.0.113.9") == "203.0.113.9"
    assert address("10.1.2.3", "198.51.100.1, 203.0.113.9, 10.1.9.9") == "203.0.113.9"
    assert address("127.0.0.1", " 198.51.100.1 ,203.0.113.9 ") == "203.0.113.9"
    assert address("fd00::1", "2001:db8::5") == "2001:db8::5"


def test_client_address_is_the_peer_when_the_header_cannot_be_trusted():
    assert address("192.0.2.7", "203.0.113.9") == "192.0.2.7"  # peer is not a proxy
    assert address("10.1.2.3", "203.0.113.9", trusted=()) == "10.1.2.3"  # no proxies configured
    assert address("10.1.2.3", "not-an-ip") == "10.1.2.3"
    assert address("10.1.2.3", "203.0.113.9, garbage, 10.1.9.9") == "10.1.2.3"
    assert address("10.1.2.3") == "10.1.2.3"
    assert address("10.1.2.3", " , ") == "10.1.2.3"
    assert address("testclient", "203.0.113.9") == "testclient"  # not an address: never trusted
    assert address(None) == "unknown"


def test_client_address_when_every_hop_is_a_trusted_proxy_takes_the_first():
    assert address("10.1.2.3", "10.1.0.1, 10.1.0.2") == "10.1.0.1"


def test_api_key_from_either_header():
    assert gate.api_key({"x-api-key": "sgk_a"}) == "sgk_a"
    assert gate.api_key({"authorization": "Bearer  sgk_b "}) == "sgk_b"
    assert gate.api_key({"authorization": "bearer sgk_c"}) == "sgk_c"
    assert gate.api_key({"x-api-key": "sgk_a", "authorization": "Bearer sgk_b"}) == "sgk_a"
    assert gate.api_key({"authorization": "Basic dXNlcjpwdw=="}) is None
    assert gate.api_key({}) is None


def test_request_headers_and_api_paths():
    scope = {"headers": [(b"X-Forwarded-For", b"203.0.113.9"), (b"x-api-key", b"k\xe9")]}
    assert gate.request_headers(scope) == {"x-forwarded-for": "203.0.113.9", "x-api-key": "k\u00e9"}
    assert gate.request_headers({}) == {}
    assert [gate.is_api_path(p) for p in ("/api/v1", "/api/v1/queue", "/api/v10", "/healthz")] == [
        True, True, False, False]


def test_rate_limit_headers_and_refusal():
    allowed = RateDecision(limit=5, count=2, reset_seconds=17)
    assert gate.rate_headers(allowed) == [(b"ratelimit-limit", b"5"), (b"ratelimit-remaining", b"3"),
                                          (b"ratelimit-reset", b"17"), (b"ratelimit-policy", b"5;w=60")]
    over = RateDecision(limit=5, count=9, reset_seconds=3)
    assert not over.allowed and over.remaining == 0
    before = _sample("schedgen_api_rate_limited_total", route_class="upload")
    exc = gate.rate_limited("upload", over)
    assert (exc.status, exc.code, exc.headers) == (429, "RateLimited", {"Retry-After": "3"})
    assert "more than 5 upload requests per minute" in exc.message
    assert _sample("schedgen_api_rate_limited_total", route_class="upload") == before + 1


# --- backend errors -------------------------------------------------------------------------


@pytest.mark.parametrize("exc, backend, code, text", [
    (DatabaseUnavailable("no Postgres connection within 5s (api@db.internal:5432/schedgen unreachable)"),
     "postgres", "DatabaseUnavailable", "the database is unavailable"),
    (BackendUnavailable("s3", "S3 bucket 'private-uploads' unreachable"), "s3", "StorageUnavailable",
     "the storage is unavailable"),
    (BackendUnavailable("kubernetes", "Kubernetes API unreachable: https://10.96.0.1:443"), "kubernetes",
     "KubernetesUnavailable", "the Kubernetes API is unavailable"),
    (BackendUnavailable("ldap", "no directory at ldap.internal"), "ldap", "Unavailable", "a backend is unavailable"),
])
def test_backend_errors_map_to_one_503_each(exc, backend, code, text, caplog):
    """One 503 per failure, naming the backend only: the Gate answers with it before any
    key is checked, so the exception's text (hosts, users, buckets) goes to the log."""
    before = _sample("schedgen_api_backend_errors_total", backend=backend)
    with caplog.at_level("WARNING", logger="schedgen.api"):
        err = backend_unavailable(exc)
    assert (err.status, err.code, err.message, err.headers) == (503, code, text, {"Retry-After": "5"})
    assert err.body("/api/v1/queue") == {"type": f"https://schedgen.dev/problems/{code}",
                                          "title": "Service Unavailable", "status": 503, "detail": text,
                                          "code": code, "instance": "/api/v1/queue"}
    assert err.compat_body() == {"statusCode": 503, "message": text, "error": "Service Unavailable"}
    assert _sample("schedgen_api_backend_errors_total", backend=backend) == before + 1
    assert exc.message in caplog.text


# --- job status from the two sources ----------------------------------------------------------


def test_status_of_a_new_parsejob_fills_the_defaults():
    """A waiting job's place comes from the operator's published queue
    (schedgen.queue_summary), never from its own status (the operator writes none there)."""
    obj = {"metadata": {"name": "up-1", "uid": "u-1", "namespace": "uploads",
                        "creationTimestamp": "2025-06-01T08:00:00Z"},
           "status": {"queuePosition": 9}}
    queue = {"positions": "other/a\nuploads/x\nuploads/y\nuploads/up-1\n"}
    assert lookup.status_from_object(obj, queue) == {
        "id": "up-1", "uid": "u-1", "tenant": "uploads", "priority": "normal", "scheduleType": "auto",
        "phase": "Queued", "queuePosition": 4, "attempts": 0, "result": None, "error": None,
        "createdAt": "2025-06-01T08:00:00Z", "startedAt": None, "completedAt": None, "source": "kubernetes"}
    assert lookup.status_from_object(obj)["queuePosition"] is None  # nothing published: no place shown


def test_status_of_a_finished_parsejob_keeps_only_documented_fields():
    obj = {"metadata": {"name": "up-2", "uid": "u-2", "namespace": "uploads"},
           "spec": {"tenant": "team-a", "priority": "high", "scheduleType": "exam"},
           "status": {"phase": "Failed", "queuePosition": 1, "attempts": "2", "startedAt": "2025-06-01T08:00:01Z",
                      "completedAt": "2025-06-01T08:00:09Z",
                      "result": {"kind": "exam", "events": 5, "pages": 1, "parseSeconds": 0.4, "extra": 1},
                      "error": {"reason": "BadInput", "code": "NotAPDF", "message": "no", "exitCode": 2}}}
    s = lookup.status_from_object(obj)
    assert (s["tenant"], s["priority"], s["scheduleType"], s["phase"]) == ("team-a", "high", "exam", "Failed")
    assert s["queuePosition"] is None and s["attempts"] == 2  # a position only while Queued
    assert s["result"] == {"kind": "exam", "events": 5, "pages": 1, "parseSeconds": 0.4}
    assert s["error"] == {"reason": "BadInput", "code": "NotAPDF", "message": "no"}
    assert (s["startedAt"], s["completedAt"]) == ("2025-06-01T08:00:01Z", "2025-06-01T08:00:09Z")
    job = lookup.Job.of(s)
    assert (job.name, job.uid, job.tenant, job.phase, job.kind) == ("up-2", "u-2", "team-a", "Failed", "exam")


def record(**overrides) -> dict:
    row = {"uid": uuid.UUID("0f8e3c1a-0000-4000-8000-000000000001"), "name": "up-3", "tenant": "default",
           "priority": "low", "schedule_type": "lecture", "phase": "Succeeded", "attempts": 1, "kind": "lecture",
           "event_count": 30, "pages": 2, "parse_seconds": 1.25, "error_reason": None, "error_code": None,
           "error_message": None,
           "created_at": dt.datetime(2025, 6, 1, 10, 0, 0, 750000, tzinfo=dt.timezone(dt.timedelta(hours=2))),
           "enqueued_at": None, "started_at": dt.datetime(2025, 6, 1, 8, 0, 5, tzinfo=UTC),
           "completed_at": None}
    row.update(overrides)
    return row


def test_status_from_a_record_matches_the_kubernetes_shape():
    s = lookup.status_from_record("up-3", record())
    assert s == {"id": "up-3", "uid": "0f8e3c1a-0000-4000-8000-000000000001", "tenant": "default",
                 "priority": "low", "scheduleType": "lecture", "phase": "Succeeded", "queuePosition": None,
                 "attempts": 1, "result": {"kind": "lecture", "events": 30, "pages": 2, "parseSeconds": 1.25},
                 "error": None, "createdAt": "2025-06-01T08:00:00Z", "startedAt": "2025-06-01T08:00:05Z",
                 "completedAt": None, "source": "records"}
    assert set(s) == set(lookup.status_from_object({"metadata": {"name": "x", "uid": "y", "namespace": "z"}}))


def test_status_from_a_record_result_and_error_only_when_known():
    failed = lookup.status_from_record("up-4", record(
        phase="Failed", attempts=None, kind=None, event_count=None, pages=None, parse_seconds=None,
        error_reason="BadInput", error_code="CorruptPDF", error_message="broken xref"))
    assert failed["result"] is None and failed["attempts"] == 0
    assert failed["error"] == {"reason": "BadInput", "code": "CorruptPDF", "message": "broken xref"}
    empty = lookup.status_from_record("up-5", record(kind=None, event_count=0))  # zero events is a result
    assert empty["result"] == {"kind": None, "events": 0, "pages": 2, "parseSeconds": 1.25}
    no_reason = lookup.status_from_record("up-6", record(error_reason=None, error_message="lost"))
    assert no_reason["error"] == {"reason": None, "code": None, "message": "lost"}


# --- the queue ------------------------------------------------------------------------------


def parsejob(name, tenant=None, phase=None, namespace="uploads", **status):
    obj = {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2025-06-01T07:59:00Z"},
           "spec": {"tenant": tenant} if tenant else {}, "status": dict(status)}
    if phase:
        obj["status"]["phase"] = phase
    return obj


def test_queue_summary_counts_live_objects_and_records():
    now = dt.datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
    items = [parsejob("a", "team-a", enqueuedAt="2025-06-01T07:59:30Z"),
             parsejob("b", "team-a", "Queued"),  # no enqueuedAt: waiting since creation
             parsejob("c", "team-a", "Running"),
             parsejob("d", None, "Queued", enqueuedAt="2025-06-01T08:00:10Z"),  # clock skew: never negative
             parsejob("e", "team-b", "Succeeded"), parsejob("f", "team-b", "Succeeded"),
             parsejob("g", "team-b", "Cancelled")]
    finished = {"team-b": {"succeeded": 1, "failed": 3}, "team-c": {"cancelled": 2}}
    q = queue.queue_summary(items, finished, now)
    assert list(q["tenants"]) == ["team-a", "team-b", "team-c", "uploads"]
    assert q["tenants"]["team-a"] == {"waiting": 2, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 0,
                                      "oldestWaitingSeconds": 60.0}
    assert q["tenants"]["uploads"]["waiting"] == 1 and q["tenants"]["uploads"]["oldestWaitingSeconds"] == 0.0
    # a finished object not yet recorded still counts: the larger of the two counts
    assert q["tenants"]["team-b"] == {"waiting": 0, "running": 0, "succeeded": 2, "failed": 3, "cancelled": 1,
                                      "oldestWaitingSeconds": None}
    assert q["tenants"]["team-c"]["cancelled"] == 2
    assert q["total"] == {"waiting": 3, "running": 1, "succeeded": 2, "failed": 3, "cancelled": 3,
                          "oldestWaitingSeconds": 60.0}


def test_queue_summary_of_nothing():
    q = queue.queue_summary([], {}, dt.datetime.now(UTC))
    assert q == {"total": {"waiting": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
                           "oldestWaitingSeconds": None}, "tenants": {}}


# --- the upload's pieces ----------------------------------------------------------------------


def test_form_choices():
    assert uploads.form_choices({}) == ("normal", "auto")
    for empty in ({"priority": ""}, {"scheduleType": ""}):  # not in the OpenAPI enums: refused
        with pytest.raises(ApiError) as err:
            uploads.form_choices(empty)
        assert err.value.status == 422
    assert uploads.form_choices({"priority": "high", "scheduleType": "exam"}) == ("high", "exam")
    with pytest.raises(ApiError) as bad:
        uploads.form_choices({"priority": "urgent"})
    assert (bad.value.status, bad.value.code) == (422, "InvalidPriority")
    assert bad.value.message == "priority must be one of high, normal, low"
    with pytest.raises(ApiError) as bad:
        uploads.form_choices({"scheduleType": "timetable"})
    assert bad.value.message == "scheduleType must be one of auto, lecture, test, exam"


def test_idempotency_hash_is_per_tenant_and_validated():
    h = uploads.idempotency_hash("team-a", "retry-1")
    assert h == hashlib.sha256(b"team-a\0retry-1").hexdigest()
    assert uploads.idempotency_hash("team-b", "retry-1") != h
    assert uploads.idempotency_hash("t", "~" * 255)
    for bad in ("", "has space", "x" * 256, "caf\u00e9", "tab\there"):
        with pytest.raises(ApiError) as refused:
            uploads.idempotency_hash("team-a", bad)
        assert (refused.value.status, refused.value.code) == (400, "InvalidIdempotencyKey")


class _Refusing:
    """CustomObjectsApi's calls, each answering `status` as the API server would."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message

    def _answer(self, *args, **kwargs):
        import json

        from kubernetes.client.rest import ApiException

        exc = ApiException(status=self.status, reason="Refused")
        exc.body = json.dumps({"kind": "Status", "code": self.status, "message": self.message})
        raise exc

    create_namespaced_custom_object = get_namespaced_custom_object = _answer


POLICY_SAYS = ("admission webhook \"validate.example.com\" denied the request: spec.source.s3.key must be under "
               "uploads/namespaces/the-api/")


@pytest.mark.parametrize("status", [400, 403, 422])
def test_a_create_the_api_server_refuses_is_refused_not_unavailable(status):
    """403 (an admission policy or webhook, RBAC), 400/422 (invalid): the server answered,
    so `Refused` with its message (for the log), never `BackendUnavailable`; a read answered
    the same way stays an outage of the backend (the API cannot do its job)."""
    import kubernetes

    from schedgen.api.backends import Refused
    from schedgen.api.backends.kube import ParseJobs

    jobs = ParseJobs(ApiConfig(namespace="the-api"), client=kubernetes.client.ApiClient())
    jobs.custom = _Refusing(status, POLICY_SAYS)
    with pytest.raises(Refused) as info:
        jobs.create({"metadata": {"name": "up-x"}})
    assert (info.value.backend, info.value.status, info.value.message) == ("kubernetes", status, POLICY_SAYS)
    with pytest.raises(BackendUnavailable):
        jobs.get("up-x")


@pytest.mark.parametrize("status", [500, 503, 504, 429])
def test_a_create_the_api_server_cannot_serve_is_unavailable(status):
    import kubernetes

    from schedgen.api.backends.kube import ParseJobs

    jobs = ParseJobs(ApiConfig(namespace="the-api"), client=kubernetes.client.ApiClient())
    jobs.custom = _Refusing(status, "etcdserver: request timed out")
    with pytest.raises(BackendUnavailable) as info:
        jobs.create({"metadata": {"name": "up-x"}})
    assert info.value.backend == "kubernetes"


def test_a_refused_parsejob_is_a_typed_500_that_tells_only_the_log(caplog):
    from schedgen.api.backends import Refused
    from schedgen.api.errors import parsejob_refused

    before = _sample("schedgen_api_backend_errors_total", backend="kubernetes")
    with caplog.at_level("ERROR", logger="schedgen.api"):
        err = parsejob_refused(Refused("kubernetes", 403, POLICY_SAYS), "the-api", "up-x")
    assert (err.status, err.code, err.headers) == (500, "ParseJobRefused", {})  # no Retry-After: it would not help
    assert err.message == "the cluster refused the job for this upload; the API's log says why"
    assert err.body("/api/v1/uploads")["type"] == "https://schedgen.dev/problems/ParseJobRefused"
    assert err.compat_body() == {"statusCode": 500, "message": err.message, "error": "Internal Server Error"}
    assert "the-api" not in err.message and "uploads/" not in err.message
    assert POLICY_SAYS in caplog.text and "the-api/up-x" in caplog.text and "HTTP 403" in caplog.text
    # not an outage: the backend error count (what the unavailability alerts read) is unchanged
    assert _sample("schedgen_api_backend_errors_total", backend="kubernetes") == before


def test_the_api_stores_uploads_under_its_namespace_prefix():
    sha = "cd" * 32
    assert uploads.upload_prefix("the-api") == "uploads/namespaces/the-api/sha256/"
    assert uploads.source_key("the-api", sha) == f"uploads/namespaces/the-api/sha256/{sha}.pdf"


def test_erasure_deletes_only_the_apis_own_uploads_legacy_included():
    from schedgen.api.services.erasure import is_api_upload

    sha = "cd" * 32
    assert is_api_upload(f"uploads/namespaces/the-api/sha256/{sha}.pdf", "the-api")
    assert is_api_upload(f"uploads/sha256/{sha}.pdf", "the-api")  # an older version's key
    for key in (f"uploads/namespaces/other/sha256/{sha}.pdf",       # another API's
                f"uploads/namespaces/the-api/{sha}.pdf",              # a kubectl user's in that namespace
                f"uploads/namespaces/the-api/sha256/../../other/{sha}.pdf",
                f"uploads/namespaces/the-api/sha256/{sha}.pdf.bak", f"uploads/sha256/{sha[:-1]}.pdf",
                f"results/the-api/{sha}.json", "k/uid"):
        assert not is_api_upload(key, "the-api"), key


def test_parsejob_body():
    cfg = ApiConfig(s3_bucket="uploads-bucket", namespace="the-api", default_deadline_seconds=120,
                    default_max_retries=1)
    sha = "ab" * 32
    upload = Upload(io.BytesIO(b"%PDF-"), 5, sha, "My Schedule.pdf")
    before = dt.datetime.now(dt.timezone.utc)
    body = uploads.parsejob_body(cfg, uploads.job_name(sha, "k" * 12), "team-a", upload, "high", "exam", "f" * 64)
    created = dt.datetime.fromisoformat(body["metadata"]["annotations"].pop("schedgen.io/created-at"))
    assert before <= created <= dt.datetime.now(dt.timezone.utc)  # to the microsecond (the list's order)
    assert body == {
        "apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
        "metadata": {"name": f"up-{sha[:10]}-kkkkkkkkkkkk",
                     "labels": {"schedgen.io/tenant": "team-a", "app.kubernetes.io/created-by": "schedgen-api"},
                     "annotations": {"schedgen.io/content-sha256": sha,
                                     "schedgen.io/idempotency-key-sha256": "f" * 64,
                                     "schedgen.io/original-filename": "My Schedule.pdf"},
                     "finalizers": ["schedgen.io/record"]},  # the operator's, saving it a write
        # under the API namespace's own prefix: the one rule for every namespace's ParseJobs
        "spec": {"source": {"s3": {"bucket": "uploads-bucket", "key": f"uploads/namespaces/the-api/sha256/{sha}.pdf"}},
                 "scheduleType": "exam", "priority": "high", "tenant": "team-a",
                 "deadlineSeconds": 120, "maxRetries": 1}}
    plain = uploads.parsejob_body(cfg, "up-x", "t", Upload(io.BytesIO(), 0, sha, None), "low", "auto", None)
    assert set(plain["metadata"]["annotations"]) == {"schedgen.io/content-sha256", "schedgen.io/created-at"}


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
