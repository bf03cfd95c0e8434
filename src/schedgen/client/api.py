"""The upload API over HTTP (httpx): one method per endpoint, typed errors.

Errors come in two shapes, both understood: today's `{"error": {"code", "message"}}` and
RFC 9457 problem details `{"type", "title", "status", "detail", "code", "instance"}`.
429 and 503 answers with a short `Retry-After` are retried a few times (uploads carry an
Idempotency-Key, so a retried upload never makes a second job).
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from . import EXIT_API, EXIT_CONFIG, EXIT_NOT_FOUND, ClientError
from .config import ClientConfig

PREFIX = "/api/v1"
FINISHED = ("Succeeded", "Failed", "Cancelled")
MAX_WAIT = 60  # the API's bound on ?wait=
RETRY_STATUSES = (429, 503)
MAX_RETRIES = 3
MAX_RETRY_AFTER = 65.0  # seconds; a longer Retry-After is reported, not slept through
ERROR_TEXT_LIMIT = 300


def version() -> str:
    try:
        return importlib.metadata.version("schedgen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class ApiError(ClientError):
    """The API answered with an error status."""

    def __init__(self, status: int, code: str, message: str):
        exit_code = EXIT_API
        if status == 401:
            exit_code = EXIT_CONFIG  # the key is missing or wrong: fix the configuration
        elif status == 404:
            exit_code = EXIT_NOT_FOUND
        super().__init__(code, message, exit_code)
        self.status = status


def error_of(response: httpx.Response) -> ApiError:
    """The typed error of a non-2xx answer, from either error shape (or plain text)."""
    code, message = f"HTTP{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code") or code)
        message = str(body["error"].get("message") or message)
    elif isinstance(body, dict) and ("title" in body or "detail" in body or "code" in body):
        code = str(body.get("code") or body.get("title") or code)
        message = str(body.get("detail") or body.get("title") or message)
    elif response.text:
        message = response.text.strip()
    return ApiError(response.status_code, code, message[:ERROR_TEXT_LIMIT])


def unsupported(what: str, err: ApiError) -> ClientError:
    """A route this server does not have (404 NotFound / 405 from the router)."""
    return ClientError("Unsupported", f"this API server has no {what} ({err.status} {err.code}); "
                       "it needs a newer schedgen-api", EXIT_API)


class Api:
    def __init__(self, cfg: ClientConfig, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        headers = {"User-Agent": f"schedgen-cli/{version()}", "Accept": "application/json"}
        if cfg.key:
            headers["Authorization"] = f"Bearer {cfg.key}"
        self.http = httpx.Client(base_url=cfg.url, headers=headers, timeout=timeout, transport=transport)
        self.timeout = timeout
        self.sleep = sleep
        self.on_retry: Callable[[float, ApiError], None] | None = None
        self._etags: dict[str, tuple[str, dict]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------

    def request(self, method: str, path: str, *, ok: Iterable[int] = (200,), retry: bool = True,
                **kwargs) -> httpx.Response:
        for attempt in range(MAX_RETRIES + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TimeoutException:
                raise ClientError("Timeout", f"{method} {path}: no answer from {self.http.base_url} in time") from None
            except httpx.TransportError as exc:
                raise ClientError("Unreachable", f"cannot reach the API at {self.http.base_url}: {exc}") from None
            if response.status_code in ok or response.status_code == 304:
                return response
            err = error_of(response)
            delay = _retry_after(response)
            if not (retry and response.status_code in RETRY_STATUSES and delay is not None
                    and delay <= MAX_RETRY_AFTER and attempt < MAX_RETRIES):
                raise err
            if self.on_retry:
                self.on_retry(delay, err)
            self.sleep(delay)
            _rewind(kwargs)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs) -> dict:
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ClientError("BadResponse", f"{method} {path}: the API did not answer JSON") from None
        if not isinstance(body, dict):
            raise ClientError("BadResponse", f"{method} {path}: unexpected answer")
        return body

    # --- endpoints -----------------------------------------------------------------

    def upload(self, pdf: Path, *, priority: str | None = None, schedule_type: str | None = None,
               idempotency_key: str | None = None) -> dict:
        data = {k: v for k, v in (("priority", priority), ("scheduleType", schedule_type)) if v}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with pdf.open("rb") as fh:
            return self.json("POST", f"{PREFIX}/uploads", ok=(202, 200, 201), headers=headers, data=data,
                             files={"file": (pdf.name, fh, "application/pdf")})

    def job(self, job_id: str, *, wait: float | None = None) -> dict:
        """The job's status; `wait` asks the server to answer once it finished (long poll,
        at most 60 s; a server without ?wait= answers at once). Uses ETag/If-None-Match."""
        path = f"{PREFIX}/jobs/{job_id}"
        params = {"wait": int(min(max(wait, 0), MAX_WAIT))} if wait else None
        cached = self._etags.get(job_id)
        headers = {"If-None-Match": cached[0]} if cached else {}
        timeout = self.timeout + (params["wait"] if params else 0)
        response = self.request("GET", path, params=params, headers=headers, timeout=timeout)
        if response.status_code == 304 and cached:
            return cached[1]
        body = response.json()
        if response.headers.get("etag"):
            self._etags[job_id] = (response.headers["etag"], body)
        return body

    def list_jobs(self, *, phase: str | None = None, limit: int | None = None, cursor: str | None = None) -> dict:
        params = {k: v for k, v in (("phase", phase), ("limit", limit), ("cursor", cursor)) if v is not None}
        try:
            return self.json("GET", f"{PREFIX}/jobs", params=params)
        except ApiError as err:
            if err.status in (404, 405) and err.code in ("NotFound", "MethodNotAllowed", "HTTP404", "HTTP405"):
                raise unsupported("job listing (GET /api/v1/jobs)", err) from None
            raise

    def delete_job(self, job_id: str) -> None:
        try:
            self.request("DELETE", f"{PREFIX}/jobs/{job_id}", ok=(200, 202, 204))
        except ApiError as err:
            if err.status == 405:
                raise unsupported("DELETE /api/v1/jobs/{id}", err) from None
            raise

    def events(self, job_id: str) -> dict:
        return self.json("GET", f"{PREFIX}/jobs/{job_id}/events")

    def logs(self, job_id: str) -> dict:
        """The runner's summary and the ParseJob's Kubernetes Events."""
        try:
            return self.json("GET", f"{PREFIX}/jobs/{job_id}/log")
        except ApiError as err:
            if err.status in (404, 405) and err.code in ("NotFound", "MethodNotAllowed"):
                raise unsupported("job logs (GET /api/v1/jobs/{id}/log)", err) from None
            raise

    def calendar(self, job_id: str, *, first_day: str | None = None, last_day: str | None = None,
                 exclude: Iterable[str] = (), exam_hours: float | None = None) -> str:
        params: list[tuple[str, str]] = [(k, v) for k, v in (("from", first_day), ("until", last_day)) if v]
        params += [("exclude", x) for x in exclude]
        if exam_hours is not None:
            params.append(("examHours", f"{exam_hours:g}"))
        return self.request("GET", f"{PREFIX}/jobs/{job_id}/calendar.ics", params=params,
                            headers={"Accept": "text/calendar"}).text

    def queue(self) -> dict:
        return self.json("GET", f"{PREFIX}/queue")

    def create_feed(self, job_id: str) -> dict:
        try:
            return self.json("POST", f"{PREFIX}/jobs/{job_id}/feed", ok=(200, 201))
        except ApiError as err:
            if err.status in (404, 405) and err.code in ("NotFound", "MethodNotAllowed"):
                raise unsupported("calendar feeds (POST /api/v1/jobs/{id}/feed)", err) from None
            raise


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _rewind(kwargs: dict) -> None:
    """Uploaded file objects are read again on a retry."""
    for _, (_, fh, *_rest) in (kwargs.get("files") or {}).items():
        fh.seek(0)
