"""The queue summary (waiting, running, finished per tenant) and its history.

Waiting and running come from the live ParseJobs; finished totals from the records,
since retention deletes finished objects but never rows."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from schedgen.parsejob import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, ParseJob

from ..backends import postgres
from ..context import ApiContext

FINISHED = (SUCCEEDED, FAILED, CANCELLED)  # in the order the queue summary counts them
MAX_POINTS = 720  # a history has at most this many steps (721 points)
MAX_CACHED_SCOPES = 1000  # queue summaries cached per process (one per tenant asking, one for admins)


def _counts() -> dict:
    return {"waiting": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "oldestWaitingSeconds": None}


def queue_summary(items: list[dict], finished: dict[str, dict[str, int]], now: dt.datetime) -> dict:
    """Waiting, running and the oldest wait from the live ParseJobs `items`; finished
    totals from the records' counts `finished` (tenant -> lower-case phase -> n)."""
    tenants: dict[str, dict] = {}
    total = _counts()
    live_finished: dict[str, dict[str, int]] = {}
    for job in map(ParseJob.of, items):
        counts = tenants.setdefault(job.tenant, _counts())
        phase = job.phase or QUEUED
        if phase == QUEUED:
            since = job.status.enqueued_at or job.created
            age = _age(since, now) if since else None
            for c in (counts, total):
                c["waiting"] += 1
                if age is not None:
                    c["oldestWaitingSeconds"] = max(c["oldestWaitingSeconds"] or 0.0, age)
        elif phase == RUNNING:
            counts["running"] += 1
            total["running"] += 1
        elif phase in FINISHED:
            by_phase = live_finished.setdefault(job.tenant, {})
            by_phase[phase.lower()] = by_phase.get(phase.lower(), 0) + 1
    for tenant in set(finished) | set(live_finished):
        counts = tenants.setdefault(tenant, _counts())
        for phase in (p.lower() for p in FINISHED):
            # a finished object is normally recorded already; take the larger count so
            # one not yet recorded still shows
            n = max(finished.get(tenant, {}).get(phase, 0), live_finished.get(tenant, {}).get(phase, 0))
            counts[phase] = n
            total[phase] += n
    return {"total": total, "tenants": dict(sorted(tenants.items()))}


def _age(since: str, now: dt.datetime) -> float:
    """Seconds waited since `since` (RFC 3339), never negative (clock skew)."""
    age = (now - dt.datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    return round(max(0.0, age), 3)


def tenant_view(summary: dict, tenant: str) -> dict:
    """The summary as one tenant sees it: its own counts only (an admin key sees all)."""
    counts = summary["tenants"].get(tenant) or _counts()
    return {"total": dict(counts), "tenants": {tenant: dict(counts)}}


async def cached_summary(ctx: ApiContext, tenant: str | None) -> dict:
    """The queue summary with the finished totals of `tenant` (None: of every tenant, for
    admin keys; the records are read in that scope, row-level security holds the rest
    back), cached a moment per process and scope (pollers ask often)."""
    scope = tenant or postgres.ALL_TENANTS
    cached = ctx.queue_cache.get(scope)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    items, finished = await asyncio.gather(ctx.blocking(ctx.jobs.list_all),
                                           postgres.finished_counts(ctx.pool, scope, ctx.cfg.namespace))
    out = queue_summary(items, finished, dt.datetime.now(dt.timezone.utc))
    if len(ctx.queue_cache) >= MAX_CACHED_SCOPES:
        ctx.queue_cache.clear()
    ctx.queue_cache[scope] = (time.monotonic() + ctx.cfg.queue_cache_seconds, out)
    return out


async def history(ctx: ApiContext, tenant: str | None, minutes: int, step: int) -> dict:
    """The counts over the last `minutes` from the records (`tenant` None: every tenant).
    A step too fine for the window is raised to keep at most MAX_POINTS steps."""
    step = max(step, -(-minutes * 60 // MAX_POINTS))
    points = await postgres.queue_history(ctx.pool, ctx.cfg.namespace, tenant, minutes, step)
    return {"minutes": minutes, "stepSeconds": step, "points": points}
