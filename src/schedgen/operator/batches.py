"""Batch mode: which admitted ParseJobs share one Job, and what a member's result says.

At a deep backlog one pod per PDF pays pod start-up (scheduling, a container, an
interpreter, imports, the Job's status churn) thousands of times for a 0.1 s parse.
So while more than `batchThreshold` ParseJobs of one tenant wait in one namespace,
admitted ParseJobs of that tenant and namespace go together, up to `batchSize`, into
one Job whose runner parses them one after another (runner/batch.py). While a batch of
that tenant and namespace runs, the rest of its burst (at most `batchThreshold` left)
goes in batches too: otherwise a burst's tail can run one pod per ParseJob.

Admission is unchanged: queue_policy orders, admission.decide admits ParseJobs under
`maxConcurrent` / `maxPerTenant` (both count ParseJobs), priority and fair turns. Only
a deep tenant's turn is a full batch instead of one ParseJob (`turn_sizes`), so its
next batch stands together in the queue and tenants take turns batch by batch. This
module then groups what was admitted, in admission order. A full batch is `batchSize`,
at most half the slots one tenant may hold (so two of its batches overlap: one starts
while the other runs), at most what it has waiting. A smaller group waits for a later
tick while ParseJobs run anywhere: slots free one by one as members finish, and
starting each at once would make batches of one or two; the waiting group is first in
the queue, so the freed slots gather for it. With nothing running it starts as it is.
At light load nothing changes: one ParseJob, one Job.

Members keep their own status, Events, record and events. Each member's outcome comes
from its own result object (`member_outcome`); members the batch never reached go back
to the queue (their place kept, no retry counted).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from schedgen.errors import MemoryLimitExceeded, ParseTimeout

from .config import RuntimeConfig
from .outcome import Outcome
from .queue_policy import QueueEntry

MAX_TEXT = 512

Where = tuple[str, str]  # (namespace, tenant)


def batchable(body: Mapping[str, Any]) -> bool:
    """Only ParseJobs with the default resources share a pod (a member's own limits
    would not hold in another member's pod)."""
    return not (body.get("spec") or {}).get("resources")


def batching(running: Iterable[Mapping[str, Any]], tenant_of: Callable[[Mapping[str, Any]], str]) -> set[Where]:
    """(namespace, tenant) pairs with a batch Running (status.batchSize > 1)."""
    return {(b["metadata"]["namespace"], tenant_of(b)) for b in running
            if int((b.get("status") or {}).get("batchSize") or 1) > 1}


def full_batch(runtime: RuntimeConfig) -> int:
    """`batchSize`, but at most half the slots one tenant may hold."""
    slots = min(runtime.max_per_tenant, runtime.max_concurrent)
    return max(1, min(runtime.batch_size, -(-slots // 2)))


def _deep(waiting: Iterable[QueueEntry], runtime: RuntimeConfig, batching: Collection[Where]
          ) -> tuple[Counter, set[Where]]:
    depth = Counter((e.key[0], e.tenant) for e in waiting)
    if runtime.batch_size <= 1:
        return depth, set()
    return depth, {where for where, n in depth.items() if n > runtime.batch_threshold or where in batching}


def turn_sizes(waiting: Iterable[QueueEntry], runtime: RuntimeConfig, batching: Collection[Where] = ()
               ) -> dict[str, int]:
    """How many ParseJobs make one fair turn of a tenant in the queue (queue_policy.order):
    a full batch while it has a deep backlog (or a batch running) somewhere; one otherwise
    (absent)."""
    _, deep = _deep(waiting, runtime, batching)
    return {tenant: full_batch(runtime) for _, tenant in deep}


def plan(admitted: Sequence[QueueEntry], bodies: Mapping[str, Mapping[str, Any]],
         waiting: Iterable[QueueEntry], busy: bool, runtime: RuntimeConfig,
         batching: Collection[Where] = ()) -> tuple[list[list[QueueEntry]], list[QueueEntry]]:
    """(groups to start now, entries that wait for a fuller batch). Singletons are
    ordinary Jobs. `busy`: some ParseJobs are Running (their slots will free).
    `batching`: the (namespace, tenant) pairs with a batch Running."""
    if runtime.batch_size <= 1:
        return [[e] for e in admitted], []
    depth, deep = _deep(waiting, runtime, batching)
    groups: list[list[QueueEntry]] = []
    pending: dict[tuple[str, str], list[QueueEntry]] = defaultdict(list)
    for e in admitted:
        where = (e.key[0], e.tenant)
        if where in deep and batchable(bodies[e.uid]):
            pending[where].append(e)
        else:
            groups.append([e])
    held: list[QueueEntry] = []
    for where, entries in pending.items():
        full = min(full_batch(runtime), depth[where])
        for i in range(0, len(entries), full):
            chunk = entries[i:i + full]
            if len(chunk) < full and busy:
                held.extend(chunk)  # slots free one by one as members finish: gather them
            else:
                groups.append(chunk)
    return groups, held


# --- a member's result ------------------------------------------------------------


@dataclass(frozen=True)
class Requeue:
    """Put a batch member back in the queue; `counted`: its run had started."""

    reason: str
    message: str
    counted: bool


def failure_outcome(doc: Mapping[str, Any], attempts: int, max_retries: int) -> Outcome | Requeue:
    """A failure document the batch runner wrote for one member (untrusted: only known
    values are used, text is cut short). Bad input fails only this member; an
    interrupted or transient run is retried while retries are left."""
    code = _text(doc.get("code")) or "Unknown"
    message = _text(doc.get("message"))
    killed = doc.get("killed")
    if killed == "oom":
        return Outcome("Failed", "OOMKilled", "the runner exceeded its memory limit",
                       code=MemoryLimitExceeded.code, attempts=attempts)
    if killed == "deadline":
        return Outcome("Failed", "DeadlineExceeded", message or "the parse ran past its deadline",
                       code=ParseTimeout.code, attempts=attempts)
    if doc.get("retry") is True:
        if attempts > max_retries:
            return Outcome("Failed", "BackoffLimitExceeded", message, code=code, attempts=attempts)
        return Requeue("Retrying", f"{code}: {message}"[:MAX_TEXT], counted=True)
    if code == "ConfigurationError":
        return Outcome("Failed", "Misconfigured", message, code=code, attempts=attempts)
    return Outcome("Failed", "InvalidPDF", message, code=code, attempts=attempts)


def not_reached(job_name: str) -> Requeue:
    return Requeue("BatchEnded", f"Job {job_name} ended before this ParseJob's turn", counted=False)


def _text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""
