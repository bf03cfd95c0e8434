"""What happened to a ParseJob's Job: classify a finished Job from the Job and its pods.

Input are the small views the indexes keep (views.job_view, views.pod_view: plain
dicts), so this module is pure and testable with hand-written objects.

Reasons (status.error.reason):
    InvalidPDF            runner exit 2 (bad input); status.error.code = the runner's code
    Misconfigured         runner exit 3 (bad env)
    OOMKilled             the last failed container was OOM-killed (memory limit): code
                          MemoryLimitExceeded, not retried (the pod failure policy's rule
                          for exit 137), like the runner's own MemoryLimitExceeded (exit 2)
    DeadlineExceeded      activeDeadlineSeconds passed
    BackoffLimitExceeded  transient failures (exit 1, ...) beyond maxRetries
    JobLost               the Job vanished before it finished, leaving no result object
    InvalidResult         the result object is missing, too big or fails the schema check
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from schedgen.errors import MemoryLimitExceeded
from schedgen.parsejob import EXIT_BAD_INPUT, EXIT_MISCONFIGURED, EXIT_OOM_KILLED, FAILED, SUCCEEDED, RunnerSummary


@dataclass(frozen=True)
class Outcome:
    phase: str  # "Succeeded" | "Failed"
    reason: str
    message: str = ""
    code: str | None = None  # the runner's stable error code, when it reported one
    result: dict[str, Any] | None = None
    attempts: int = 0

    def event(self) -> tuple[str, str, str]:
        """The Event that tells it: (type, reason, message)."""
        if self.phase == SUCCEEDED:
            r = self.result or {}
            return ("Normal", "Succeeded", f"parsed {r.get('kind', '?')} schedule: {r.get('events', '?')} events, "
                                           f"{r.get('pages', '?')} pages in {r.get('parseSeconds', '?')} s")
        code = f" ({self.code})" if self.code else ""
        return "Warning", self.reason, f"{self.reason}{code}: {self.message}"


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
    """The outcome of a finished Job, or None while it is still going. A runner pod in
    phase Succeeded is enough for Succeeded: it wrote its result object before exiting,
    and the Job controller's Complete (its pod-update batching, then two status writes)
    comes about 2 s later, most of a single upload's time to Succeeded. Not the
    container's exit alone: the pod holds its CPU request in the scheduler until its
    phase is terminal, so a slot freed at the exit made the next pod unschedulable on a
    full node."""
    conditions = job.get("conditions") or {}
    tries = attempts(job, pods)
    complete = conditions.get("Complete") or {}
    succeeded = [p for p in pods if (p.get("terminated") or {}).get("exitCode") == 0]
    if complete.get("status") == "True" or any(p.get("phase") == "Succeeded" for p in succeeded):
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
    if last and (last.get("reason") == "OOMKilled"
                 or (job_reason == "PodFailurePolicy" and last.get("exitCode") == EXIT_OOM_KILLED)):
        # Bad input as far as retries go (the pod failure policy failed the Job at once).
        return Outcome(FAILED, "OOMKilled", "the runner exceeded its memory limit",
                       code=MemoryLimitExceeded.code, attempts=tries)
    by_exit = [p["terminated"] for p in failures if p["terminated"].get("exitCode") in (EXIT_BAD_INPUT, EXIT_MISCONFIGURED)]
    if job_reason == "PodFailurePolicy" or by_exit:
        term = by_exit[-1] if by_exit else last
        s = (RunnerSummary.from_message(term["message"]) if term else None) or RunnerSummary(ok=False)
        msg = s.message or (term or {}).get("message") or job_message
        if term and term.get("exitCode") == EXIT_MISCONFIGURED:
            return Outcome(FAILED, "Misconfigured", _short(msg), code=s.code or "ConfigurationError", attempts=tries)
        return Outcome(FAILED, "InvalidPDF", _short(msg), code=s.code or "BadInput", attempts=tries)
    if job_reason == "BackoffLimitExceeded":
        msg = runner_message or job_message
        return Outcome("Failed", "BackoffLimitExceeded", _short(msg), code=code, attempts=tries)
    return Outcome("Failed", job_reason, _short(runner_message or job_message), code=code, attempts=tries)


def job_lost(message: str = "the Job disappeared before it finished", attempts_seen: int = 0) -> Outcome:
    return Outcome("Failed", "JobLost", message, attempts=attempts_seen)


def invalid_result(message: str, attempts_seen: int = 0) -> Outcome:
    return Outcome(FAILED, "InvalidResult", _short(message), code="InvalidResult", attempts=attempts_seen)
