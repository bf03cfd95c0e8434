"""Batch mode: one runner pod parses several ParseJobs' PDFs, one after another.

The operator's batch Job (operator/runner_jobs.py) mounts its run file
(`SCHEDGEN_RUN_FILE`, config.members): a JSON list with, per ParseJob, the variables of
a single run (SCHEDGEN_JOB_*, SCHEDGEN_TENANT, its two presigned URLs, schedule type,
parse timeout); the shared limits stay in the environment. Each PDF is parsed in a child
forked after the imports (milliseconds, not an interpreter start) under its own memory
limit and deadline, so a PDF that crashes, hangs or is OOM-killed fails only its own
ParseJob. Every outcome is written to that ParseJob's result object as soon as it is
known: its events (by the child, as a single run does), or a failure document

    {"ok": false, "code": ..., "message": ..., "retry": bool, "killed": null|"oom"|"deadline"}

A member not reached (the pod was deleted: SIGTERM) gets no object, and the operator
puts it back in the queue; the one running then is written `Interrupted` (retry).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import time
from typing import Any, Mapping

from schedgen import logs
from schedgen.errors import ConfigurationError, Interrupted, SchedgenError
from schedgen.parsejob import EXIT_TRANSIENT, RunnerSummary
from schedgen.runner import config as configmod
from schedgen.runner import run, storage

log = logging.getLogger("schedgen.runner")

MAX_ITEMS = 50
MARGIN_SECONDS = 2 * storage.TIMEOUT_SECONDS + 5  # download and upload around the parse


def failure_document(error: SchedgenError | None, killed: str | None = None, message: str = "") -> bytes:
    """A member's failure for the operator: `error` if the run could say one, else why
    it was `killed`."""
    doc: dict[str, Any] = {"ok": False, "killed": killed}
    if error is not None:
        doc.update(code=error.code, message=error.message, retry=error.exit_code == EXIT_TRANSIENT)
    else:
        doc.update(code="Killed", message=message, retry=False)
    return json.dumps(doc).encode()


def _child(env: dict[str, str]) -> None:
    """One member, in the forked child: the single run, plus a failure document."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cfg = None
    try:
        cfg = configmod.load(env)
        run.limit_memory(cfg.max_memory_mb)
        run.run_one(cfg)
        os._exit(0)
    except (Exception, run.Terminated) as exc:  # noqa: BLE001 - every outcome is written
        run.lift_memory_limit()
        error = run.as_error(exc)
        log.warning("member failed: %s", error.message, extra={"fields": {"code": error.code}})
        if cfg is not None:
            try:
                storage.upload(cfg.result_url, failure_document(error))
            except SchedgenError as exc2:
                log.warning("could not write the failure: %s", exc2.message)
        os._exit(error.exit_code)


class _Stop(Exception):
    """SIGTERM in the parent, between or during members."""


def run_batch(shared: Mapping[str, str], items: list[dict[str, str]]) -> RunnerSummary:
    """Parse every member (`items`, each its run's variables over the `shared`
    environment) in turn; SIGTERM stops after writing the current one's end."""
    ctx = multiprocessing.get_context("fork")
    current: dict[str, Any] = {}

    def on_sigterm(signum: int, _frame: object) -> None:
        child = current.get("process")
        if child is not None and child.is_alive():
            child.kill()
        raise _Stop()

    signal.signal(signal.SIGTERM, on_sigterm)
    done = 0
    try:
        for item in items:
            _run_member(ctx, {**shared, **item}, current)
            done += 1
    except _Stop:
        cfg = current.get("cfg")
        if cfg is not None:
            _write(cfg, failure_document(Interrupted("stopped by SIGTERM (pod deleted or evicted) mid-parse")))
        raise Interrupted(f"stopped by SIGTERM after {done} of {len(items)} members")
    return RunnerSummary(ok=True, kind=None, events=done, pages=None, seconds=None)


def _run_member(ctx: Any, member: dict[str, str], current: dict[str, Any]) -> None:
    """One member in a forked child; its end is written here when the child died unable
    to write it. `current` tells the SIGTERM handler what is running."""
    cfg = configmod.load(member)  # checked here: a bad item is the operator's bug
    with logs.context(**cfg.log_context()):  # the forked child's lines too
        _run_child(ctx, cfg, member, current)


def _run_child(ctx: Any, cfg: configmod.RunnerConfig, member: dict[str, str], current: dict[str, Any]) -> None:
    started = time.monotonic()
    child = ctx.Process(target=_child, args=(member,), daemon=True)
    current["process"] = child
    current["cfg"] = cfg
    child.start()
    child.join(cfg.parse_timeout_seconds + MARGIN_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        _write(cfg, failure_document(None, "deadline", f"no result within {cfg.parse_timeout_seconds:g} s"))
    elif child.exitcode == -signal.SIGKILL:  # the kernel's OOM killer at the pod's limit
        _write(cfg, failure_document(None, "oom", "the parse was killed at the memory limit"))
    elif child.exitcode is not None and child.exitcode < 0:
        _write(cfg, failure_document(Interrupted(f"the parse died of signal {-child.exitcode}")))
    current.clear()  # its end is written: SIGTERM from here on must not overwrite it
    log.info("member done", extra={"fields": {"exit": child.exitcode, "seconds": round(time.monotonic() - started, 3)}})


def _write(cfg: configmod.RunnerConfig, document: bytes) -> None:
    try:
        storage.upload(cfg.result_url, document)
    except SchedgenError as exc:  # S3 away: the operator requeues the member (no object)
        log.warning("could not write the result of %s: %s", cfg.job_uid, exc.message)
