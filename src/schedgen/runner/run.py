"""One ParseJob's run: download the PDF, parse it, PUT the result object.

Shared by the single run (`main`) and each member of a batch (`batch`, in a forked
child), with what both need around it: the memory limit, and any failure as a typed
`SchedgenError` (whose exit code tells the pod failure policy whether to retry).
"""

from __future__ import annotations

import json
import logging
import resource
import tempfile
import time
from pathlib import Path

from schedgen.errors import InternalError, Interrupted, MemoryLimitExceeded, SchedgenError
from schedgen.models import ParseResult
from schedgen.runner import config as configmod
from schedgen.runner import parsing  # loaded before limit_memory runs: loading code maps memory
from schedgen.runner import storage

log = logging.getLogger("schedgen.runner")


class Terminated(BaseException):
    """SIGTERM (pod deleted or evicted) mid-run. A BaseException, like KeyboardInterrupt,
    so that code catching any Exception (the parser's typed-error wrappers, pdfminer's
    fallbacks) lets it through."""


def run_one(cfg: configmod.RunnerConfig) -> ParseResult:
    """Parse `cfg`'s PDF and PUT its result object; raises on any failure."""
    # ignore_cleanup_errors: under the memory limit the cleanup itself may fail (ENOMEM)
    # while a MemoryError unwinds; the pod's emptyDir goes with the pod anyway.
    with tempfile.TemporaryDirectory(prefix="schedgen-runner-", ignore_cleanup_errors=True) as tmp:
        pdf = Path(tmp) / "source.pdf"
        size = storage.download(cfg.source_url, pdf, cfg.max_bytes)
        _info("downloaded source", source=storage.redact(cfg.source_url), bytes=size)

        limits = parsing.Limits(max_pages=cfg.max_pages, max_seconds=cfg.parse_timeout_seconds)
        started = time.monotonic()
        result = parsing.parse_pdf(pdf, cfg.schedule_type, limits)  # bounds its own time
        if not result.seconds:
            result.seconds = time.monotonic() - started
        _info("parsed", **result.summary(), warnings=len(result.warnings))

    storage.upload(cfg.result_url, json.dumps(result_document(result)).encode("utf-8"))
    _info("result written", result=storage.redact(cfg.result_url), events=len(result.events))
    return result


def result_document(result: ParseResult) -> dict:
    """The result object: the summary fields and every event (camelCase, as models.Event
    serialises them). The operator reads it as untrusted input (operator/results.py)."""
    summary = result.summary()
    return {"kind": summary["kind"], "pages": summary["pages"], "seconds": summary["seconds"],
            "events": [e.to_json() for e in result.events]}


def limit_memory(max_mb: int) -> None:
    """Cap the address space (soft limit only, so the error path can lift it again)."""
    if max_mb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = max_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def lift_memory_limit() -> None:
    """Back to the hard limit, so reporting a MemoryError does not hit it again."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def as_error(exc: BaseException) -> SchedgenError:
    """The typed error to report for whatever ended the run."""
    if isinstance(exc, SchedgenError):
        return exc
    if isinstance(exc, Terminated):
        return Interrupted(str(exc))
    if isinstance(exc, MemoryError):
        return MemoryLimitExceeded(
            "the PDF needs more memory than the runner's limit (SCHEDGEN_MAX_MEMORY_MB)")
    return InternalError(f"unexpected {type(exc).__name__}: {exc}")


def _info(msg: str, **fields: object) -> None:
    log.info(msg, extra={"fields": fields})
