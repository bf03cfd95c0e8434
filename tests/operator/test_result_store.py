"""operator.result_store and presign: presigned URLs for the runner, its result object
read (bounded) and listed, against the real S3 server; the S3 backoff."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator import metrics
from schedgen.operator.backoff import BackingOff, Unavailable
from schedgen.operator.config import OperatorConfig
from schedgen.operator.result_document import InvalidResult
from schedgen.operator.result_store import ResultStore
from schedgen.parsejob import ParseJob, result_key
from schedgen.runner.run import result_document

LECTURE = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
                end_time="09:20", venues=("Centenary 6",), campus="HATFIELD", language="E")


def parsejob(s3, key: str = "uploads/x.pdf", deadline: int = 60) -> ParseJob:
    uid = str(uuid.uuid4())
    return ParseJob.of({"metadata": {"namespace": "team-a", "name": f"pj-{uid[:8]}", "uid": uid},
                        "spec": {"source": {"s3": {"bucket": s3.bucket, "key": key}}, "deadlineSeconds": deadline}})


def store(s3, **kw) -> ResultStore:
    """The operator's store, signing as the operator's own S3 user (tests/conftest.py)."""
    cfg = OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url, **kw)
    return ResultStore(cfg, s3.client_for("operator"))


def valid() -> bytes:
    doc = result_document(ParseResult(kind=ScheduleKind.LECTURE, events=[LECTURE] * 3, pages=1, seconds=0.5))
    return json.dumps(doc).encode()


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if data is not None else {}  # as the runner sends it
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_urls_are_for_one_key_each_and_expire_after_the_deadline(s3):
    key = s3.put(b"%PDF-1.4 the upload")
    pj = parsejob(s3, key, deadline=60)
    urls = store(s3).urls(pj)
    assert http("GET", urls["source"]) == (200, b"%PDF-1.4 the upload")
    assert http("PUT", urls["source"], b"x")[0] == 403  # a GET URL cannot write
    assert http("GET", urls["source"].replace(key, key + "x"))[0] == 403
    assert http("PUT", urls["result"], b"{}")[0] == 200
    assert http("PUT", urls["result"].replace(".json", "-other.json"), b"{}")[0] == 403
    assert http("GET", urls["result"])[0] in (400, 403)  # a PUT URL cannot read
    got = s3.client.get_object(Bucket=s3.bucket, Key=result_key("team-a", pj.uid))
    assert got["Body"].read() == b"{}"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(urls["result"]).query)
    assert query["X-Amz-Expires"] == ["180"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]


def test_fetch_reads_and_checks_the_object(s3):
    results = store(s3)
    pj = parsejob(s3)
    assert asyncio.run(results.fetch(pj)) is None  # no result object yet
    s3.client.put_object(Bucket=s3.bucket, Key=pj.result_key, Body=valid())
    assert asyncio.run(results.fetch(pj)).events == [LECTURE] * 3
    s3.client.put_object(Bucket=s3.bucket, Key=pj.result_key, Body=b"[" * 100_000)
    with pytest.raises(InvalidResult, match="nests deeper"):
        asyncio.run(results.fetch(pj))


def test_an_oversized_object_is_not_read(s3):
    results = store(s3, result_max_bytes=1000)
    pj = parsejob(s3)
    s3.client.put_object(Bucket=s3.bucket, Key=pj.result_key, Body=b" " * 5000)
    with pytest.raises(InvalidResult, match="5000 bytes; the limit is 1000"):
        asyncio.run(results.fetch(pj))


def test_discard_deletes_the_result_object_and_tolerates_its_absence(s3):
    results = store(s3)
    pj = parsejob(s3)
    s3.client.put_object(Bucket=s3.bucket, Key=pj.result_key, Body=valid())
    asyncio.run(results.discard(pj))
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=pj.result_key)
    asyncio.run(results.discard(pj))  # already gone: nothing to do, no error


def test_present_lists_the_namespaces_result_objects(s3):
    """Batch members are decided as their results appear: one listing per namespace, at
    most once a second; a discarded one leaves the listing at once."""
    clock = Clock()
    results = ResultStore(OperatorConfig(default_bucket=s3.bucket), s3.client_for("operator"), clock=clock)
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    uids = [str(uuid.uuid4()) for _ in range(3)]
    for uid in uids[:2]:
        s3.client.put_object(Bucket=s3.bucket, Key=result_key(ns, uid), Body=b"{}")
    s3.client.put_object(Bucket=s3.bucket, Key=result_key(ns + "-other", uids[2]), Body=b"{}")
    assert asyncio.run(results.present(ns)) == set(uids[:2])
    s3.client.put_object(Bucket=s3.bucket, Key=result_key(ns, uids[2]), Body=b"{}")
    assert asyncio.run(results.present(ns)) == set(uids[:2])  # listed a moment ago: not again
    clock.now += 1
    assert asyncio.run(results.present(ns)) == set(uids)
    gone = ParseJob.of({"metadata": {"namespace": ns, "name": "x", "uid": uids[0]}, "spec": {}})
    asyncio.run(results.discard(gone))
    assert asyncio.run(results.present(ns)) == set(uids[1:])
    assert asyncio.run(results.present(f"ns-{uuid.uuid4().hex[:6]}")) == set()


def test_an_s3_outage_is_tried_once_per_window_and_the_window_doubles_up_to_30s(s3):
    """While S3 is away every ParseJob's read would try it each tick; the store tries once
    per window (1, 2, 4 ... 30 s) and refuses the rest without a request."""
    import boto3
    from botocore.config import Config

    clock = Clock()
    dead = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(connect_timeout=1, retries={"total_max_attempts": 1}))
    sent: list[str] = []
    dead.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    results = ResultStore(OperatorConfig(default_bucket=s3.bucket), dead, clock=clock)
    pj = parsejob(s3)
    windows = []
    for _ in range(7):
        with pytest.raises(Unavailable) as tried:
            asyncio.run(results.fetch(pj))
        assert not isinstance(tried.value, BackingOff) and "S3 unreachable" in str(tried.value)
        windows.append(results.backoff.until - clock.now)
        clock.now += 0.5
        with pytest.raises(BackingOff, match=r"S3 unavailable \(S3 unreachable .*\); next try in"):
            asyncio.run(results.fetch(pj))
        clock.now = results.backoff.until
    assert windows == [1, 2, 4, 8, 16, 30, 30]
    assert len(sent) == 7  # one request per window, none while backing off
    before = metrics.RESULTS_UNAVAILABLE._value.get()
    assert asyncio.run(results.present("team-a")) == set()  # the listing shares the window: one more try
    assert metrics.RESULTS_UNAVAILABLE._value.get() == before + 1
    # S3 back: the next try after the window reads, and a success closes the window
    clock.now = results.backoff.until
    results._client = s3.client_for("operator")
    s3.client.put_object(Bucket=s3.bucket, Key=pj.result_key, Body=valid())
    assert asyncio.run(results.fetch(pj)).events == [LECTURE] * 3
    assert results.backoff.delay == 0
