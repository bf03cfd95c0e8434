"""The documented shapes of the API (they only feed the OpenAPI document: responses are
built as dicts, so a handler never pays for model validation)."""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field

from schedgen.parsejob import DEFAULT_PRIORITY, DEFAULT_SCHEDULE_TYPE, PRIORITIES, SCHEDULE_TYPES

PREFIX = "/api/v1"
FEEDS = "/feeds/"  # calendar feeds: a secret token in the path, no API key (routers/feeds.py)
JOB_ID = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a ParseJob name (DNS label)
PROBLEM_TYPE = "application/problem+json"
ICS = "text/calendar; charset=utf-8"  # calendar.ics and the feeds
PROBLEM_BASE = "https://schedgen.dev/problems/"
COMPAT_PATHS = ("/api/upload", "/api/jobs")  # the ScheduleGenerator web app's routes (routers/compat.py)


def is_compat_api_path(path: str) -> bool:
    """A compatibility route that needs a key and counts in the rate limit."""
    return path in COMPAT_PATHS or path.startswith("/api/jobs/")


def is_compat_path(path: str) -> bool:
    """A compatibility route (errors in the NestJS shape)."""
    return is_compat_api_path(path) or path in ("/health", "/health/db")


class Problem(BaseModel):
    """RFC 9457 problem details; `code` is the stable error code (docs/api.md)."""
    type: str = Field(description=f"{PROBLEM_BASE}<code>")
    title: str
    status: int
    detail: str
    code: str
    instance: str | None


class CompatError(BaseModel):
    """The NestJS error shape of the compatibility routes."""
    statusCode: int
    message: str
    error: str


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


class Phase(str, enum.Enum):
    Queued = "Queued"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Cancelled = "Cancelled"


class JobList(BaseModel):
    items: list[JobStatus]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class FeedOut(BaseModel):
    token: str = Field(description="The feed's secret (shown once; only its hash is stored)")
    url: str
    webcal: str
    expiresAt: str | None = Field(description="When the feed stops serving (null: never); revoking the API key "
                                              "that made it ends it too")


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


class QueuePoint(BaseModel):
    at: str
    waiting: int
    running: int
    finished: int


class QueueHistoryOut(BaseModel):
    minutes: int
    stepSeconds: int
    points: list[QueuePoint]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    checks: dict[str, str]


_ERROR_TEXT = {
    400: "Invalid request", 401: "Missing or invalid API key", 403: "Not allowed for this API key",
    404: "Unknown job",
    408: "The request body did not arrive in time",
    409: "The job has not succeeded (yet); for uploads: the idempotency key's job is gone",
    413: "Upload too large", 415: "Not multipart or not a PDF",
    422: "Invalid parameters or idempotency key reused for another file", 429: "Rate limit exceeded",
    503: "A backend (Postgres, S3, Kubernetes) is unavailable",
}
NOT_MODIFIED = {304: {"description": "Not modified: the `If-None-Match` ETag is current"}}
COMMON = (401, 408, 429, 503)  # what any /api/v1 request can meet (the Gate's answers)


PROBLEM_SCHEMA = Problem.model_json_schema()
COMPAT_ERROR_SCHEMA = CompatError.model_json_schema()


def errors(*codes: int) -> dict:
    """The `responses` entries of these error statuses (problem+json)."""
    return {c: {"description": _ERROR_TEXT.get(c, "Error"), "content": {PROBLEM_TYPE: {"schema": PROBLEM_SCHEMA}}}
            for c in codes}


def compat_errors(*codes: int) -> dict:
    """The `responses` entries of the compatibility routes' errors (NestJS shape)."""
    return {c: {"description": _ERROR_TEXT.get(c, "Error"),
                "content": {"application/json": {"schema": COMPAT_ERROR_SCHEMA}}} for c in codes}


# The upload is read as a stream (not by FastAPI), so its form is described by hand.
UPLOAD_REQUEST = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "The schedule PDF"},
            "priority": {"type": "string", "enum": list(PRIORITIES), "default": DEFAULT_PRIORITY},
            "scheduleType": {"type": "string", "enum": list(SCHEDULE_TYPES), "default": DEFAULT_SCHEDULE_TYPE},
        }}, "encoding": {"file": {"contentType": "application/pdf"}}}}},
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                    "description": "Makes a retried upload return the same job (1-255 printable ASCII "
                                   "characters, else 400 InvalidIdempotencyKey); remembered 24 h",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
}
