"""Fuzz the API from its own OpenAPI document (schemathesis): no 500s, and every
response (status, headers, content type, body) conforms to the document.

Runs in-process against the real backends (Postgres, S3, the local control plane), with
the rate limits (and the failed-key budget: unknown feed tokens count in it) raised so
the fuzzer is not simply answered 429. The document is built
at import (a bare app, no backends); each test's app runs on schemathesis' own event
loop, lifespan included (started by the first call, ended at teardown by its pytest
plugin), so its connection pool and requests share one loop."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection, positive_data_acceptance

from schedgen.api.app import asgi, create_app
from schedgen.api.config import ApiConfig

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PDF = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "up" / "UP_EXAM_SS.pdf").read_bytes()
# The document declares the API key (securitySchemes), so schemathesis would also run
# `ignored_auth`, whose probes without a key are sent without the in-process app (they
# need a base_url). test_openapi.py checks the same over real HTTP for every operation:
# 401 without a key exactly where the document asks for one, either header accepted.
NOT_CHECKED = [ignored_auth]
# the document needs no backends: the app is built around an empty stand-in for them
schema = schemathesis.openapi.from_dict(create_app(ApiConfig(), context=types.SimpleNamespace()).openapi())


@pytest.fixture
def api_key(admin_key):
    return admin_key  # a key that may do everything the document describes (any priority)


@pytest.fixture
def live_app(api_config, fresh_limits):
    return asgi(api_config(uploads_per_minute=100000, reads_per_minute=100000, auth_failures_per_minute=100000,
                           max_upload_bytes=64 * 1024))


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_openapi(case, live_app, api_key):
    # "Is a PDF" (checked by the bytes) is not expressible in JSON Schema: a schema-valid
    # upload generated in positive mode gets a real PDF as its file, so the
    # positive-data-acceptance check can hold; negative-mode bodies stay as generated.
    if (case.method == "POST" and isinstance(case.body, dict) and "file" in case.body
            and case.meta is not None and not case.meta.is_negative_at(ParameterLocation.BODY)):
        case.body["file"] = PDF
    excluded = not_checked(case)
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
    query = case.query or {}
    if "cursor" in query or "exclude" in query:
        # an opaque cursor is valid only when the API made it; an exclusion must also be a
        # real date (range) in bounds: neither is expressible in JSON Schema (both → 422)
        excluded.append(positive_data_acceptance)
    if _over_feed_max_days(query.get("expiresInDays")):
        # the document bounds a feed's life by the absolute limit (3650 days); the server's
        # configured one (SCHEDGEN_API_FEED_MAX_DAYS, 365 here) is runtime config (→ 422)
        excluded.append(positive_data_acceptance)
    if _follows_lectures(case.body) and not {"from", "until"} <= set(query):
        # a feed following lectures needs its term's dates: a rule across the body and the
        # query, not expressible in JSON Schema (→ 400)
        excluded.append(positive_data_acceptance)
    response = case.call_and_validate(app=live_app, excluded_checks=excluded, headers={"X-API-Key": api_key})
    assert response.status_code < 500, response.text


def not_checked(case) -> list:
    """NOT_CHECKED, and: a header the document does not name is no invalid request (HTTP
    servers ignore headers they do not know), but schemathesis, seeing the key's headers
    declared, adds one as "negative" data and expects a rejection."""
    extra = any(name.lower().startswith("x-schemathesis-unknown") for name in (case.headers or {}))
    return [*NOT_CHECKED, *([negative_data_rejection] if extra else [])]


def _over_feed_max_days(value) -> bool:
    try:
        return int(value) > ApiConfig().feed_max_days
    except (TypeError, ValueError):
        return False


def _follows_lectures(body) -> bool:
    return isinstance(body, dict) and isinstance(body.get("follow"), dict) \
        and body["follow"].get("scheduleType") == "lecture"


def _valid_upload_form(body) -> bool:
    return (isinstance(body, dict) and set(body) <= {"file", "priority", "scheduleType"}
            and isinstance(body.get("file"), bytes)
            and body.get("priority", "normal") in ("high", "normal", "low")
            and body.get("scheduleType", "auto") in ("auto", "lecture", "test", "exam"))


def _valid_idempotency_key(value) -> bool:
    return value is None or (isinstance(value, str) and 1 <= len(value) <= 255)


# The ScheduleGenerator web app's routes (routers/compat.py), on in this document and app only.
compat_schema = schemathesis.openapi.from_dict(
    create_app(ApiConfig(compat_routes=True), context=types.SimpleNamespace()).openapi()
).include(path_regex="^/(api/(upload|jobs)|health)")


@pytest.fixture
def compat_app(api_config, fresh_limits):
    return asgi(api_config(uploads_per_minute=100000, reads_per_minute=100000, auth_failures_per_minute=100000,
                           max_upload_bytes=64 * 1024, compat_routes=True, compat_upload_wait_seconds=0))


@compat_schema.parametrize()
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_compat_routes_conform_to_their_openapi(case, compat_app, api_key):
    excluded = not_checked(case)
    if case.method == "POST" and isinstance(case.body, dict) and "file" in case.body:
        if case.meta is not None and not case.meta.is_negative_at(ParameterLocation.BODY):
            case.body["file"] = PDF
        elif _valid_upload_form(case.body):
            excluded.append(negative_data_rejection)
    response = case.call_and_validate(app=compat_app, excluded_checks=excluded, headers={"X-API-Key": api_key})
    assert response.status_code < 500 or case.path.startswith("/health"), response.text
