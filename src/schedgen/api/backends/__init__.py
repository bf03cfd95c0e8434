"""The API's backends: Postgres (`postgres`, async) and, as blocking clients called
from a thread pool, S3 (`s3`) and the Kubernetes API (`kube`).

The blocking clients use short timeouts and at most one retry so an outage turns into a
quick 503: every failure to reach them becomes `BackendUnavailable` (Postgres' becomes
`schedgen.errors.DatabaseUnavailable`).
"""

from __future__ import annotations


class BackendUnavailable(Exception):
    def __init__(self, backend: str, message: str):
        super().__init__(message)
        self.backend = backend
        self.message = message


class AlreadyExists(Exception):
    pass


class Refused(Exception):
    """The backend answered and said no to a write: the Kubernetes API server refused a
    ParseJob create (403 from an admission policy or webhook, 400/422 invalid). Not an
    outage: retrying the same write gets the same answer. `message` is the server's (for
    the log, never for the caller)."""

    def __init__(self, backend: str, status: int, message: str):
        super().__init__(message)
        self.backend = backend
        self.status = status
        self.message = message


class NotFound(Exception):
    pass


def one_line(exc: BaseException) -> str:
    """An exception as one short line (for BackendUnavailable messages)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__
