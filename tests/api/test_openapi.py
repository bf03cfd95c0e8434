"""The OpenAPI document: readable operationIds, the API-key security schemes (so /docs
has its Authorize button) and each operation's key requirement, which must be what the
Gate enforces (checked over real HTTP, no cluster: api_harness.py), and examples on the
main models that are valid instances of them."""

from __future__ import annotations

import re
import types

import httpx
import pytest

from schedgen.api import schemas
from schedgen.api.app import create_app
from schedgen.api.config import ApiConfig

METHODS = ("get", "post", "put", "patch", "delete")
READABLE = re.compile(r"^[a-z][a-z0-9]*([A-Z][a-z0-9]*)*$")  # camelCase words, no FastAPI path soup


def document(**cfg) -> dict:
    return create_app(ApiConfig(**cfg), context=types.SimpleNamespace()).openapi()


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def test_every_operation_has_a_readable_unique_operation_id():
    doc = document(compat_routes=True)
    ids = [op.get("operationId") for _, _, op in operations(doc)]
    assert len(ids) >= 20 and len(set(ids)) == len(ids), ids
    for path, method, op in operations(doc):
        assert READABLE.fullmatch(op["operationId"]), (method, path, op["operationId"])
        assert op.get("summary"), (method, path)
    by_route = {(m, p): op["operationId"] for p, m, op in operations(doc)}
    assert by_route[("get", "/api/v1/jobs")] == "listJobs"
    assert by_route[("get", "/api/v1/jobs/{job_id}")] == "getJob"
    assert by_route[("post", "/api/v1/uploads")] == "uploadSchedule"
    assert by_route[("get", "/api/v1/jobs/{job_id}/log")] == "getJobLog"
    assert by_route[("get", "/api/jobs/{job_id}")] == "compatGetJob"  # not a clash with getJob


def test_a_route_without_an_explicit_id_gets_a_readable_one():
    from fastapi import APIRouter

    app = create_app(ApiConfig(), context=types.SimpleNamespace())
    extra = APIRouter()

    @extra.get("/api/v1/some/{thing}/thing_count")
    async def some_thing_count(thing: str):
        return {}

    app.include_router(extra)
    op = app.openapi()["paths"]["/api/v1/some/{thing}/thing_count"]["get"]
    assert op["operationId"] == "someThingCount" and op["security"] == schemas.KEY_REQUIRED


def test_security_schemes_and_each_operations_requirement():
    doc = document(compat_routes=True)
    assert doc["components"]["securitySchemes"] == {
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                         "description": "An API key (`schedgen-api add-key`), e.g. `sgk_...`"},
        "BearerKey": {"type": "http", "scheme": "bearer",
                      "description": "The same API key as `Authorization: Bearer sgk_...`"}}
    keyed = set()
    for path, method, op in operations(doc):
        assert "security" in op, (method, path)
        if op["security"]:
            assert op["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}], (method, path)  # either header
            keyed.add(path)
    public = {p for p, _, op in operations(doc) if op["security"] == []}
    assert public == {"/healthz", "/readyz", "/feeds/{token}.ics", "/health", "/health/db"}
    assert keyed == {p for p in doc["paths"] if p.startswith("/api/")}


def fill(path: str) -> str:
    return (path.replace("{job_id}", "up-0000000000-000000000000").replace("{token}", "t" * 43)
            .replace("{feed_id}", schemas.EXAMPLE_FEED_ID))


def test_the_gate_enforces_what_the_document_says(serve_api, make_key):
    """Every operation the served document marks as needing a key answers 401 without
    one and is let through with either header; the others never ask for one."""
    server = serve_api(compat_routes=True, auth_failures_per_minute=10000, compat_upload_wait_seconds=0)
    key = make_key("openapi-check")
    doc = httpx.get(server.url + "/openapi.json", timeout=20).json()
    assert "securitySchemes" in doc["components"]
    checked = 0
    with httpx.Client(base_url=server.url, timeout=20) as http:
        for path, method, op in operations(doc):
            url = fill(path)
            anonymous = http.request(method.upper(), url)
            with_header = http.request(method.upper(), url, headers={"X-API-Key": key})
            with_bearer = http.request(method.upper(), url, headers={"Authorization": f"Bearer {key}"})
            if op["security"]:
                assert anonymous.status_code == 401, (method, path, anonymous.text)
                assert anonymous.headers["www-authenticate"] == "Bearer"
            else:
                assert anonymous.status_code != 401, (method, path)
            for r in (with_header, with_bearer):
                assert r.status_code not in (401, 500), (method, path, r.status_code, r.text)
            checked += 1
    assert checked == len(list(operations(doc))) >= 20
    docs_page = httpx.get(server.url + "/docs", timeout=20)
    assert docs_page.status_code == 200 and "/openapi.json" in docs_page.text


@pytest.mark.parametrize("model", [schemas.Accepted, schemas.JobStatus, schemas.JobList, schemas.EventsOut,
                                   schemas.JobLog, schemas.QueueOut, schemas.FeedOut, schemas.FeedInfo,
                                   schemas.Problem])
def test_main_models_carry_valid_examples(model):
    doc = document()
    examples = model.model_json_schema()["examples"]
    assert examples
    for example in examples:
        model.model_validate(example)  # an example is a valid instance of its model
    if model is not schemas.Problem:  # problems are inlined per response; the rest are components
        assert doc["components"]["schemas"][model.__name__]["examples"] == examples
    else:
        responses = doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["responses"]
        assert responses["404"]["content"]["application/problem+json"]["schema"]["examples"] == examples
