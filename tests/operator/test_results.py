"""operator.results: presigned URLs for the runner, its result object read as untrusted
input and recorded in Postgres, against the real S3 server and Postgres."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from schedgen import db
from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator.config import OperatorConfig
from schedgen.operator.results import InvalidResult, ResultStore, parse_document, result_key
from schedgen.runner.run import result_document

LECTURE = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
                end_time="09:20", venues=("Centenary 6",), campus="HATFIELD", language="E")


def parsejob(s3, key: str = "uploads/x.pdf", deadline: int = 60) -> dict:
    uid = str(uuid.uuid4())
    return {"metadata": {"namespace": "team-a", "name": f"pj-{uid[:8]}", "uid": uid},
            "spec": {"source": {"s3": {"bucket": s3.bucket, "key": key}}, "deadlineSeconds": deadline}}


def store(s3, **kw) -> ResultStore:
    cfg = OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url, **kw)
    return ResultStore(cfg, s3.client)


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if data is not None else {}  # as the runner sends it
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_urls_are_for_one_key_each_and_expire_after_the_deadline(s3):
    key = s3.put(b"%PDF-1.4 the upload")
    body = parsejob(s3, key, deadline=60)
    urls = store(s3).urls(body)
    assert http("GET", urls["source"]) == (200, b"%PDF-1.4 the upload")
    assert http("PUT", urls["source"], b"x")[0] == 403  # a GET URL cannot write
    assert http("GET", urls["source"].replace(key, key + "x"))[0] == 403
    assert http("PUT", urls["result"], b"{}")[0] == 200
    assert http("PUT", urls["result"].replace(".json", "-other.json"), b"{}")[0] == 403
    assert http("GET", urls["result"])[0] in (400, 403)  # a PUT URL cannot read
    got = s3.client.get_object(Bucket=s3.bucket, Key=result_key("team-a", body["metadata"]["uid"]))
    assert got["Body"].read() == b"{}"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(urls["result"]).query)
    assert query["X-Amz-Expires"] == ["180"] and query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]


def valid() -> dict:
    return result_document(ParseResult(kind=ScheduleKind.LECTURE, events=[LECTURE] * 3, pages=1, seconds=0.5))


def test_the_runners_document_is_accepted():
    result = parse_document(json.dumps(valid()).encode(), OperatorConfig())
    assert result.kind == ScheduleKind.LECTURE and result.events == [LECTURE] * 3 and result.pages == 1


@pytest.mark.parametrize("change,fragment", [
    (lambda d: d.update(kind="timetable"), "kind must be one of"),
    (lambda d: d.update(pages="1"), "pages"),
    (lambda d: d.update(events={}), "events must be a list"),
    (lambda d: d["events"].append([]), "event 3 is not an object"),
    (lambda d: d["events"][0].update(admin=True), "unknown fields: admin"),
    (lambda d: d["events"][0].update(module=None), "module must be a string"),
    (lambda d: d["events"][1].pop("activity"), "event 1 lacks activity"),
    (lambda d: d["events"][0].update(campus="x" * 1001), "campus must be a string of at most 1000"),
    (lambda d: d["events"][0].update(venues=[1]), "venues"),
    (lambda d: d["events"][0].update(startTime="8 o'clock"), "not HH:MM"),
    (lambda d: d["events"][0].update(date="2025-02-30"), "event 0"),
    (lambda d: d.update(events=d["events"] * 2), "6 events; the limit is 5"),
])
def test_invalid_documents_are_refused(change, fragment):
    doc = valid()
    change(doc)
    with pytest.raises(InvalidResult, match=fragment):
        parse_document(json.dumps(doc).encode(), OperatorConfig(result_max_events=5))


def test_size_cap():
    data = json.dumps(valid()).encode()
    with pytest.raises(InvalidResult, match=f"{len(data)} bytes; the limit is 100"):
        parse_document(data, OperatorConfig(result_max_bytes=100))
    with pytest.raises(InvalidResult, match="not JSON"):
        parse_document(b"\xff\xfe", OperatorConfig())


def test_collect_writes_events_and_row_in_one_idempotent_step(s3, postgres, pg_conn):
    results = store(s3, database_url=postgres.dsn)
    body = parsejob(s3)
    uid = body["metadata"]["uid"]
    assert asyncio.run(results.collect(body)) is None  # no result object yet
    s3.client.put_object(Bucket=s3.bucket, Key=result_key("team-a", uid), Body=json.dumps(valid()).encode())
    for _ in range(2):  # a restart re-reads the object: same rows, no duplicates
        found = asyncio.run(results.collect(body))
        assert found.status_result() == {"kind": "lecture", "events": 3, "pages": 1, "parseSeconds": 0.5}
        assert db.read_events(pg_conn, uid) == [LECTURE] * 3
    row = pg_conn.execute("SELECT kind, event_count, namespace, source_key FROM parse_jobs WHERE uid = %s",
                          (uid,)).fetchone()
    assert row == ("lecture", 3, "team-a", "uploads/x.pdf")


def test_results_are_recorded_on_one_kept_session_and_a_broken_one_is_replaced(s3, postgres, pg_conn):
    """Not a connection (a Postgres backend start) per result. A session Postgres ended
    fails one try (counted, its window opens) and the next try opens a new one. The
    sessions are Postgres' own view of them (pg_stat_activity, by application_name)."""
    from schedgen.operator.results import ResultUnavailable

    app = f"results-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    results = ResultStore(OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url,
                                         database_url=f"{postgres.dsn}?application_name={app}"),
                          s3.client, clock=clock)

    def sessions() -> list[int]:
        return [pid for (pid,) in pg_conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()]

    def with_result():
        body = parsejob(s3)
        s3.client.put_object(Bucket=s3.bucket, Key=result_key("team-a", body["metadata"]["uid"]),
                             Body=json.dumps(valid()).encode())
        return body

    bodies = [with_result() for _ in range(4)]

    async def scenario():
        seen = []
        for b in bodies[:3]:
            assert await results.collect(b) is not None
            seen.append(sessions())
        assert len(seen[0]) == 1 and seen == [seen[0]] * 3  # one session, the same each time
        pg_conn.execute("SELECT pg_terminate_backend(%s)", (seen[0][0],))
        with pytest.raises(ResultUnavailable):
            await results.collect(bodies[3])
        clock.now += 1
        assert (await results.collect(bodies[3])).status_result()["events"] == 3
        assert len(sessions()) == 1 and sessions() != seen[0]  # a new one

    asyncio.run(scenario())
    for b in bodies:
        assert len(db.read_events(pg_conn, b["metadata"]["uid"])) == 3


def test_an_oversized_object_is_not_read(s3):
    results = store(s3, result_max_bytes=1000)
    body = parsejob(s3)
    s3.client.put_object(Bucket=s3.bucket, Key=result_key("team-a", body["metadata"]["uid"]), Body=b" " * 5000)
    with pytest.raises(InvalidResult, match="5000 bytes; the limit is 1000"):
        asyncio.run(results.collect(body))


def test_discard_deletes_the_result_object_and_tolerates_its_absence(s3):
    results = store(s3)
    body = parsejob(s3)
    key = result_key("team-a", body["metadata"]["uid"])
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(valid()).encode())
    asyncio.run(results.discard(body))
    assert "Contents" not in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key)
    asyncio.run(results.discard(body))  # already gone: nothing to do, no error


def test_present_lists_the_namespaces_result_objects(s3):
    """Batch members are decided as their results appear: one listing per namespace."""
    results = store(s3)
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    uids = [str(uuid.uuid4()) for _ in range(3)]
    for uid in uids[:2]:
        s3.client.put_object(Bucket=s3.bucket, Key=result_key(ns, uid), Body=b"{}")
    s3.client.put_object(Bucket=s3.bucket, Key=result_key(ns + "-other", uids[2]), Body=b"{}")
    assert results.present(ns) == set(uids[:2])
    assert results.present(f"ns-{uuid.uuid4().hex[:6]}") == set()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_s3_outage_is_tried_once_per_window_and_the_window_doubles_up_to_30s(s3):
    """While S3 is away every ParseJob's read would try it each tick; the store tries once
    per window (1, 2, 4 ... 30 s) and refuses the rest without a request."""
    import boto3
    from botocore.config import Config

    from schedgen.operator.results import BackingOff, ResultUnavailable

    clock = Clock()
    dead = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(connect_timeout=1, retries={"total_max_attempts": 1}))
    sent: list[str] = []
    dead.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    results = ResultStore(OperatorConfig(default_bucket=s3.bucket), dead, clock=clock)
    body = parsejob(s3)
    windows = []
    for _ in range(7):
        with pytest.raises(ResultUnavailable) as tried:
            asyncio.run(results.collect(body))
        assert not isinstance(tried.value, BackingOff) and "S3 unreachable" in str(tried.value)
        windows.append(results.s3.until - clock.now)
        clock.now += 0.5
        with pytest.raises(BackingOff, match=r"S3 unavailable \(S3 unreachable .*\); next try in"):
            results.present("team-a")  # the listing shares the window
        clock.now = results.s3.until
    assert windows == [1, 2, 4, 8, 16, 30, 30]
    assert len(sent) == 7  # one request per window, none while backing off
    # S3 back: the next try after the window reads, and a success closes the window
    results._client = s3.client
    s3.client.put_object(Bucket=s3.bucket, Key=result_key("team-a", body["metadata"]["uid"]),
                         Body=json.dumps(valid()).encode())
    assert asyncio.run(results.collect(body)).result.events == [LECTURE] * 3
    assert results.s3.delay == 0 and results.present("team-a")


def test_a_postgres_outage_backs_off_apart_from_s3(s3):
    """A result object read but its events not writable: Postgres' window opens, S3's
    stays closed (the listing still answers)."""
    from schedgen.operator.results import BackingOff, ResultUnavailable

    clock = Clock()
    results = ResultStore(OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url,
                                         database_url="postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"),
                          s3.client, clock=clock)
    body = parsejob(s3)
    s3.client.put_object(Bucket=s3.bucket, Key=result_key("team-a", body["metadata"]["uid"]),
                         Body=json.dumps(valid()).encode())
    with pytest.raises(ResultUnavailable) as tried:
        asyncio.run(results.collect(body))
    assert not isinstance(tried.value, BackingOff)
    with pytest.raises(BackingOff, match="Postgres unavailable"):
        asyncio.run(results.collect(body))
    assert results.postgres.delay == 1 and results.s3.delay == 0
    assert body["metadata"]["uid"] in results.present("team-a")


def test_a_refused_try_is_reported_as_pending_without_counting_an_error(s3):
    """outcome(): None (the next tick tries again) while backing off; the error counter
    counts real tries only."""
    from schedgen.operator import metrics

    results = ResultStore(OperatorConfig(default_bucket=s3.bucket), s3.client, clock=Clock())
    results.s3.failed("S3 unreachable (test)")
    before = metrics.RESULTS_UNAVAILABLE._value.get()
    assert asyncio.run(results.outcome(parsejob(s3), None)) is None
    assert metrics.RESULTS_UNAVAILABLE._value.get() == before
