"""Retention: delete old finished ParseJobs (their Postgres rows and events stay).

Succeeded ones go after `retentionSucceededSeconds` or beyond the newest
`retentionSucceededCount`; Failed and Cancelled ones likewise with the failed
settings. `finished` and `select_expired` are pure; `sweep` (the retention daemon's
pass) deletes what they select. A deletion goes through the finalizer like any other,
so the last transition is recorded before the object goes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Iterable

from schedgen.parsejob import ParseJob

from . import metrics
from .config import RuntimeConfig
from .runner_objects import epoch_of

log = logging.getLogger(__name__)

DELETE_CONCURRENCY = 8


@dataclass(frozen=True)
class Finished:
    key: tuple[str, str]
    uid: str
    phase: str
    completed_at: float  # epoch seconds


def finished(parsejobs: Iterable[ParseJob]) -> list[Finished]:
    """The finished ParseJobs, except those already going."""
    out = []
    for pj in parsejobs:
        done = epoch_of(pj.status.completed_at)
        if pj.status.final and done and not pj.deleting:
            out.append(Finished(pj.key, pj.uid, pj.status.phase or "", done))
    return out


def select_expired(finished: Iterable[Finished], cfg: RuntimeConfig, now: float) -> list[Finished]:
    groups: dict[str, list[Finished]] = {"Succeeded": [], "Failed": []}
    for f in finished:
        groups["Succeeded" if f.phase == "Succeeded" else "Failed"].append(f)
    limits = {
        "Succeeded": (cfg.retention_succeeded_seconds, cfg.retention_succeeded_count),
        "Failed": (cfg.retention_failed_seconds, cfg.retention_failed_count),
    }
    out: list[Finished] = []
    for group, items in groups.items():
        max_age, max_count = limits[group]
        items.sort(key=lambda f: f.completed_at, reverse=True)  # newest first
        for i, f in enumerate(items):
            if i >= max(0, max_count) or now - f.completed_at > max_age:
                out.append(f)
    return out


async def sweep(kube: Any, parsejobs: Iterable[ParseJob], cfg: RuntimeConfig, now: float,
                logger: logging.Logger | logging.LoggerAdapter = log) -> list[Finished]:
    """Delete the expired ParseJobs (a few at a time; a failed delete is retried next
    sweep); the ones selected. `kube` is a kube.Kube."""
    expired = select_expired(finished(parsejobs), cfg, now)
    if not expired:
        return expired
    logger.info("retention: deleting %d finished ParseJobs", len(expired))
    sem = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def delete(f: Finished) -> None:
        async with sem:
            await kube.delete_parsejob(f.key[0], f.key[1], f.uid)
            metrics.RETENTION_DELETED.labels(phase=f.phase).inc()

    await asyncio.gather(*(delete(f) for f in expired), return_exceptions=True)
    return expired
