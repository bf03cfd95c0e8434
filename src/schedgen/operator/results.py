"""The runner's result object: presigned URLs out, untrusted JSON back in.

The runner holds no secrets. At admission the operator presigns (SigV4, with its own
credentials) two URLs, each for one key and short-lived: a GET for the ParseJob's PDF
and a PUT for its result object `results/<namespace>/<uid>.json`. When the Job has
completed (or vanished) the operator reads that object as untrusted input: a size
cap, a schema check of every event field, an event-count cap; then writes the events
and the parse_jobs row in one idempotent transaction (db.write_events). The object,
not the Job, carries the outcome: it survives the Job's deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any, Mapping

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from schedgen import db
from schedgen.models import Event, ParseResult, ScheduleKind, camel_case
from schedgen.parsejob import SCHEDULE_KINDS, SUCCEEDED, RunnerSummary

from . import metrics
from .config import OperatorConfig
from .job_template import bucket_of, key_of, tenant_of
from .batches import Requeue, failure_outcome, not_reached
from .outcome import Outcome, invalid_result, job_lost

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 1000
DB_DEADLINE_SECONDS = 20.0  # one events write (db.deadline): a silent database must not hold the tick
MAX_VENUES = 50
URL_GRACE_SECONDS = 120
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
_EVENT_FIELDS = {camel_case(f.name): f.name for f in fields(Event)}
_REQUIRED = {"module", "activity"}


class InvalidResult(Exception):
    """The result object is not what a runner writes (too big, bad JSON, bad fields)."""


class ResultUnavailable(Exception):
    """S3 or Postgres cannot be reached right now: try again on a later tick."""


class BackingOff(ResultUnavailable):
    """Not tried: S3 or Postgres failed a moment ago (Backoff)."""


def report_unavailable(exc: ResultUnavailable, context: str = "") -> None:
    """A failed try is counted and warned about; a try refused by a Backoff only logged."""
    if isinstance(exc, BackingOff):
        log.debug("%s%s", context, exc)
        return
    metrics.RESULTS_UNAVAILABLE.inc()
    log.warning("%s%s", context, exc)


class Backoff:
    """One per dependency (S3, Postgres), shared by every ParseJob: while it is away, one
    try per window instead of one per ParseJob per tick. The window starts at 1 s and
    doubles up to 30 s while tries fail; a success closes it. Callers run in threads."""

    def __init__(self, what: str, clock=time.monotonic,
                 first: float = FIRST_RETRY_SECONDS, ceiling: float = MAX_RETRY_SECONDS):
        self.what, self.clock, self.first, self.ceiling = what, clock, first, ceiling
        self.delay, self.until, self.reason = 0.0, float("-inf"), ""
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def attempt(self):
        """One try: refused (BackingOff) inside the window; a ResultUnavailable from it
        opens or widens the window, anything else closes it (InvalidResult is the
        object's fault: the dependency answered)."""
        left = self.until - self.clock()
        if left > 0:
            raise BackingOff(f"{self.what} unavailable ({self.reason}); next try in {left:.0f}s")
        try:
            yield
        except ResultUnavailable as exc:
            self.failed(str(exc))
            raise
        except InvalidResult:
            self.succeeded()
            raise
        self.succeeded()

    def failed(self, reason: str) -> None:
        with self._lock:
            now = self.clock()
            if now < self.until:
                return  # a try that started before the window opened: counted already
            self.delay = min(self.ceiling, self.delay * 2 or self.first)
            self.until, self.reason = now + self.delay, reason[:200]

    def succeeded(self) -> None:
        with self._lock:
            self.delay, self.until = 0.0, float("-inf")


@dataclass(frozen=True)
class RunnerResult:
    result: ParseResult

    def status_result(self) -> dict[str, Any]:
        r = self.result
        return RunnerSummary(ok=True, kind=r.kind.value, events=len(r.events), pages=r.pages,
                             seconds=r.seconds).result()


def result_key(namespace: str, uid: str) -> str:
    return f"results/{namespace}/{uid}.json"


def make_client(cfg: OperatorConfig) -> Any:
    """The operator's S3 client (credentials from its environment). The endpoint is the
    one runner pods reach: presigned URLs are signed for that host."""
    return boto3.session.Session().client(
        "s3", endpoint_url=cfg.s3_endpoint_url or None, region_name=cfg.aws_region,
        config=Config(signature_version="s3v4", connect_timeout=3, read_timeout=10,
                      retries={"max_attempts": 2, "mode": "standard"}))


@dataclass(frozen=True)
class RunnerFailure:
    """A failure document: the batch runner's word that one member failed (batches.py)."""

    doc: dict[str, Any]


def read_document(data: bytes, cfg: OperatorConfig) -> dict[str, Any]:
    if len(data) > cfg.result_max_bytes:
        raise InvalidResult(f"the result object is {len(data)} bytes; the limit is {cfg.result_max_bytes}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidResult(f"the result object is not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise InvalidResult("the result object is not a JSON object")
    return doc


def parse_document(data: bytes | dict, cfg: OperatorConfig) -> ParseResult:
    """Validate a result object; raises InvalidResult saying what is wrong."""
    doc = data if isinstance(data, dict) else read_document(data, cfg)
    kind = doc.get("kind")
    if kind not in SCHEDULE_KINDS:
        raise InvalidResult(f"kind must be one of {', '.join(SCHEDULE_KINDS)}")
    pages, seconds, events = doc.get("pages"), doc.get("seconds"), doc.get("events")
    if not isinstance(pages, int) or isinstance(pages, bool) or not 0 <= pages <= 100000:
        raise InvalidResult("pages must be a whole number")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 86400:
        raise InvalidResult("seconds must be a number of seconds")
    if not isinstance(events, list):
        raise InvalidResult("events must be a list")
    if len(events) > cfg.result_max_events:
        raise InvalidResult(f"{len(events)} events; the limit is {cfg.result_max_events}")
    parsed = [_event(i, e) for i, e in enumerate(events)]
    return ParseResult(kind=ScheduleKind(kind), events=parsed, pages=pages, seconds=float(seconds))


def _event(i: int, data: Any) -> Event:
    if not isinstance(data, dict):
        raise InvalidResult(f"event {i} is not an object")
    unknown = set(data) - set(_EVENT_FIELDS)
    if unknown:
        raise InvalidResult(f"event {i} has unknown fields: {', '.join(sorted(unknown))[:200]}")
    for key, value in data.items():
        if key == "venues":
            if not isinstance(value, list) or len(value) > MAX_VENUES or not all(
                    isinstance(v, str) and len(v) <= MAX_FIELD_CHARS for v in value):
                raise InvalidResult(f"event {i}: venues must be a list of at most {MAX_VENUES} short strings")
        elif value is None and key not in _REQUIRED:
            continue
        elif not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
            raise InvalidResult(f"event {i}: {key} must be a string of at most {MAX_FIELD_CHARS} characters")
    missing = _REQUIRED - set(data)
    if missing:
        raise InvalidResult(f"event {i} lacks {', '.join(sorted(missing))}")
    event = Event.from_json(data)
    try:  # the columns' own types: a date and HH:MM times
        db._event_row(uuid.UUID(int=0), i, event)
    except ValueError as exc:
        raise InvalidResult(f"event {i}: {str(exc)[:200]}") from None
    return event


class ResultStore:
    """Presigns the runner's URLs; reads, checks and records its result object."""

    def __init__(self, cfg: OperatorConfig, client: Any = None, clock=time.monotonic):
        self.cfg = cfg
        self._client = client
        self.s3 = Backoff("S3", clock)
        self.postgres = Backoff("Postgres", clock)
        self._sessions = threading.local()  # results are read and recorded in worker threads

    def _session(self) -> psycopg.Connection:
        """This worker thread's Postgres session, kept from one result to the next: a
        connection per result cost Postgres a backend start each (bench/spike.py: 9.6
        CPU-s of Postgres per 1000 ParseJobs, 2.1 with kept sessions). A broken one is
        replaced."""
        conn = getattr(self._sessions, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._sessions.conn = db.connect(self.cfg.database_url)
        return conn

    def _end_session(self) -> None:
        conn, self._sessions.conn = getattr(self._sessions, "conn", None), None
        if conn is not None:
            conn.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.cfg)
        return self._client

    @property
    def bucket(self) -> str:
        return self.cfg.results_bucket or self.cfg.default_bucket

    def urls(self, body: Mapping[str, Any]) -> dict[str, str]:
        """The runner's two URLs, valid a little past the ParseJob's deadline."""
        meta, spec = body["metadata"], body.get("spec") or {}
        expires = int(spec.get("deadlineSeconds") or 300) + URL_GRACE_SECONDS
        source = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket_of(body, self.cfg), "Key": key_of(body)}, ExpiresIn=expires)
        result = self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": result_key(meta["namespace"], meta["uid"]),
                                  "ContentType": "application/json"}, ExpiresIn=expires)
        return {"source": source, "result": result}

    def _read(self, namespace: str, uid: str) -> bytes | None:
        key = result_key(namespace, uid)
        with self.s3.attempt():
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise ResultUnavailable(f"S3 error reading {key}: {code}") from None
            except BotoCoreError as exc:
                raise ResultUnavailable(f"S3 unreachable reading {key}: {exc}") from None
            body = obj["Body"]
            try:
                if int(obj.get("ContentLength") or 0) > self.cfg.result_max_bytes:
                    raise InvalidResult(f"the result object is {obj['ContentLength']} bytes; "
                                        f"the limit is {self.cfg.result_max_bytes}")
                return body.read(self.cfg.result_max_bytes + 1)
            except BotoCoreError as exc:
                raise ResultUnavailable(f"S3 read of {key} interrupted: {exc}") from None
            finally:
                body.close()

    def present(self, namespace: str) -> set[str]:
        """The uids with a result object in `namespace` (one listing, for batch members:
        their results arrive one by one while their Job still runs)."""
        prefix = result_key(namespace, "x").removesuffix("x.json")  # results/<namespace>/
        found: set[str] = set()
        with self.s3.attempt():
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                    found.update(o["Key"][len(prefix):].removesuffix(".json") for o in page.get("Contents") or [])
            except (ClientError, BotoCoreError) as exc:
                raise ResultUnavailable(f"S3 listing of {prefix} failed: {exc}") from None
        return found

    def _collect(self, body: Mapping[str, Any]) -> RunnerResult | RunnerFailure | None:
        meta = body["metadata"]
        data = self._read(meta["namespace"], meta["uid"])
        if data is None:
            return None
        doc = read_document(data, self.cfg)
        if doc.get("ok") is False:
            return RunnerFailure(doc)
        result = parse_document(doc, self.cfg)
        if self.cfg.database_url:
            job = db.JobRef(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                            tenant=tenant_of(body), source_bucket=bucket_of(body, self.cfg),
                            source_key=key_of(body),
                            schedule_type=(body.get("spec") or {}).get("scheduleType") or "auto")
            with self.postgres.attempt():
                try:
                    conn = self._session()
                    with db.deadline(conn, DB_DEADLINE_SECONDS):
                        db.write_events(conn, job, result)
                except (db.DatabaseUnavailable, db.ConfigurationError) as exc:
                    self._end_session()
                    raise ResultUnavailable(str(exc)) from None
        return RunnerResult(result)

    async def collect(self, body: Mapping[str, Any]) -> RunnerResult | RunnerFailure | None:
        """The checked result recorded in Postgres; None when there is no result object.
        Raises InvalidResult (a final failure) or ResultUnavailable (retry later)."""
        return await asyncio.to_thread(self._collect, body)

    async def discard(self, body: Mapping[str, Any]) -> None:
        """Delete a deleted ParseJob's result object (personal data, not needed once the
        object is gone). Best effort: one that stays behind is logged (a bucket lifecycle
        rule on results/ is the backstop, docs/deploy.md)."""
        meta = body["metadata"]
        key = result_key(meta["namespace"], meta["uid"])
        try:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete the result object %s: %s", key, exc)

    async def outcome(self, body: Mapping[str, Any], completed: Outcome | None,
                      lost: str = "the Job disappeared before it finished",
                      batch_job: str | None = None) -> Outcome | Requeue | None:
        """The outcome the result object tells, its events already in Postgres: it
        outlives the Job, so a good parse is never lost with it. Without one: a completed
        Job is Failed (InvalidResult), a vanished one (`completed` None) JobLost (`lost`),
        and a batch member (`batch_job`) goes back to the queue. None while S3 or
        Postgres are away: the next tick tries again."""
        status = body.get("status") or {}
        tries = completed.attempts if completed else int(status.get("attempts") or 0)
        try:
            found = await self.collect(body)
        except InvalidResult as exc:
            return invalid_result(str(exc), tries)
        except ResultUnavailable as exc:
            meta = body["metadata"]
            report_unavailable(exc, f"result of {meta['namespace']}/{meta['name']} not readable yet: ")
            return None
        if isinstance(found, RunnerFailure):
            return failure_outcome(found.doc, tries, int((body.get("spec") or {}).get("maxRetries", 3)))
        if found is None:
            if batch_job:
                return not_reached(batch_job)
            return job_lost(lost, tries) if completed is None else invalid_result(
                "the Job completed but wrote no result object", tries)
        return Outcome(SUCCEEDED, "Completed", "parsed", result=found.status_result(), attempts=max(tries, 1))
