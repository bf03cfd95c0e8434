"""How a run ends, and what that means for its ParseJob: the one retry scheme.

A run is one runner Job's go at a ParseJob (a single Job, or its turn in a batch Job).
The runner-Job kinds (runner_jobs.py) say how a run ended (`RunEnd`); `conclude` alone
turns that into the ParseJob's outcome or its way back to the queue, and decides
whether the run counted as an attempt:

    Parsed        the result object decides (results are read by the reconciler)
    RunFailed     final (bad input, OOM, deadline, misconfigured, lost, invalid result),
                  or transient: back to the queue while attempts <= maxRetries, each
                  retry after a growing delay (status.retryAfter), then Failed
                  BackoffLimitExceeded; a disrupted run (eviction, node drain, its
                  pod deleted) is retried without counting, up to MAX_DISRUPTIONS
                  times, then Failed TooManyDisruptions
    NotReached    a batch member its Job never got to: back to the queue, not counted

`status.attempts` is `priorAttempts` (counted runs before this one, fixed at admission)
plus this run when it counts: exact by construction, whatever the order in which the
watch delivers things.

Reasons (status.error.reason): InvalidPDF (runner exit 2, bad input), Misconfigured
(exit 3), OOMKilled (killed at the memory limit: code MemoryLimitExceeded),
DeadlineExceeded, BackoffLimitExceeded (transient failures past maxRetries), JobLost
(the Job vanished before it finished and left no result object), InvalidResult (the
result object is missing, too big or fails the schema check), TooManyDisruptions (its
runs were stopped from outside more than MAX_DISRUPTIONS times: a pod deleted in a loop
must not hold a ParseJob in the queue forever), ImagePullFailed (the runner image not
pulled for IMAGE_PULL_GRACE_SECONDS: code RunnerImageUnavailable), Cancelled,
TenantMismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from schedgen.errors import MemoryLimitExceeded, ParseTimeout
from schedgen.parsejob import FAILED, SUCCEEDED, ParseJob

MAX_TEXT = 512
RETRY_DELAY_CAP_SECONDS = 300.0
# Runs a ParseJob may lose to disruptions. A node going under a parse now and then is
# normal (consolidation is kept off working pods, spot nodes are not); twenty in a row is
# somebody deleting its pods.
MAX_DISRUPTIONS = 20


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


@dataclass(frozen=True)
class Requeue:
    """Back to the queue; `counted`: the run used an attempt; `delay`: seconds before
    it may be admitted again."""

    reason: str
    message: str
    counted: bool
    delay: float = 0.0
    disruption: bool = False  # stopped from outside: status.disruptions goes up by one


# --- how a run ends -----------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    """The run says it parsed: its result object decides."""


@dataclass(frozen=True)
class RunFailed:
    reason: str
    message: str = ""
    code: str | None = None
    transient: bool = False  # may be retried
    counted: bool = True  # uses an attempt (not a disruption)


@dataclass(frozen=True)
class NotReached:
    message: str


RunEnd = Union[Parsed, RunFailed, NotReached]


def short(text: str | None, limit: int = MAX_TEXT) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_lost(message: str) -> RunFailed:
    return RunFailed("JobLost", message)


def invalid_result(message: str) -> RunFailed:
    return RunFailed("InvalidResult", short(message), code="InvalidResult")


def from_failure_document(doc: Mapping[str, Any]) -> RunFailed:
    """A failure document a batch runner wrote for one member (untrusted: only known
    values are used, text is cut short)."""
    code = short(doc.get("code") if isinstance(doc.get("code"), str) else "") or "Unknown"
    message = short(doc.get("message") if isinstance(doc.get("message"), str) else "")
    killed = doc.get("killed")
    if killed == "oom":
        return RunFailed("OOMKilled", "the runner exceeded its memory limit", code=MemoryLimitExceeded.code)
    if killed == "deadline":
        return RunFailed("DeadlineExceeded", message or "the parse ran past its deadline", code=ParseTimeout.code)
    if doc.get("retry") is True:
        return RunFailed("BackoffLimitExceeded", message, code=code, transient=True)
    if code == "ConfigurationError":
        return RunFailed("Misconfigured", message, code=code)
    return RunFailed("InvalidPDF", message, code=code)


# --- the retry scheme ---------------------------------------------------------------------


def retry_delay(attempts: int, base: float) -> float:
    """Seconds before retry number `attempts` may start: base, doubling, capped (the Job
    controller's pod backoff, applied per run)."""
    if base <= 0 or attempts <= 0:
        return 0.0
    return min(RETRY_DELAY_CAP_SECONDS, base * 2 ** (attempts - 1))


def conclude(pj: ParseJob, end: RunFailed | NotReached, retry_base: float = 0.0) -> Outcome | Requeue:
    """What a run that did not parse means for its ParseJob."""
    if isinstance(end, NotReached):
        return Requeue("BatchEnded", end.message, counted=False)
    attempts = pj.status.prior_attempts + (1 if end.counted else 0)
    if end.transient and not end.counted:
        if pj.status.disruptions >= MAX_DISRUPTIONS:
            return Outcome(FAILED, "TooManyDisruptions", short(
                f"{pj.status.disruptions + 1} runs stopped from outside (limit {MAX_DISRUPTIONS}); the last: "
                f"{end.message}"), attempts=pj.status.prior_attempts)
        return Requeue("Disrupted", short(end.message), counted=False, disruption=True)
    if end.transient and attempts <= pj.max_retries:
        return Requeue("Retrying", short(f"{end.code or end.reason}: {end.message}"), counted=True,
                       delay=retry_delay(attempts, retry_base))
    return Outcome(FAILED, end.reason, short(end.message), code=end.code, attempts=attempts)


def succeeded(pj: ParseJob, result: dict[str, Any]) -> Outcome:
    return Outcome(SUCCEEDED, "Completed", "parsed", result=result, attempts=pj.status.prior_attempts + 1)
