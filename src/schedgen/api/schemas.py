"""The documented shapes of the API (they only feed the OpenAPI document: responses are
built as dicts, so a handler never pays for model validation)."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schedgen.parsejob import DEFAULT_PRIORITY, DEFAULT_SCHEDULE_TYPE, PRIORITIES, SCHEDULE_TYPES

PREFIX = "/api/v1"
FEEDS = "/feeds/"  # calendar feeds: a secret token in the path, no API key (routers/feeds.py)
JOB_ID = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a ParseJob name (DNS label)
PROBLEM_TYPE = "application/problem+json"
ICS = "text/calendar; charset=utf-8"  # calendar.ics and the feeds
PROBLEM_BASE = "https://schedgen.dev/problems/"
# The OpenAPI security schemes (app.py): the Gate reads either header (gate.api_key).
API_KEY_SCHEME, BEARER_SCHEME = "ApiKeyHeader", "BearerKey"
SECURITY_SCHEMES = {
    API_KEY_SCHEME: {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "An API key (`schedgen-api add-key`), e.g. `sgk_...`"},
    BEARER_SCHEME: {"type": "http", "scheme": "bearer",
                    "description": "The same API key as `Authorization: Bearer sgk_...`"},
}
KEY_REQUIRED = [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]  # either one

EXAMPLE_ID = "up-813964cd21-fe05e155bd15"
EXAMPLE_UID = "0bd8989b-f228-407e-a11d-9f61bf14eb72"


def examples(*values: dict) -> ConfigDict:
    """A model's examples in the OpenAPI document (shown by /docs)."""
    return ConfigDict(json_schema_extra={"examples": list(values)})
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

    model_config = examples({"type": PROBLEM_BASE + "JobNotFound", "title": "Not Found", "status": 404,
                             "detail": f"no job '{EXAMPLE_ID}'", "code": "JobNotFound",
                             "instance": f"/api/v1/jobs/{EXAMPLE_ID}"})


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

    model_config = examples({
        "id": EXAMPLE_ID, "uid": EXAMPLE_UID, "tenant": "cs-department", "phase": "Queued", "priority": "normal",
        "scheduleType": "auto", "sha256": "813964cd21" + "0" * 54, "size": 48213, "replayed": False,
        "statusUrl": f"/api/v1/jobs/{EXAMPLE_ID}", "eventsUrl": f"/api/v1/jobs/{EXAMPLE_ID}/events",
        "calendarUrl": f"/api/v1/jobs/{EXAMPLE_ID}/calendar.ics"})


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

    model_config = examples(
        {"id": EXAMPLE_ID, "uid": EXAMPLE_UID, "tenant": "cs-department", "priority": "normal",
         "scheduleType": "auto", "phase": "Succeeded", "queuePosition": None, "attempts": 1,
         "result": {"kind": "exam", "events": 5, "pages": 1, "parseSeconds": 0.031}, "error": None,
         "createdAt": "2026-11-29T13:01:03Z", "startedAt": "2026-11-29T13:01:03.880859Z",
         "completedAt": "2026-11-29T13:01:07.043771Z", "source": "kubernetes"},
        {"id": "up-b16cdef587-2061084ebcec", "uid": "5d0c1e3a-6f0b-4a55-9a43-1c2f1f7b9e10", "tenant": "cs-department",
         "priority": "normal", "scheduleType": "auto", "phase": "Failed", "queuePosition": None, "attempts": 1,
         "result": None, "error": {"reason": "InvalidPDF", "code": "NoTables",
                                   "message": "no ruled table was found in the PDF"},
         "createdAt": "2026-11-29T13:01:31Z", "startedAt": "2026-11-29T13:01:31.880859Z",
         "completedAt": "2026-11-29T13:01:35.043771Z", "source": "kubernetes"})


class Phase(str, enum.Enum):
    Queued = "Queued"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Cancelled = "Cancelled"


class JobList(BaseModel):
    items: list[JobStatus]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")

    model_config = examples({"items": [JobStatus.model_config["json_schema_extra"]["examples"][0]],
                             "nextCursor": None})


FEED_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
EXAMPLE_FEED_ID = "5b0e7c1e-2f4d-4c7a-9a51-0c3f6d2b8e41"


class Follow(BaseModel):
    scheduleType: Literal["lecture", "test", "exam"] = Field(
        description="The feed serves the tenant's newest Succeeded job whose result is this kind "
                    "(uploaded as `auto` or forced)")

    model_config = ConfigDict(extra="forbid")


class FeedTarget(BaseModel):
    """What a feed serves: exactly one of `jobId` (pinned) and `follow` (the newest job of a kind)."""
    # Not nullable and exactly one present, in the schema too (`oneOf` of the two `required`):
    # a client generated from the OpenAPI document cannot send `{}` or both.
    jobId: str = Field(None, min_length=1, max_length=63, pattern=JOB_ID,  # type: ignore[assignment]
                       description="One job of the caller's tenant")
    follow: Follow = None  # type: ignore[assignment]

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["jobId"]}, {"required": ["follow"]}],
        "examples": [{"follow": {"scheduleType": "exam"}}, {"jobId": EXAMPLE_ID}]})

    @model_validator(mode="after")
    def _exactly_one(self) -> "FeedTarget":
        if (self.jobId is None) == (self.follow is None):
            raise ValueError("give exactly one of jobId and follow")
        return self


class FeedOut(BaseModel):
    token: str = Field(description="The feed's secret (shown once; only its hash is stored)")
    url: str
    webcal: str
    expiresAt: str | None = Field(description="When the feed stops serving (null: never); revoking the API key "
                                              "that made it ends it too")
    id: str = Field(description="The feed's handle for PUT/DELETE /api/v1/feeds/{id} (not a secret)")
    jobId: str | None = Field(description="The job a pinned feed serves (null: the feed follows a kind)")
    follow: Follow | None = Field(description="What a following feed serves (null: pinned)")

    model_config = examples({
        "token": "Yx3b0qk2mE9wXn4rT7uVhS1aLcD8fG6jPoQz5iKeN0M",
        "url": "https://schedgen.example.org/feeds/Yx3b0qk2mE9wXn4rT7uVhS1aLcD8fG6jPoQz5iKeN0M.ics",
        "webcal": "webcal://schedgen.example.org/feeds/Yx3b0qk2mE9wXn4rT7uVhS1aLcD8fG6jPoQz5iKeN0M.ics",
        "expiresAt": "2027-06-30T00:00:00Z", "id": EXAMPLE_FEED_ID, "jobId": None,
        "follow": {"scheduleType": "exam"}})


class FeedInfo(BaseModel):
    """A feed without its token (only the token's hash is kept: its URL is shown once)."""
    id: str
    jobId: str | None = Field(description="The job a pinned feed serves (null: the feed follows a kind)")
    follow: Follow | None
    params: dict = Field(description="The stored calendar parameters (from, until, examHours, exclude)")
    createdAt: str
    expiresAt: str | None

    model_config = examples({"id": EXAMPLE_FEED_ID, "jobId": EXAMPLE_ID, "follow": None,
                             "params": {"from": None, "until": None, "examHours": 3.0, "exclude": []},
                             "createdAt": "2026-05-02T08:00:00Z", "expiresAt": "2027-05-02T08:00:00Z"})


class FeedList(BaseModel):
    items: list[FeedInfo]


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

    model_config = examples({"kind": "exam", "events": [{
        "module": "COS 284", "activity": "Exam Written", "group": None, "day": None, "date": "2025-11-12",
        "startTime": "07:30", "endTime": None, "venues": ["IT Building CBT Labs 1,2,3"], "campus": None,
        "offered": None, "language": None, "studyProgramme": None, "paper": "1", "status": "FINAL",
        "moduleCampus": "HATFIELD", "examCampus": "HATFIELD", "comments": None}]})


class RunSummary(BaseModel):
    """The runner's summary as the operator recorded it (`schedgen.parsejob.RunnerSummary`):
    `ok` with kind/events/pages/seconds, or not `ok` with reason/code/message."""
    ok: bool
    kind: str | None = None
    events: int | None = None
    pages: int | None = None
    seconds: float | None = None
    reason: str | None = Field(None, description="Why the job failed (status.error.reason), e.g. InvalidPDF")
    code: str | None = Field(None, description="The runner's stable error code, when it reported one")
    message: str | None = None


class KubeEvent(BaseModel):
    """A Kubernetes Event about the ParseJob (`kubectl describe parsejob`'s Events)."""
    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    count: int
    firstTime: str | None
    lastTime: str | None
    from_: str | None = Field(alias="from", description="The component that reported it")

    model_config = ConfigDict(populate_by_name=True)


class JobLog(BaseModel):
    id: str
    phase: str
    attempts: int
    source: str = Field(description="`kubernetes` while the ParseJob exists, `records` after retention (then "
                                    "there are no Events)")
    summary: RunSummary | None = Field(description="null while the job waits or runs")
    events: list[KubeEvent] = Field(description="The ParseJob's Kubernetes Events, oldest first (the API server "
                                                "keeps them about an hour)")

    model_config = examples({
        "id": "up-b16cdef587-2061084ebcec", "phase": "Failed", "attempts": 1, "source": "kubernetes",
        "summary": {"ok": False, "reason": "InvalidPDF", "code": "NoTables",
                    "message": "no ruled table was found in the PDF"},
        "events": [
            {"type": "Warning", "reason": "InvalidPDF",
             "message": "InvalidPDF (NoTables): no ruled table was found in the PDF", "count": 1,
             "firstTime": "2026-11-29T13:01:35Z", "lastTime": "2026-11-29T13:01:35Z", "from": "schedgen-operator"}]})


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

    model_config = examples({
        "total": {"waiting": 3, "running": 2, "succeeded": 40, "failed": 1, "cancelled": 0,
                  "oldestWaitingSeconds": 12.5},
        "tenants": {"cs-department": {"waiting": 3, "running": 2, "succeeded": 40, "failed": 1, "cancelled": 0,
                                      "oldestWaitingSeconds": 12.5}}})


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
