"""`schedgen-runner`: the container entry point of a ParseJob's Kubernetes Job.

It takes no arguments (the operator sets the environment, see ENV_HELP), runs one
ParseJob (`run`) or a batch of them (`batch`), and reports the outcome twice: a JSON
summary in the termination-message file, and the exit code the Job's pod failure policy
acts on: 0 ok, 2 bad input (never retry), 1 transient (retry), 3 misconfigured. The
runner holds no secrets (no S3 keys, no DSN, no token): it reaches S3 only through two
presigned URLs, and the operator reads the result object and writes Postgres.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

# A pod deleted as it starts gets its SIGTERM while the imports below run. The kernel
# drops a signal without a handler for a container's PID 1, so the deletion would go
# unnoticed (the run would go on until the grace period's SIGKILL): note it now,
# main() acts on it.
_EARLY_SIGTERM: list[int] = []
if os.getpid() == 1:
    signal.signal(signal.SIGTERM, lambda signum, _frame: _EARLY_SIGTERM.append(signum))

from schedgen import logs
from schedgen.errors import ConfigurationError, InternalError, SchedgenError
from schedgen.parsejob import RunnerSummary
from schedgen.runner import config as configmod
from schedgen.runner.run import Terminated, as_error, lift_memory_limit, limit_memory, run_one

log = logging.getLogger("schedgen.runner")


# --- logging (schedgen.logs: the schema the API and the operator write too) -----------


def _setup_logging(log_format: str, log_level: str = "info") -> None:
    logs.configure("runner", log_format, log_level, quiet={"pdfminer": logging.WARNING})


def _info(msg: str, **fields: object) -> None:
    log.info(msg, extra={"fields": fields})


# --- termination message -----------------------------------------------------------


def write_termination(path: str, summary: RunnerSummary) -> None:
    try:
        Path(path).write_text(summary.to_json(), encoding="utf-8")
    except OSError as exc:  # e.g. run outside Kubernetes: the log line still has it
        log.warning("cannot write termination message to %s: %s", path, exc)


# --- the entry point ---------------------------------------------------------------


def _on_sigterm(signum: int, _frame: object) -> None:
    # The kubelet sends SIGTERM when the pod is deleted or evicted; raising here unwinds
    # the run so the summary still gets written.
    raise Terminated(f"stopped by {signal.Signals(signum).name} before finishing (pod deleted or evicted)")


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
  SCHEDGEN_LOG_LEVEL             info (default), debug, warning or error
  SCHEDGEN_RUN_FILE              the runs of this pod (the operator's Job mounts it from a
                                 Secret, so the URLs are not in the pod spec): a JSON list
                                 with the per-ParseJob variables above (SCHEDGEN_JOB_*,
                                 SCHEDGEN_TENANT, the two URLs, type, timeout) for each; one
                                 is a single run, several a batch parsed one after another
                                 (runner/batch.py)

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
    _setup_logging(*_env_logging())  # until the config is read
    logs.bind(parsejob_uid=os.environ.get("SCHEDGEN_JOB_UID"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if _EARLY_SIGTERM:
            _on_sigterm(_EARLY_SIGTERM[0], None)
        if extra:
            raise ConfigurationError(f"schedgen-runner takes no arguments (got {' '.join(extra)[:200]}); "
                                     "it is configured through the environment (see --help)")
        runs = configmod.members()
        if runs is None or len(runs) == 1:
            summary = _single({**os.environ, **(runs[0] if runs else {})})
        else:
            summary = _batch(runs)
    except (Exception, Terminated) as exc:  # noqa: BLE001 - every outcome must reach the termination file
        lift_memory_limit()
        error = as_error(exc)
        _log_failure(error)
        write_termination(termination_path, RunnerSummary(ok=False, code=error.code, message=error.message))
        return error.exit_code
    write_termination(termination_path, summary)
    return 0


def _single(env: dict[str, str]) -> RunnerSummary:
    cfg = configmod.load(env)
    _setup_logging(cfg.log_format, cfg.log_level)
    logs.bind(**cfg.log_context())
    _info("starting")
    limit_memory(cfg.max_memory_mb)
    result = run_one(cfg)
    lift_memory_limit()
    _info("succeeded", code="OK", **result.summary())
    return RunnerSummary(ok=True, **result.summary())


def _batch(runs: list[dict[str, str]]) -> RunnerSummary:
    from schedgen.runner import batch  # only batch mode needs multiprocessing

    _setup_logging(*_env_logging())
    summary = batch.run_batch(dict(os.environ), runs)
    _info("batch done", members=summary.events)
    return summary


def _log_failure(error: SchedgenError) -> None:
    internal = isinstance(error, InternalError)  # a bug: log its traceback
    log.log(logging.ERROR if internal else logging.WARNING, "failed: %s", error.message, exc_info=internal,
            extra={"fields": {"code": error.code, "exit_code": error.exit_code}})


def _env_logging() -> tuple[str, str]:
    """Format and level before (or without) a valid config: invalid ones fall back here,
    the config's check reports them."""
    fmt = os.environ.get("SCHEDGEN_LOG_FORMAT", "").strip().lower()
    level = os.environ.get("SCHEDGEN_LOG_LEVEL", "").strip().lower()
    return (fmt if fmt in logs.LOG_FORMATS else "json", level if level in logs.LOG_LEVELS else "info")


if __name__ == "__main__":
    sys.exit(main())
