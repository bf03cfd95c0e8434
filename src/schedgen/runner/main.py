"""`schedgen-runner`: the container entrypoint of one ParseJob's Kubernetes Job.

Steps: config -> download the PDF (presigned GET) -> parse (time, page and memory
bounded) -> PUT the summary and events as one JSON result object (presigned PUT) ->
JSON summary in the termination-message file. The runner holds no secrets: no S3 keys,
no DSN, no token; the operator reads the result object and writes Postgres. The exit code tells
the Job's pod failure policy what to do: 0 ok, 2 bad input (never retry), 1 transient
(retry), 3 misconfigured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

# A pod deleted as it starts gets its SIGTERM while the imports below run. The kernel
# drops a signal without a handler for a container's PID 1, so the deletion would go
# unnoticed (the run would go on until the grace period's SIGKILL): note it now,
# main() acts on it.
_EARLY_SIGTERM: list[int] = []
if os.getpid() == 1:
    signal.signal(signal.SIGTERM, lambda signum, _frame: _EARLY_SIGTERM.append(signum))

from schedgen.errors import (
    ConfigurationError,
    InternalError,
    Interrupted,
    MemoryLimitExceeded,
    SchedgenError,
)
from schedgen.models import ParseResult
from schedgen.parsejob import RunnerSummary
from schedgen.runner import config as configmod
from schedgen.runner import parsing  # before the memory limit: loading code maps memory
from schedgen.runner import storage

log = logging.getLogger("schedgen.runner")


# --- logging -----------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def __init__(self, job_uid: str | None):
        super().__init__()
        self.job_uid = job_uid

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "job": self.job_uid,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return super().format(record) + (f" [{fields}]" if fields else "")


def _setup_logging(log_format: str, job_uid: str | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "text":
        handler.setFormatter(_TextFormatter())
    else:
        handler.setFormatter(_JsonFormatter(job_uid))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "pdfminer", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _info(msg: str, **fields: object) -> None:
    log.info(msg, extra={"fields": fields})


# --- termination message -----------------------------------------------------------


def write_termination(path: str, summary: RunnerSummary) -> None:
    try:
        Path(path).write_text(summary.to_json(), encoding="utf-8")
    except OSError as exc:  # e.g. run outside Kubernetes: the log line still has it
        log.warning("cannot write termination message to %s: %s", path, exc)


# --- limits ------------------------------------------------------------------------


def limit_memory(max_mb: int) -> None:
    """Cap the address space (soft limit only, so the error path can lift it again)."""
    if max_mb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = max_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _lift_memory_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


# --- the run -----------------------------------------------------------------------


def result_document(result: ParseResult) -> dict:
    """The result object: the summary fields and every event (camelCase, as models.Event
    serialises them). The operator reads it as untrusted input (operator/results.py)."""
    summary = result.summary()
    return {"kind": summary["kind"], "pages": summary["pages"], "seconds": summary["seconds"],
            "events": [e.to_json() for e in result.events]}


def run(cfg: configmod.RunnerConfig) -> ParseResult:
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


class _Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, like KeyboardInterrupt, so that
    libraries which retry on any Exception (botocore, pdfminer's fallbacks) let it through."""


def _on_sigterm(signum: int, _frame: object) -> None:
    # The kubelet sends SIGTERM when the pod is deleted or evicted; raising here unwinds
    # the run (and its open transaction) so the summary below still gets written.
    raise _Terminated(f"stopped by {signal.Signals(signum).name} before finishing (pod deleted or evicted)")


ENV_HELP = """\
The runner takes no arguments: the operator configures it through the environment.
  SCHEDGEN_JOB_NAMESPACE, SCHEDGEN_JOB_NAME, SCHEDGEN_JOB_UID, SCHEDGEN_TENANT
                                 (required) the ParseJob, for the logs
  SCHEDGEN_SOURCE_URL            (required) presigned GET of the uploaded PDF
  SCHEDGEN_RESULT_URL            (required) presigned PUT of the result object
  SCHEDGEN_SCHEDULE_TYPE         auto (default), lecture, test or exam
  SCHEDGEN_MAX_BYTES             10485760: larger PDFs fail TooLarge
  SCHEDGEN_MAX_PAGES             100: more pages fail TooManyPages
  SCHEDGEN_PARSE_TIMEOUT_SECONDS 60: ParseTimeout
  SCHEDGEN_MAX_MEMORY_MB         512 (0 disables): MemoryLimitExceeded
  SCHEDGEN_TERMINATION_LOG       summary file (default $TERMINATION_MESSAGE_PATH, else
                                 /dev/termination-log)
  SCHEDGEN_LOG_FORMAT            json (default) or text
  SCHEDGEN_BATCH                 batch mode: a JSON list with the per-ParseJob variables
                                 above (SCHEDGEN_JOB_*, the two URLs, type, timeout) for
                                 each member, parsed one after another (runner/batch.py)

Exit codes: 0 success; 1 transient (S3 unreachable, SIGTERM: retried); 2 bad input
(never retried); 3 misconfiguration (a missing or invalid variable, or an argument).
"""


def _arguments(argv: list[str] | None) -> list[str]:
    """`--help` prints the environment contract and exits 0; anything else left over is
    returned (a misconfiguration: the Job is run with arguments it does not take)."""
    parser = argparse.ArgumentParser(prog="schedgen-runner", description=__doc__.split("\n\n")[0],
                                     epilog=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _, extra = parser.parse_known_args(argv)
    return extra


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    extra = _arguments(argv)
    termination_path = configmod.termination_log_path()
    cfg: configmod.RunnerConfig | None = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if _EARLY_SIGTERM:
            _on_sigterm(_EARLY_SIGTERM[0], None)
        if extra:
            raise ConfigurationError(f"schedgen-runner takes no arguments (got {' '.join(extra)[:200]}); "
                                     "it is configured through the environment (see --help)")
        if os.environ.get("SCHEDGEN_BATCH"):  # several ParseJobs, one after another
            from schedgen.runner import batch

            _setup_logging(_env_log_format(), None)
            summary = batch.run_batch(os.environ)
            write_termination(termination_path, summary)
            _info("batch done", members=summary.events)
            return 0
        cfg = configmod.load()
        _setup_logging(cfg.log_format, cfg.job_uid)
        _info("starting", namespace=cfg.job_namespace, name=cfg.job_name, tenant=cfg.tenant)
        limit_memory(cfg.max_memory_mb)
        result = run(cfg)
    except (Exception, _Terminated) as exc:  # noqa: BLE001 - every outcome must reach the termination file
        _lift_memory_limit()
        if cfg is None:
            _setup_logging(_env_log_format(), os.environ.get("SCHEDGEN_JOB_UID"))
        error = _as_error(exc)
        level = logging.ERROR if isinstance(error, InternalError) else logging.WARNING
        log.log(level, "failed: %s", error.message, exc_info=isinstance(error, InternalError),
                extra={"fields": {"code": error.code, "exit_code": error.exit_code}})
        write_termination(termination_path, RunnerSummary(ok=False, code=error.code, message=error.message))
        return error.exit_code
    _lift_memory_limit()
    write_termination(termination_path, RunnerSummary(ok=True, **result.summary()))
    _info("succeeded", code="OK", **result.summary())
    return 0


def _env_log_format() -> str:
    value = os.environ.get("SCHEDGEN_LOG_FORMAT", "").strip().lower()
    return value if value in configmod.LOG_FORMATS else "json"


def _as_error(exc: BaseException) -> SchedgenError:
    if isinstance(exc, SchedgenError):
        return exc
    if isinstance(exc, _Terminated):
        return Interrupted(str(exc))
    if isinstance(exc, MemoryError):
        return MemoryLimitExceeded(
            "the PDF needs more memory than the runner's limit (SCHEDGEN_MAX_MEMORY_MB)")
    return InternalError(f"unexpected {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
