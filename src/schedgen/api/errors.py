"""HTTP errors with the API's JSON shape: {"error": {"code", "message"}}."""

from __future__ import annotations

from typing import Mapping

from fastapi.responses import JSONResponse

from schedgen.errors import DatabaseUnavailable

from . import metrics
from .backends import BackendUnavailable

# What a handler may raise when Postgres, S3 or Kubernetes cannot be reached.
BACKEND_ERRORS = (DatabaseUnavailable, BackendUnavailable)
_BACKEND_CODES = {"postgres": "DatabaseUnavailable", "s3": "StorageUnavailable",
                  "kubernetes": "KubernetesUnavailable"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def unavailable(code: str, message: str) -> ApiError:
    return ApiError(503, code, message, {"Retry-After": "5"})


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "JobNotFound", f"no job {job_id!r}")


def backend_unavailable(exc: DatabaseUnavailable | BackendUnavailable) -> ApiError:
    """The 503 for a backend failure, counted once per failure.

    Both the app's exception handlers and the Gate (whose rate limit and key lookup run
    before the app) answer with this."""
    backend = "postgres" if isinstance(exc, DatabaseUnavailable) else exc.backend
    metrics.BACKEND_ERRORS.labels(backend=backend).inc()
    return unavailable(_BACKEND_CODES.get(backend, "Unavailable"), exc.message)


def error_response(exc: ApiError, extra_headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON answer for `exc` (also an ASGI app: the Gate sends it as is)."""
    metrics.REJECTIONS.labels(reason=exc.code).inc()
    return JSONResponse(exc.body(), status_code=exc.status, headers={**(extra_headers or {}), **exc.headers})
