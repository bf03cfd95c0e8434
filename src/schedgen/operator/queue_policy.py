"""The queue policy: which waiting ParseJob goes first.

One comparison decides the order (compare with Kueue's `byPriority` in
pkg/queue/cluster_queue_strict_fifo.go, which orders by priority, then timestamp):

    1. priority: high before normal before low;
    2. the tenant's turn: within a priority, tenants take turns. A job's turn is its
       tenant's recent use -- the jobs it has Running plus those it started within the
       last `USAGE_WINDOW_SECONDS` that have finished since (queue_manager.recent_starts)
       -- plus the number of its tenant's jobs of the same priority that wait ahead of
       it. So every tenant's first waiting job comes before any tenant's second one, and
       a tenant that already runs a lot waits behind one that runs nothing: one tenant's
       500 uploads do not starve another tenant's single one. Counting what finished
       recently matters when jobs are short and admission is the bottleneck (the rate
       cap): Running alone is near 0 for everyone between ticks, and the turns would
       fall back to arrival order, i.e. shares in proportion to the backlogs (measured:
       108 vs 15 admissions in a minute between two tenants that both waited throughout).
       A tenant with a deep backlog in batch mode (`turn_sizes`) takes its turns a
       batch at a time: its next `size` jobs share the turn of the last of them and
       stand together, so they are admitted together into one Job. Turns count jobs,
       not batches (a finish tag, as in fair queueing): a tenant's next batch of 5 waits
       until the others run 4 or have nothing waiting, so tenants that batch get no
       larger share of the slots than those that do not;
    3. arrival (creationTimestamp, then the operator's enqueuedAt), then the name, so
       the order is total and stable.

Pure, derived from the ParseJob objects alone, so a restarted or replaced operator
rebuilds exactly the same order. Whether the first jobs may start *now* is admission's
business (admission.py); queue_manager.py puts the two together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from schedgen.parsejob import PRIORITIES, ParseJob

PRIORITY_RANK = {p: i for i, p in enumerate(PRIORITIES)}
USAGE_WINDOW_SECONDS = 60.0  # how far back a tenant's finished jobs still count as its use


def arrival(pj: ParseJob) -> tuple:
    return (pj.created, pj.status.enqueued_at or "", pj.key)


@dataclass(frozen=True)
class Ranked:
    pj: ParseJob
    turn: int
    head: ParseJob  # the first job of its turn (itself, when a turn is one job)

    def sort_key(self) -> tuple:
        return (PRIORITY_RANK.get(self.pj.priority, 1), self.turn, arrival(self.head), arrival(self.pj))


def order(waiting: Iterable[ParseJob], used_per_tenant: Mapping[str, int] | None = None,
          turn_sizes: Mapping[str, int] | None = None) -> list[ParseJob]:
    """The waiting ParseJobs in the order they should be admitted (`used_per_tenant`:
    each tenant's recent use, its Running jobs and those it started in the window)."""
    used_per_tenant = used_per_tenant or {}
    turn_sizes = turn_sizes or {}
    by_group: dict[tuple[str, str], list[ParseJob]] = defaultdict(list)
    for pj in waiting:
        by_group[(pj.priority, pj.tenant)].append(pj)
    ranked: list[Ranked] = []
    for (_, tenant), jobs in by_group.items():
        jobs.sort(key=arrival)
        base = used_per_tenant.get(tenant, 0)
        size = max(1, turn_sizes.get(tenant, 1))
        for start in range(0, len(jobs), size):
            chunk = jobs[start:start + size]
            for pj in chunk:  # a batch's turn counts its jobs: it stands where its last job would
                ranked.append(Ranked(pj, base + start + len(chunk) - 1, chunk[0]))
    ranked.sort(key=Ranked.sort_key)
    return [r.pj for r in ranked]
