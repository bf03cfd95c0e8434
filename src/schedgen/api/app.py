"""The upload API (FastAPI): PDFs in, ParseJobs created, status and events out.

Routes are under /api/v1 (plus /healthz, /readyz, /metrics, /openapi.json). A pure ASGI
middleware (`Gate`) wraps every request: request timeout, authentication (optional API
keys), the shared rate limit (Postgres), JSON errors and metrics. See docs/api.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from schedgen.errors import DatabaseUnavailable

from . import metrics, store
from schedgen.parsejob import (
    ANN_CONTENT,
    ANN_FILENAME,
    ANN_IDEMPOTENCY,
    API_VERSION,
    CREATED_BY_API,
    KIND,
    LABEL_CREATED_BY,
    LABEL_TENANT,
    PRIORITIES,
    SCHEDULE_TYPES,
)

from .backends import (
    AlreadyExists,
    BackendUnavailable,
    NotFound,
    ParseJobs,
    Storage,
)
from .config import ApiConfig
from .errors import ApiError, not_found, unavailable
from .pool import AsyncPool
from .upload import read_upload

log = logging.getLogger("schedgen.api")

PREFIX = "/api/v1"
JOB_ID = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_JOB_ID = re.compile(JOB_ID)
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)
UNLIMITED_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


# --- documented shapes (responses are built as dicts; these only feed the OpenAPI) -----


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Accepted(BaseModel):
    id: str
    uid: str
    tenant: str
    phase: str
    priority: str
    scheduleType: str
    sha256: str
    size: int
    replayed: bool
    statusUrl: str
    eventsUrl: str
    calendarUrl: str


class JobResult(BaseModel):
    kind: str | None = None
    events: int | None = None
    pages: int | None = None
    parseSeconds: float | None = None


class JobError(BaseModel):
    reason: str | None = None
    code: str | None = None
    message: str | None = None


class JobStatus(BaseModel):
    id: str
    uid: str
    tenant: str
    priority: str
    scheduleType: str
    phase: str
    queuePosition: int | None
    attempts: int
    result: JobResult | None
    error: JobError | None
    createdAt: str | None
    startedAt: str | None
    completedAt: str | None
    source: str = Field(description="`kubernetes` while the ParseJob exists, `records` after retention")


class EventOut(BaseModel):
    module: str
    activity: str
    group: str | None
    day: str | None
    date: str | None
    startTime: str | None
    endTime: str | None
    venues: list[str]
    campus: str | None
    offered: str | None
    language: str | None
    studyProgramme: str | None
    paper: str | None
    status: str | None
    moduleCampus: str | None
    examCampus: str | None
    comments: str | None


class EventsOut(BaseModel):
    kind: str
    events: list[EventOut]


class QueueCounts(BaseModel):
    waiting: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    oldestWaitingSeconds: float | None


class QueueOut(BaseModel):
    total: QueueCounts
    tenants: dict[str, QueueCounts]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, str]


def _errors(*codes: int) -> dict:
    text = {400: "Invalid request", 401: "Missing or invalid API key", 404: "Unknown job",
            409: "The job has not succeeded (yet); for uploads: the idempotency key's job is gone", 413: "Upload too large", 415: "Not multipart or not a PDF",
            408: "The request body did not arrive in time",
            422: "Invalid parameters or idempotency key reused for another file", 429: "Rate limit exceeded",
            503: "A backend (Postgres, S3, Kubernetes) is unavailable"}
    return {c: {"model": ErrorBody, "description": text.get(c, "Error")} for c in codes}


COMMON = (401, 408, 429, 503)


# --- the application ---------------------------------------------------------------------


@dataclass
class Principal:
    tenant: str
    client_key: str  # rate-limit identity


class Services:
    """What a request handler needs; built once per process (create_app)."""

    def __init__(self, cfg: ApiConfig, pool: AsyncPool | None = None, storage: Storage | None = None,
                 jobs: ParseJobs | None = None):
        self.cfg = cfg
        self.pool = pool or AsyncPool(cfg.database_url, size=cfg.db_pool_size)
        self.storage = storage or Storage(cfg)
        self.jobs = jobs or ParseJobs(cfg)
        self.keys = store.KeyCache(cfg.key_cache_seconds)
        self.threads = anyio.CapacityLimiter(48)
        self._queue_cache: tuple[float, dict] | None = None
        self._last_purge = 0.0

    async def blocking(self, fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    async def close(self) -> None:
        await self.pool.close()
        self.jobs.close()


def create_app(cfg: ApiConfig | None = None, services: Services | None = None) -> FastAPI:
    cfg = cfg or ApiConfig.from_env()
    svc = services or Services(cfg)

    async def lifespan(app):
        if svc.cfg.watch_cache and hasattr(svc, "jobs"):
            svc.jobs.start_cache()
        yield
        close = getattr(svc, "close", None)
        if close is not None:
            await close()

    app = FastAPI(title="schedgen upload API", version="1.0.0", lifespan=lifespan,
                  description="Upload University of Pretoria schedule PDFs; follow the parse; fetch events "
                              "as JSON or iCalendar. Errors are JSON: {\"error\": {\"code\", \"message\"}}.")
    app.state.services = svc

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body",))
            parts.append(f"{where}: {e.get('msg')}")
        return error_response(ApiError(422, "InvalidParameters", "; ".join(parts) or "invalid request"))

    @app.exception_handler(DatabaseUnavailable)
    async def database_error(request: Request, exc: DatabaseUnavailable):
        metrics.BACKEND_ERRORS.labels(backend="postgres").inc()
        return error_response(unavailable("DatabaseUnavailable", exc.message))

    @app.exception_handler(BackendUnavailable)
    async def backend_error(request: Request, exc: BackendUnavailable):
        metrics.BACKEND_ERRORS.labels(backend=exc.backend).inc()
        code = {"s3": "StorageUnavailable", "kubernetes": "KubernetesUnavailable"}.get(exc.backend, "Unavailable")
        return error_response(unavailable(code, exc.message))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "InternalError", "internal error"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)), exc.headers)

    # --- probes ---------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["probes"])
    async def healthz():
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", response_model=Ready, tags=["probes"], responses={503: {"model": Ready}})
    async def readyz():
        async def check(name, coro):
            try:
                await asyncio.wait_for(coro, 5)
                return name, "ok"
            except (BackendUnavailable, DatabaseUnavailable) as exc:
                return name, getattr(exc, "message", str(exc))
            except asyncio.TimeoutError:
                return name, "timed out"
        results = dict(await asyncio.gather(
            check("postgres", store.ping(svc.pool)),
            check("s3", svc.blocking(svc.storage.ping)),
            check("kubernetes", svc.blocking(svc.jobs.ping))))
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "unavailable", "checks": results},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["probes"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # --- uploads --------------------------------------------------------------------

    upload_body = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The schedule PDF"},
            "priority": {"type": "string", "enum": list(PRIORITIES), "default": "normal"},
            "scheduleType": {"type": "string", "enum": list(SCHEDULE_TYPES), "default": "auto"},
        }}, "encoding": {"file": {"contentType": "application/pdf"}}}}},
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "Makes a retried upload return the same job (1-255 printable ASCII "
                                       "characters, else 400 InvalidIdempotencyKey); remembered 24 h",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255}}]}

    @app.post(f"{PREFIX}/uploads", status_code=202, response_model=Accepted, tags=["jobs"],
              openapi_extra=upload_body, responses=_errors(400, 409, 413, 415, 422, *COMMON),
              summary="Upload a schedule PDF; creates a ParseJob")
    async def upload(request: Request):
        return await _upload(svc, request, request.headers.get("idempotency-key"))

    # --- jobs -----------------------------------------------------------------------

    job_id_param = Path(..., min_length=1, max_length=63, pattern=JOB_ID, description="The job id (ParseJob name)")

    @app.get(f"{PREFIX}/jobs/{{job_id}}", response_model=JobStatus, tags=["jobs"],
             responses=_errors(404, 422, *COMMON))
    async def job_status(request: Request, job_id: str = job_id_param):
        job = await _find_job(svc, request, job_id)
        return JSONResponse(job.status)

    @app.get(f"{PREFIX}/jobs/{{job_id}}/events", response_model=EventsOut, tags=["jobs"],
             responses=_errors(404, 409, 422, *COMMON))
    async def job_events(request: Request, job_id: str = job_id_param):
        job = await _find_job(svc, request, job_id)
        kind, events = await _succeeded_events(svc, job)
        return JSONResponse({"kind": kind, "events": [e.to_json() for e in events]})

    @app.get(f"{PREFIX}/jobs/{{job_id}}/calendar.ics", tags=["jobs"], response_class=Response,
             responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                              "description": "An iCalendar file (RFC 5545)"},
                        **_errors(400, 404, 409, 422, *COMMON)})
    async def job_calendar(request: Request, job_id: str = job_id_param,
                           first_day: dt.date | None = Query(None, alias="from",
                                                             description="First day of lectures (ISO date)"),
                           last_day: dt.date | None = Query(None, alias="until",
                                                            description="Last day of lectures (ISO date)"),
                           exam_hours: float = Query(3.0, alias="examHours", ge=0.5, le=12,
                                                     description="Assumed length of exams without an end time")):
        from schedgen.ics import CalendarRangeRequired, to_ics
        from schedgen.models import ScheduleKind

        job = await _find_job(svc, request, job_id)
        kind, events = await _succeeded_events(svc, job)
        try:
            payload = to_ics(ScheduleKind(kind), events, first_day=first_day, last_day=last_day,
                             exam_hours=exam_hours)
        except CalendarRangeRequired as exc:
            raise ApiError(400, "CalendarRangeRequired", str(exc).replace("--from/--until", "from/until")) from None
        return Response(payload, media_type="text/calendar",
                        headers={"Content-Disposition": f'attachment; filename="{job.name}.ics"'})

    @app.get(f"{PREFIX}/queue", response_model=QueueOut, tags=["queue"], responses=_errors(*COMMON))
    async def queue():
        return JSONResponse(await _queue(svc))

    gate = Gate(app, svc)
    gate.openapi = app.openapi  # for tools that look for it
    app.state.gate = gate
    return app


def asgi(cfg: ApiConfig | None = None) -> Any:
    """The FastAPI app wrapped in the Gate middleware (what uvicorn serves)."""
    app = create_app(cfg)
    return app.state.gate


def error_response(exc: ApiError, extra_headers: dict | None = None) -> JSONResponse:
    metrics.REJECTIONS.labels(reason=exc.code).inc()
    headers = {**(extra_headers or {}), **exc.headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


# --- upload ------------------------------------------------------------------------------


def _job_name(content_sha: str, suffix: str) -> str:
    return f"up-{content_sha[:10]}-{suffix}"


async def _upload(svc: Services, request: Request, idempotency_key: str | None) -> JSONResponse:
    cfg = svc.cfg
    principal: Principal = request.state.principal
    tenant = principal.tenant
    upload = await read_upload(request.headers.get("content-type", ""), request.headers.get("content-length"),
                               request.stream(), max_bytes=cfg.max_upload_bytes,
                               spool_bytes=cfg.spool_memory_bytes)
    try:
        priority = upload.fields.get("priority") or "normal"
        schedule_type = upload.fields.get("scheduleType") or "auto"
        if priority not in PRIORITIES:
            raise ApiError(422, "InvalidPriority", "priority must be one of high, normal, low")
        if schedule_type not in SCHEDULE_TYPES:
            raise ApiError(422, "InvalidScheduleType", "scheduleType must be one of auto, lecture, test, exam")
        key_hash = None
        claimed = False
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise ApiError(400, "InvalidIdempotencyKey", "Idempotency-Key must be 1-255 printable ASCII characters")
            key_hash = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
            name = _job_name(upload.sha256, key_hash[:12])
            claim = await store.claim_idempotency(svc.pool, tenant, key_hash, upload.sha256, cfg.namespace, name)
            if claim.content_sha256 != upload.sha256:
                raise ApiError(422, "IdempotencyKeyReused",
                               "this Idempotency-Key was used for a different file")
            name = claim.job_name
            claimed = claim.new
            if claim.job_uid:  # the job was created: never create it again
                job = await _lookup(svc, name, tenant)
                if job is None:
                    raise ApiError(409, "IdempotentJobGone",
                                   f"this Idempotency-Key created job {name}, which no longer exists")
                metrics.UPLOADS.labels(outcome="replayed").inc()
                return _accepted(job.status, upload, replayed=True)
        else:
            name = _job_name(upload.sha256, secrets.token_hex(6))
        s3_key = f"uploads/sha256/{upload.sha256}.pdf"
        body = {
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {
                "name": name,
                "labels": {LABEL_TENANT: tenant, LABEL_CREATED_BY: CREATED_BY_API},
                "annotations": {ANN_CONTENT: upload.sha256,
                                **({ANN_IDEMPOTENCY: key_hash} if key_hash else {}),
                                **({ANN_FILENAME: upload.filename} if upload.filename else {})},
            },
            "spec": {"source": {"s3": {"bucket": cfg.s3_bucket, "key": s3_key}},
                     "scheduleType": schedule_type, "priority": priority, "tenant": tenant,
                     "deadlineSeconds": cfg.default_deadline_seconds, "maxRetries": cfg.default_max_retries},
        }
        replayed = False
        try:
            # Order matters: the PDF first, then the ParseJob (never a job without its file).
            # The object is content-addressed, so a failed create leaves only a harmless
            # duplicate-free object that the next upload of the same file reuses.
            await svc.blocking(svc.storage.put, s3_key, upload.file, upload.size, upload.sha256)
            try:
                created = await svc.blocking(svc.jobs.create, body)
            except AlreadyExists:
                created = await svc.blocking(svc.jobs.get, name, False)
                ann = created["metadata"].get("annotations") or {}
                if not key_hash or ann.get(ANN_IDEMPOTENCY) != key_hash:
                    raise ApiError(503, "NameCollision", "job name collision; retry the upload") from None
                replayed = True
        except BaseException:
            if claimed:
                await _quietly(store.release_idempotency(svc.pool, tenant, key_hash))
            raise
        uid = created["metadata"]["uid"]
        if key_hash:
            await _quietly(store.complete_idempotency(svc.pool, tenant, key_hash, uid))
        metrics.UPLOADS.labels(outcome="replayed" if replayed else "created").inc()
        metrics.UPLOAD_BYTES.inc(upload.size)
        return _accepted(_status_from_object(created), upload, replayed=replayed)
    finally:
        upload.close()


def _accepted(status: dict, upload, replayed: bool) -> JSONResponse:
    name = status["id"]
    base = f"{PREFIX}/jobs/{name}"
    body = {"id": name, "uid": status["uid"], "tenant": status["tenant"], "phase": status["phase"],
            "priority": status["priority"], "scheduleType": status["scheduleType"],
            "sha256": upload.sha256, "size": upload.size, "replayed": replayed,
            "statusUrl": base, "eventsUrl": f"{base}/events", "calendarUrl": f"{base}/calendar.ics"}
    headers = {"Location": base}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


async def _quietly(coro) -> None:
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        log.warning("best-effort database write failed: %s", exc)


# --- job lookups ---------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    uid: str
    tenant: str
    phase: str
    kind: str | None
    status: dict


def _status_from_object(obj: dict) -> dict:
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    result = st.get("result") or None
    error = st.get("error") or None
    return {
        "id": meta["name"], "uid": meta["uid"], "tenant": spec.get("tenant") or meta.get("namespace"),
        "priority": spec.get("priority") or "normal", "scheduleType": spec.get("scheduleType") or "auto",
        "phase": st.get("phase") or "Queued",
        "queuePosition": st.get("queuePosition") if (st.get("phase") or "Queued") == "Queued" else None,
        "attempts": int(st.get("attempts") or 0),
        "result": {k: result.get(k) for k in ("kind", "events", "pages", "parseSeconds")} if result else None,
        "error": {k: error.get(k) for k in ("reason", "code", "message")} if error else None,
        "createdAt": meta.get("creationTimestamp"), "startedAt": st.get("startedAt"),
        "completedAt": st.get("completedAt"), "source": "kubernetes",
    }


def _iso(value) -> str | None:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _status_from_record(name: str, r: dict) -> dict:
    result = None
    if r["kind"] or r["event_count"] is not None:
        result = {"kind": r["kind"], "events": r["event_count"], "pages": r["pages"], "parseSeconds": r["parse_seconds"]}
    error = None
    if r["error_reason"] or r["error_message"]:
        error = {"reason": r["error_reason"], "code": r["error_code"], "message": r["error_message"]}
    return {
        "id": name, "uid": str(r["uid"]), "tenant": r["tenant"], "priority": r["priority"],
        "scheduleType": r["schedule_type"], "phase": r["phase"], "queuePosition": None,
        "attempts": int(r["attempts"] or 0), "result": result, "error": error,
        "createdAt": _iso(r["created_at"]), "startedAt": _iso(r["started_at"]),
        "completedAt": _iso(r["completed_at"]), "source": "records",
    }


async def _lookup(svc: Services, name: str, tenant: str) -> Job | None:
    status = None
    try:
        obj = svc.jobs.cached(name) or await svc.blocking(svc.jobs.get, name, False)
        status = _status_from_object(obj)
    except NotFound:
        record = await store.job_record(svc.pool, svc.cfg.namespace, name)
        if record is not None:
            status = _status_from_record(name, record)
    if status is None or status["tenant"] != tenant:
        return None
    kind = (status.get("result") or {}).get("kind")
    return Job(name, status["uid"], status["tenant"], status["phase"], kind, status)


async def _find_job(svc: Services, request: Request, job_id: str) -> Job:
    if not _JOB_ID.fullmatch(job_id):
        raise not_found(job_id)
    job = await _lookup(svc, job_id, request.state.principal.tenant)
    if job is None:
        raise not_found(job_id)
    return job


async def _succeeded_events(svc: Services, job: Job):
    if job.phase != "Succeeded":
        if job.phase in ("Failed", "Cancelled"):
            raise ApiError(409, "JobNotSucceeded", f"job {job.name} is {job.phase}; it has no events")
        raise ApiError(409, "JobNotFinished", f"job {job.name} is {job.phase}; events come when it has Succeeded",
                       {"Retry-After": "2"})
    events = await store.read_events(svc.pool, job.uid)
    kind = job.kind
    if kind not in ("lecture", "test", "exam"):
        record = await store.job_record(svc.pool, svc.cfg.namespace, job.name)
        kind = (record or {}).get("kind")
    if kind not in ("lecture", "test", "exam"):
        raise ApiError(409, "JobNotFinished", "the job's result is not recorded yet", {"Retry-After": "2"})
    return kind, events


# --- queue ------------------------------------------------------------------------------------


def _counts() -> dict:
    return {"waiting": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "oldestWaitingSeconds": None}


async def _queue(svc: Services) -> dict:
    """Waiting and running from the live ParseJobs; finished totals from the records
    (retention deletes finished objects, never rows). Cached a moment per process."""
    cached = svc._queue_cache
    if cached and cached[0] > time.monotonic():
        return cached[1]
    items, finished = await asyncio.gather(svc.blocking(svc.jobs.list_all),
                                           store.finished_counts(svc.pool, svc.cfg.namespace))
    now = dt.datetime.now(dt.timezone.utc)
    tenants: dict[str, dict] = {}
    total = _counts()
    live_final: dict[str, dict[str, int]] = {}
    for obj in items:
        st = obj.get("status") or {}
        tenant = (obj.get("spec") or {}).get("tenant") or obj["metadata"]["namespace"]
        counts = tenants.setdefault(tenant, _counts())
        phase = st.get("phase") or "Queued"
        if phase == "Queued":
            counts["waiting"] += 1
            total["waiting"] += 1
            since = st.get("enqueuedAt") or obj["metadata"].get("creationTimestamp")
            if since:
                age = (now - dt.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
                age = round(max(0.0, age), 3)
                for c in (counts, total):
                    c["oldestWaitingSeconds"] = max(c["oldestWaitingSeconds"] or 0.0, age)
        elif phase == "Running":
            counts["running"] += 1
            total["running"] += 1
        elif phase in ("Succeeded", "Failed", "Cancelled"):
            live_final.setdefault(tenant, {}).setdefault(phase.lower(), 0)
            live_final[tenant][phase.lower()] += 1
    for tenant in set(finished) | set(live_final):
        counts = tenants.setdefault(tenant, _counts())
        for phase in ("succeeded", "failed", "cancelled"):
            # a finished object is normally recorded already; take the larger count so
            # one not yet recorded still shows
            n = max(finished.get(tenant, {}).get(phase, 0), live_final.get(tenant, {}).get(phase, 0))
            counts[phase] = n
            total[phase] += n
    out = {"total": total, "tenants": dict(sorted(tenants.items()))}
    svc._queue_cache = (time.monotonic() + svc.cfg.queue_cache_seconds, out)
    return out


# --- the gate: timeout, auth, rate limit, errors, metrics -------------------------------------


class Gate:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware and safe for streaming bodies)."""

    def __init__(self, app: FastAPI, svc: Services):
        self.app = app
        self.svc = svc
        self.cfg = svc.cfg

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope.get("path", "")
        method = scope.get("method", "GET")
        state = {"started": False, "status": 500, "body_done": False}
        headers_out: list[tuple[bytes, bytes]] = []

        async def guarded_receive():
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                if headers_out:
                    message = {**message, "headers": list(message.get("headers", [])) + headers_out}
            await send(message)

        try:
            async with asyncio.timeout(self.cfg.request_timeout_seconds):
                try:
                    if path.startswith(PREFIX + "/") or path == PREFIX:
                        principal = await self._authenticate(scope)
                        scope.setdefault("state", {})["principal"] = principal
                        route_class = "upload" if method == "POST" else "read"
                        limit = self.cfg.uploads_per_minute if route_class == "upload" else self.cfg.reads_per_minute
                        try:
                            decision = await store.hit_rate_limit(self.svc.pool, principal.client_key,
                                                                  route_class, limit)
                        except DatabaseUnavailable as exc:
                            raise unavailable("DatabaseUnavailable", exc.message) from None
                        headers_out.extend(_rate_headers(decision))
                        if not decision.allowed:
                            metrics.RATE_LIMITED.labels(route_class=route_class).inc()
                            raise ApiError(429, "RateLimited",
                                           f"more than {limit} {route_class} requests per minute; retry in "
                                           f"{decision.reset_seconds}s",
                                           {"Retry-After": str(decision.reset_seconds)})
                        await self._maybe_purge()
                    await self.app(scope, guarded_receive, guarded_send)
                except ApiError as exc:
                    if not state["started"]:
                        await _send_json(guarded_send, exc)
                except DatabaseUnavailable as exc:
                    metrics.BACKEND_ERRORS.labels(backend="postgres").inc()
                    if not state["started"]:
                        await _send_json(guarded_send, unavailable("DatabaseUnavailable", exc.message))
                except BackendUnavailable as exc:
                    metrics.BACKEND_ERRORS.labels(backend=exc.backend).inc()
                    code = {"s3": "StorageUnavailable", "kubernetes": "KubernetesUnavailable"}.get(exc.backend,
                                                                                                   "Unavailable")
                    if not state["started"]:
                        await _send_json(guarded_send, unavailable(code, exc.message))
        except TimeoutError:
            if not state["started"]:
                if state["body_done"] or method in ("GET", "HEAD"):
                    exc = unavailable("RequestTimeout", f"no answer within {self.cfg.request_timeout_seconds:g}s")
                else:
                    exc = ApiError(408, "RequestTimeout", "the request body did not arrive in time",
                                   {"Connection": "close"})
                await _send_json(guarded_send, exc)
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            if not state["started"]:
                await _send_json(guarded_send, ApiError(500, "InternalError", "internal error"))
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or (path if path in UNLIMITED_PATHS else "unmatched")
            status = str(state["status"])
            metrics.REQUESTS.labels(method=method, route=label, status=status).inc()
            metrics.LATENCY.labels(method=method, route=label, status=status).observe(time.perf_counter() - start)

    async def _authenticate(self, scope) -> Principal:
        headers = _headers(scope)
        key = headers.get("x-api-key")
        auth = headers.get("authorization")
        if key is None and auth and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        if key:
            if len(key) > 200:
                raise ApiError(401, "InvalidApiKey", "the API key is not valid")
            key_hash = store.hash_key(key)
            known, tenant = self.svc.keys.get(key_hash)
            if not known:
                try:
                    tenant = await store.key_tenant(self.svc.pool, key_hash)
                except DatabaseUnavailable as exc:
                    raise unavailable("DatabaseUnavailable", exc.message) from None
                self.svc.keys.put(key_hash, tenant)
            if tenant is None:
                raise ApiError(401, "InvalidApiKey", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
            return Principal(tenant=tenant, client_key="key:" + key_hash[:32])
        if self.cfg.require_key:
            raise ApiError(401, "ApiKeyRequired", "an API key is required (Authorization: Bearer ...)",
                           {"WWW-Authenticate": "Bearer"})
        return Principal(tenant=self.cfg.default_tenant, client_key="ip:" + self._client_address(scope, headers))

    def _client_address(self, scope, headers: dict[str, str]) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        trusted = self.cfg.trusted_proxies
        if not trusted or not _in(peer, trusted):
            return peer
        forwarded = headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # walk from the nearest hop: the first address that is not a trusted proxy is the client
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return peer  # garbage: do not trust any of it
            if not _in(hop, trusted):
                return hop
        return hops[0] if hops else peer

    async def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now - self.svc._last_purge < 60:
            return
        self.svc._last_purge = now
        try:
            await store.purge(self.svc.pool, self.cfg.idempotency_ttl_seconds)
        except DatabaseUnavailable:
            pass


def _in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _headers(scope) -> dict[str, str]:
    out = {}
    for k, v in scope.get("headers") or ():
        out[k.decode("latin-1").lower()] = v.decode("latin-1")
    return out


def _rate_headers(decision: store.RateDecision) -> list[tuple[bytes, bytes]]:
    return [(b"ratelimit-limit", str(decision.limit).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
            (b"ratelimit-reset", str(decision.reset_seconds).encode()),
            (b"ratelimit-policy", f"{decision.limit};w={store.WINDOW_SECONDS}".encode())]


async def _send_json(send, exc: ApiError) -> None:
    metrics.REJECTIONS.labels(reason=exc.code).inc()
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
