"""The queue manager: from the waiting and running ParseJobs to what starts now, in one
pure step: order (queue_policy), admit (admission), and group into runner Jobs (batch
mode). Compare Kueue's pkg/queue (what waits, in which order) feeding pkg/scheduler
(whether it may start); here both are functions of the ParseJobs alone.

Batch mode. At a deep backlog one pod per PDF pays pod start-up (scheduling, a
container, an interpreter, imports, the Job's status churn) thousands of times for a
0.1 s parse. So while more than `batchThreshold` ParseJobs of one tenant wait in one
namespace (or a batch of it runs: the rest of its burst goes in batches too), that
tenant's turn in the queue is a full batch (`turn_sizes`) and what is admitted of it
starts as one Job. A full batch is `batchSize`, grown with the backlog (a quarter of what
the tenant has waiting there, up to `batchMaxSize`), at most half the slots one tenant may
hold (so two of its batches overlap) and at most what it has waiting. A smaller
group waits while anything runs: slots free one by one as members finish, and starting
each at once would make batches of one or two; the waiting group stands first, so the
freed slots gather for it. With nothing running it starts as it is. Admission is
unchanged by batching: caps count ParseJobs, and only what starts spends tokens.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Collection, Iterable

from schedgen.parsejob import ParseJob

from . import admission, queue_policy
from .config import RuntimeConfig
from .runner_objects import epoch_of

Where = tuple[str, str]  # (namespace, tenant): the ParseJobs that may share a batch


@dataclass
class Plan:
    groups: list[list[ParseJob]] = field(default_factory=list)  # each one runner Job, in admission order
    blocked: str | None = None  # why more do not start: concurrency, rate, capacity
    held: int = 0  # admitted but waiting for a fuller batch

    @property
    def started(self) -> int:
        return sum(len(g) for g in self.groups)


def batchable(pj: ParseJob) -> bool:
    """Only ParseJobs with the default resources share a pod (a member's own limits
    would not hold in another member's pod)."""
    return not pj.resources


def batching(running: Iterable[ParseJob]) -> set[Where]:
    """Where a batch is Running."""
    return {(pj.namespace, pj.tenant) for pj in running if pj.status.batch_size > 1}


GROWTH = 4  # a batch grows to a quarter of its tenant's backlog, up to batchMaxSize


def full_batch(runtime: RuntimeConfig, depth: int = 0, tenants: int = 1) -> int:
    """`batchSize`, grown with the tenant's backlog in the namespace (`depth`: a quarter
    of it, up to `batchMaxSize`: a deep backlog pays pod start-up less often), but at most
    half the slots one tenant may hold (so two of its batches overlap) and at most a fair
    share of the slots among the `tenants` waiting (a batch holds a slot per member: a
    larger one would give deep tenants more of the cluster than the others)."""
    slots = min(runtime.max_per_tenant, runtime.max_concurrent)
    grown = max(runtime.batch_size, min(runtime.batch_max_size, depth // GROWTH))
    share = runtime.max_concurrent // max(1, tenants)
    return max(1, min(grown, -(-slots // 2), share))


def _tenants(depth: Counter) -> int:
    return len({tenant for _, tenant in depth})


def _depths(waiting: Iterable[ParseJob], runtime: RuntimeConfig, running_batches: Collection[Where]
            ) -> tuple[Counter, set[Where]]:
    depth = Counter((pj.namespace, pj.tenant) for pj in waiting)
    if runtime.batch_size <= 1:
        return depth, set()
    return depth, {w for w, n in depth.items() if n > runtime.batch_threshold or w in running_batches}


def turn_sizes(waiting: Iterable[ParseJob], runtime: RuntimeConfig, running_batches: Collection[Where] = ()
               ) -> dict[str, int]:
    """How many ParseJobs make one turn of a tenant in the queue: a full batch while it
    is deep (or batching) somewhere, else one (absent)."""
    depth, deep = _depths(waiting, runtime, running_batches)
    return {tenant: full_batch(runtime, depth[(ns, tenant)], _tenants(depth)) for ns, tenant in deep}


def retry_wait(pj: ParseJob, now: float) -> float:
    """Seconds a retried ParseJob still waits (status.retryAfter); 0 when it may start."""
    after = epoch_of(pj.status.retry_after)
    return 0.0 if after is None else max(0.0, after - now)


def due(pj: ParseJob, now: float) -> bool:
    return retry_wait(pj, now) == 0.0


def recent_starts(parsejobs: Iterable[ParseJob], now: float,
                  window: float = queue_policy.USAGE_WINDOW_SECONDS) -> Counter:
    """Per tenant, its finished ParseJobs that started within `window` seconds of `now`:
    with its Running ones, the tenant's recent use that sets its turn (queue_policy).
    Every tick, over every ParseJob kept: RFC 3339 UTC stamps compare as text to the
    second, so only those in the window's last second or later are parsed."""
    cutoff = now - window
    earliest = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cutoff))
    out: Counter = Counter()
    for pj in parsejobs:
        stamp = pj.status.started_at
        if not stamp or not pj.status.final or stamp[:19] < earliest:
            continue
        started = epoch_of(stamp)
        if started is not None and started >= cutoff:
            out[pj.tenant] += 1
    return out


def ordered(waiting: list[ParseJob], running: list[ParseJob], runtime: RuntimeConfig,
            recent: Counter | None = None) -> list[ParseJob]:
    """The queue: every waiting ParseJob in admission order (also for queue positions);
    `recent`: recent_starts of the finished ones."""
    used = Counter(pj.tenant for pj in running) + (recent or Counter())
    return queue_policy.order(waiting, used, turn_sizes(waiting, runtime, batching(running)))


def plan(waiting: list[ParseJob], running: list[ParseJob], runtime: RuntimeConfig, tokens: int,
         guard_tripped: bool, now: float, pod_room: int | None = None, recent: Counter | None = None) -> Plan:
    """What starts now: `running` holds slots, `tokens` bounds the admissions, `pod_room`
    the runner Jobs (pods) that may start (admission.pod_room; None: any number),
    `recent` (recent_starts) orders the tenants' turns with `running`."""
    ready = [pj for pj in waiting if due(pj, now)]
    per_tenant = Counter(pj.tenant for pj in running)
    if not ready:
        return Plan()
    if admission.every_slot_taken(per_tenant, runtime) and not guard_tripped:
        return Plan(blocked="concurrency")  # most ticks at a deep backlog: no need to sort 1000s
    if admission.every_tenant_capped({pj.tenant for pj in ready}, per_tenant, runtime) and not guard_tripped:
        return Plan()  # the tail: each tenant left holds its cap; sorting its 1000s changes nothing
    queue = ordered(ready, running, runtime, recent)
    decision = admission.decide(queue, per_tenant, runtime, tokens, guard_tripped)
    groups, held = _group(decision.admit, ready, runtime, busy=bool(running), running_batches=batching(running))
    if pod_room is not None and len(groups) > pod_room:  # the rest waits for nodes to take the pending ones
        return Plan(groups[:pod_room], "capacity", len(held))
    return Plan(groups, decision.blocked, len(held))


def _group(admitted: list[ParseJob], waiting: list[ParseJob], runtime: RuntimeConfig, busy: bool,
           running_batches: Collection[Where]) -> tuple[list[list[ParseJob]], list[ParseJob]]:
    """(groups to start now, those that wait for a fuller batch). `busy`: ParseJobs run
    (their slots will free)."""
    if runtime.batch_size <= 1:
        return [[pj] for pj in admitted], []
    depth, deep = _depths(waiting, runtime, running_batches)
    groups: list[list[ParseJob]] = []
    pending: dict[Where, list[ParseJob]] = defaultdict(list)
    for pj in admitted:
        where = (pj.namespace, pj.tenant)
        if where in deep and batchable(pj):
            pending[where].append(pj)
        else:
            groups.append([pj])
    held: list[ParseJob] = []
    for where, jobs in pending.items():
        full = min(full_batch(runtime, depth[where], _tenants(depth)), depth[where])
        for i in range(0, len(jobs), full):
            chunk = jobs[i:i + full]
            if len(chunk) < full and busy:
                held.extend(chunk)  # slots free one by one as members finish: gather them
            else:
                groups.append(chunk)
    return groups, held
