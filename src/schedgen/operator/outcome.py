"""What happened to a ParseJob's Job: classify a finished Job from the Job and its pods.

Input are the small views the indexes keep (`job_view`, `pod_view`, plain dicts), so
this module is pure and testable with hand-written objects.

Reasons (status.error.reason):
    InvalidPDF            runner exit 2 (bad input); status.error.code = the runner's code
    Misconfigured         runner exit 3 (bad env / Secret)
    OOMKilled             the last failed container was OOM-killed (memory limit)
    DeadlineExceeded      activeDeadlineSeconds passed
    BackoffLimitExceeded  transient failures (exit 1, ...) beyond maxRetries
    JobLost               the Job vanished before it finished (decided by the reconciler)
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from schedgen.parsejob import EXIT_BAD_INPUT, EXIT_MISCONFIGURED, FAILED, RUNNER_CONTAINER, SUCCEEDED, RunnerSummary


@dataclass(frozen=True)
class Outcome:
    phase: str  # "Succeeded" | "Failed"
    reason: str
    message: str = ""
    code: str | None = None  # the runner's stable error code, when it reported one
    result: dict[str, Any] | None = None
    attempts: int = 0


# --- views kept by the indexes --------------------------------------------------------


def parse_time(value: str | None) -> float | None:
    """RFC 3339 (as the API server writes it) -> epoch seconds."""
    if not value:
        return None
    text = value.rstrip("Z")
    frac = 0.0
    if "." in text:
        text, fraction = text.split(".", 1)
        frac = float("0." + "".join(ch for ch in fraction if ch.isdigit()) or "0")
    text = text.split("+")[0]
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) + frac


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    conditions = {
        c.get("type"): {"status": c.get("status"), "reason": c.get("reason") or "", "message": c.get("message") or ""}
        for c in status.get("conditions") or []
    }
    meta = body.get("metadata") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "active": status.get("active") or 0,
        "succeeded": status.get("succeeded") or 0,
        "failed": status.get("failed") or 0,
        "conditions": conditions,
        "deleting": bool(meta.get("deletionTimestamp")),
    }


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    unschedulable_since = None
    disrupted = False
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            unschedulable_since = parse_time(c.get("lastTransitionTime")) or time.time()
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            disrupted = True
    terminated = None
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != RUNNER_CONTAINER:
            continue
        state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if state:
            terminated = {
                "exitCode": state.get("exitCode"),
                "reason": state.get("reason") or "",
                "message": state.get("message") or "",
                "finishedAt": state.get("finishedAt") or "",
            }
    labels = meta.get("labels") or {}
    return {
        "name": meta.get("name"),
        "job": labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
        "phase": status.get("phase") or "Pending",
        "created": meta.get("creationTimestamp") or "",
        "unschedulableSince": unschedulable_since if status.get("phase", "Pending") == "Pending" else None,
        "disrupted": disrupted,
        "terminated": terminated,
    }


# --- classification -----------------------------------------------------------------


def _failed_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    done = [p for p in pods if p.get("terminated") and p["terminated"].get("exitCode") not in (None, 0)]
    return sorted(done, key=lambda p: (p["terminated"].get("finishedAt") or "", p.get("created") or ""))


def attempts(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> int:
    counted = 0
    if job:
        counted = job["failed"] + job["succeeded"] + job["active"]
    return max(counted, len(pods))


def _short(text: str, limit: int = 512) -> str:
    text = (text or "").strip()
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def classify(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Outcome | None:
    """The outcome of a finished Job, or None while it is still going."""
    conditions = job.get("conditions") or {}
    tries = attempts(job, pods)
    complete = conditions.get("Complete") or {}
    if complete.get("status") == "True":
        succeeded = [p for p in pods if p.get("terminated") and p["terminated"].get("exitCode") == 0]
        summary = RunnerSummary.from_message(succeeded[-1]["terminated"]["message"]) if succeeded else None
        result = summary.result() if summary and summary.ok else {}
        return Outcome(SUCCEEDED, "Completed", "parsed", result=result, attempts=tries)
    failed = conditions.get("Failed") or {}
    if failed.get("status") != "True":
        return None
    job_reason = failed.get("reason") or "Failed"
    job_message = failed.get("message") or ""
    failures = _failed_pods(pods)
    last = failures[-1]["terminated"] if failures else None
    summary = RunnerSummary.from_message(last["message"]) if last else None
    code = summary.code if summary else None
    runner_message = (summary.message if summary else None) or (last["message"] if last else "")

    if job_reason == "DeadlineExceeded":
        return Outcome("Failed", "DeadlineExceeded", _short(job_message or "the job ran past deadlineSeconds"),
                       code=code, attempts=tries)
    by_exit = [p["terminated"] for p in failures if p["terminated"].get("exitCode") in (EXIT_BAD_INPUT, EXIT_MISCONFIGURED)]
    if job_reason == "PodFailurePolicy" or by_exit:
        term = by_exit[-1] if by_exit else last
        s = (RunnerSummary.from_message(term["message"]) if term else None) or RunnerSummary(ok=False)
        msg = s.message or (term or {}).get("message") or job_message
        if term and term.get("exitCode") == EXIT_MISCONFIGURED:
            return Outcome(FAILED, "Misconfigured", _short(msg), code=s.code or "ConfigurationError", attempts=tries)
        return Outcome(FAILED, "InvalidPDF", _short(msg), code=s.code or "BadInput", attempts=tries)
    if last and (last.get("reason") == "OOMKilled"):
        return Outcome("Failed", "OOMKilled", "the runner exceeded its memory limit", code=code, attempts=tries)
    if job_reason == "BackoffLimitExceeded":
        msg = runner_message or job_message
        return Outcome("Failed", "BackoffLimitExceeded", _short(msg), code=code, attempts=tries)
    return Outcome("Failed", job_reason, _short(runner_message or job_message), code=code, attempts=tries)


def job_lost(message: str = "the Job disappeared before it finished", attempts_seen: int = 0) -> Outcome:
    return Outcome("Failed", "JobLost", message, attempts=attempts_seen)
