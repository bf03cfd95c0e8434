"""Typed errors with stable codes.

Every failure a user or operator can see carries a stable `code` (machine readable,
used in ParseJob status, API errors and the runner's termination message) and a
one-line human message. `exit_code` tells a Kubernetes pod failure policy whether a
retry can help: 2 = bad input (never retry), 1 = transient (retry), 3 = misconfigured.
"""

from __future__ import annotations

from schedgen.parsejob import EXIT_BAD_INPUT, EXIT_MISCONFIGURED, EXIT_TRANSIENT


class SchedgenError(Exception):
    code = "InternalError"
    exit_code = EXIT_TRANSIENT

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InternalError(SchedgenError):
    """A bug or an unforeseen failure; retried like a transient error."""

    code = "InternalError"


class BadInput(SchedgenError):
    """The uploaded file can never be parsed; retrying is pointless."""

    code = "BadInput"
    exit_code = EXIT_BAD_INPUT


class NotAPDF(BadInput):
    code = "NotAPDF"


class EncryptedPDF(BadInput):
    code = "EncryptedPDF"


class CorruptPDF(BadInput):
    code = "CorruptPDF"


class UnknownScheduleType(BadInput):
    code = "UnknownScheduleType"


class MalformedSchedule(BadInput):
    """A recognised schedule table holds a value the parser rules cannot read."""

    code = "MalformedSchedule"


class MemoryLimitExceeded(BadInput):
    code = "MemoryLimitExceeded"


class NoTables(BadInput):
    code = "NoTables"


class TooManyPages(BadInput):
    code = "TooManyPages"


class TooLarge(BadInput):
    code = "TooLarge"


class ParseTimeout(BadInput):
    code = "ParseTimeout"


class SourceNotFound(BadInput):
    code = "SourceNotFound"


class Transient(SchedgenError):
    """Trouble outside the file (network, storage, database): a retry may succeed."""

    code = "Transient"
    exit_code = EXIT_TRANSIENT


class Interrupted(Transient):
    """SIGTERM before the run finished (pod deleted, evicted, node drained): run it again."""

    code = "Interrupted"


class StorageUnavailable(Transient):
    code = "StorageUnavailable"


class DatabaseUnavailable(Transient):
    code = "DatabaseUnavailable"


class ConfigurationError(SchedgenError):
    code = "ConfigurationError"
    exit_code = EXIT_MISCONFIGURED

