"""The queue policy: which waiting ParseJob goes first.

One comparison decides the order (compare with Kueue's `byPriority` in
pkg/queue/cluster_queue_strict_fifo.go, which orders by priority, then timestamp):

    1. priority: high before normal before low;
    2. the tenant's turn: within a priority, tenants take turns. A job's turn is the
       number of jobs its tenant already has Running plus the number of its tenant's
       jobs of the same priority that wait ahead of it. So every tenant's first
       waiting job comes before any tenant's second one, and a tenant that already
       runs a lot waits behind one that runs nothing: one tenant's 500 uploads do
       not starve another tenant's single one;
       A tenant with a deep backlog in batch mode (batches.turn_sizes) takes its turns
       a batch at a time: its next `size` jobs share one turn and stand together,
       ordered by the first of them, so they are admitted together into one Job;
    3. arrival (creationTimestamp, then the operator's enqueuedAt), then the name, so
       the order is total and stable.

Everything here is pure and derived from the ParseJob objects, so a restarted or
replaced operator rebuilds exactly the same order from the cluster.
Whether the first jobs may start *now* is admission's business (admission.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .job_template import priority_of, tenant_of

PRIORITY_RANK = {"high": 0, "normal": 1, "low": 2}


@dataclass(frozen=True)
class QueueEntry:
    key: tuple[str, str]  # (namespace, name)
    tenant: str
    priority: str
    arrival: str  # RFC 3339 creationTimestamp (sorts lexically)
    enqueued_at: str = ""  # finer-grained tie breaker set by the operator
    uid: str = ""


def entry_of(body: Mapping[str, Any]) -> QueueEntry:
    """A waiting ParseJob (its index view) as the queue sees it."""
    meta = body["metadata"]
    return QueueEntry(
        key=(meta["namespace"], meta["name"]), tenant=tenant_of(body), priority=priority_of(body),
        arrival=meta.get("creationTimestamp") or "",
        enqueued_at=(body.get("status") or {}).get("enqueuedAt") or "", uid=meta["uid"],
    )


@dataclass(frozen=True)
class Ranked:
    entry: QueueEntry
    turn: int
    head: QueueEntry  # the first job of its turn (itself, when a turn is one job)

    def sort_key(self) -> tuple:
        e, h = self.entry, self.head
        return (PRIORITY_RANK.get(e.priority, 1), self.turn, h.arrival, h.enqueued_at, h.key,
                e.arrival, e.enqueued_at, e.key)


def order(waiting: Iterable[QueueEntry], running_per_tenant: Mapping[str, int] | None = None,
          turn_sizes: Mapping[str, int] | None = None) -> list[QueueEntry]:
    """The waiting ParseJobs in the order they should be admitted."""
    running_per_tenant = running_per_tenant or {}
    turn_sizes = turn_sizes or {}
    by_group: dict[tuple[str, str], list[QueueEntry]] = defaultdict(list)
    for e in waiting:
        by_group[(e.priority, e.tenant)].append(e)
    ranked: list[Ranked] = []
    for (_, tenant), entries in by_group.items():
        entries.sort(key=lambda e: (e.arrival, e.enqueued_at, e.key))
        base = running_per_tenant.get(tenant, 0)
        size = max(1, turn_sizes.get(tenant, 1))
        for i, e in enumerate(entries):
            turn = (base + i) // size
            ranked.append(Ranked(e, turn, entries[max(0, turn * size - base)]))
    ranked.sort(key=Ranked.sort_key)
    return [r.entry for r in ranked]
