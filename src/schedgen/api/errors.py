"""HTTP errors: RFC 9457 problem details (`application/problem+json`) on the API, the
NestJS shape `{statusCode, message, error}` on the compatibility routes (routers/compat.py)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Mapping

from fastapi.responses import JSONResponse

from schedgen.errors import DatabaseUnavailable

from . import metrics
from .backends import BackendUnavailable, Refused
from .schemas import PROBLEM_BASE, PROBLEM_TYPE, is_compat_path

# What a handler may raise when Postgres, S3 or Kubernetes cannot be reached.
BACKEND_ERRORS = (DatabaseUnavailable, BackendUnavailable)
_BACKEND_CODES = {"postgres": "DatabaseUnavailable", "s3": "StorageUnavailable",
                  "kubernetes": "KubernetesUnavailable"}
# What a caller is told: which backend, never its host, user, bucket or error text (logged).
_BACKEND_TEXT = {"postgres": "the database is unavailable", "s3": "the storage is unavailable",
                 "kubernetes": "the Kubernetes API is unavailable"}
log = logging.getLogger("schedgen.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @property
    def title(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"

    def body(self, instance: str | None = None) -> dict:
        """The problem document (RFC 9457); `code` is the stable machine-readable code."""
        return {"type": PROBLEM_BASE + self.code, "title": self.title, "status": self.status,
                "detail": self.message, "code": self.code, "instance": instance}

    def compat_body(self) -> dict:
        """The NestJS error shape the ScheduleGenerator web app expects."""
        return {"statusCode": self.status, "message": self.message, "error": self.title}


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, {"Retry-After": "5"})


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "JobNotFound", f"no job {job_id!r}")


def backend_unavailable(exc: DatabaseUnavailable | BackendUnavailable) -> ApiError:
    """The 503 for a backend failure, counted once per failure. Its text names the backend
    only: the exception's message (DSN user and host, bucket, API server address) is logged,
    never sent, since the Gate answers with this before any key is checked.

    Both the app's exception handlers and the Gate (whose rate limit and key lookup run
    before the app) answer with this."""
    backend = "postgres" if isinstance(exc, DatabaseUnavailable) else exc.backend
    metrics.BACKEND_ERRORS.labels(backend=backend).inc()
    log.warning("%s unavailable: %s", backend, exc.message)  # the details stay in the log
    return unavailable(_BACKEND_CODES.get(backend, "Unavailable"), _BACKEND_TEXT.get(backend, "a backend is unavailable"))


def parsejob_refused(exc: Refused, namespace: str, name: str) -> ApiError:
    """The answer when the Kubernetes API server refuses the ParseJob of an upload (an
    admission policy or webhook, RBAC, an invalid object): the cluster answered, so not
    `KubernetesUnavailable`, and retrying gets the same answer, so 500 without
    `Retry-After`: the deployment needs fixing. The server's message (policy names,
    namespaces, keys) is logged, never sent."""
    log.error("the Kubernetes API server refused ParseJob %s/%s (HTTP %d): %s", namespace, name, exc.status,
              exc.message)
    return ApiError(500, "ParseJobRefused",
                    "the cluster refused the job for this upload; the API's log says why")


def error_response(exc: ApiError, extra_headers: Mapping[str, str] | None = None,
                   path: str | None = None, compat: bool = False) -> JSONResponse:
    """The answer for `exc` on `path` (also an ASGI app: the Gate sends it as is);
    `compat`: the compatibility routes are on, so theirs answer in their own shape."""
    metrics.REJECTIONS.labels(reason=exc.code).inc()
    headers = {**(extra_headers or {}), **exc.headers}
    if compat and path and is_compat_path(path):
        return JSONResponse(exc.compat_body(), status_code=exc.status, headers=headers)
    return JSONResponse(exc.body(path), status_code=exc.status, headers=headers, media_type=PROBLEM_TYPE)
