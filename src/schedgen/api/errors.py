"""HTTP errors with the API's JSON shape: {"error": {"code", "message"}}."""

from __future__ import annotations

from typing import Mapping


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
