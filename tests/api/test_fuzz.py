"""Fuzz the API from its own OpenAPI document (schemathesis): no 500s, and every
response (status, headers, content type, body) conforms to the document.

Runs in-process against the real backends (Postgres, S3, the local control plane), with
the rate limits raised so the fuzzer is not simply answered 429. (The document is loaded
at import through a proxy app; `schemathesis.pytest.from_fixture` does not work with
pytest 9 yet.)"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


class _Proxy:
    """Serves the OpenAPI document before the fixtures exist, then the real app."""

    def __init__(self) -> None:
        from schedgen.api.app import create_app
        from schedgen.api.config import ApiConfig

        cfg = ApiConfig()
        self.doc_app = create_app(cfg, services=types.SimpleNamespace(cfg=cfg)).state.gate
        self.target = None

    async def __call__(self, scope, receive, send):
        await (self.target or self.doc_app)(scope, receive, send)


PROXY = _Proxy()
PDF = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "up" / "UP_EXAM_SS.pdf").read_bytes()
schema = schemathesis.openapi.from_asgi("/openapi.json", PROXY)


@pytest.fixture
def live_app(api_config, fresh_limits):
    from starlette.testclient import TestClient

    from schedgen.api.app import asgi

    app = asgi(api_config(uploads_per_minute=100000, reads_per_minute=100000, max_upload_bytes=64 * 1024))
    with TestClient(app):  # runs the lifespan (closes the pool at the end)
        PROXY.target = app
        yield app
    PROXY.target = None


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_openapi(case, live_app):
    # "Is a PDF" (checked by the bytes) is not expressible in JSON Schema: a schema-valid
    # upload generated in positive mode gets a real PDF as its file, so the
    # positive-data-acceptance check can hold; negative-mode bodies stay as generated.
    if (case.method == "POST" and isinstance(case.body, dict) and "file" in case.body
            and case.meta is not None and not case.meta.is_negative_at(ParameterLocation.BODY)):
        case.body["file"] = PDF
    excluded = []
    headers = case.headers or {}
    if "Idempotency-Key" in headers and headers["Idempotency-Key"] in (None, "null"):
        # schemathesis mutates the header to null, which goes on the wire as the valid
        # string "null", then expects a rejection
        excluded.append(negative_data_rejection)
    if (case.method == "POST" and case.meta is not None and case.meta.is_negative_at(ParameterLocation.BODY)
            and _valid_upload_form(case.body) and not case.meta.is_negative_at(ParameterLocation.HEADER)
            and _valid_idempotency_key(headers.get("Idempotency-Key"))):
        # the coverage phase labels some schema-valid forms "negative": nothing to reject
        excluded.append(negative_data_rejection)
    response = case.call_and_validate(excluded_checks=excluded)
    assert response.status_code < 500, response.text


def _valid_upload_form(body) -> bool:
    return (isinstance(body, dict) and set(body) <= {"file", "priority", "scheduleType"}
            and isinstance(body.get("file"), bytes)
            and body.get("priority", "normal") in ("high", "normal", "low")
            and body.get("scheduleType", "auto") in ("auto", "lecture", "test", "exam"))


def _valid_idempotency_key(value) -> bool:
    return value is None or (isinstance(value, str) and 1 <= len(value) <= 255)
