"""The status writer: every write of a ParseJob's status, and the Event and metrics that
go with it (one Event per ParseJob in a normal life: how it ended; a retry or a requeue
adds one).

Writes are conditional on status.transitionSeq (a JSON-patch `test`, kube.py), so a
stale view or a second replica can never record a transition twice. Until the watch
delivers a write back, the written ParseJob is kept as an overlay on the index
(`current`), so the next tick decides from what was written, not from what the index
still shows. Writes run a bounded number at a time; one that fails is logged and left
to the next tick (level-based).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Awaitable, Callable, Iterable

from schedgen.parsejob import CANCELLED, ParseJob

from . import metrics
from . import status as st
from .kube import Conflict, Kube, NotFound
from .outcome import Outcome, Requeue
from .runner_objects import epoch_of

log = logging.getLogger(__name__)

WRITE_CONCURRENCY = 16


class Bounded:
    """Runs writes a few at a time; a failed one is None (the next tick retries). Writes
    that wait for other writes take their turns from another Bounded (a deadlock else)."""

    def __init__(self, limit: int = WRITE_CONCURRENCY):
        self._sem = asyncio.Semaphore(limit)

    async def __call__(self, writes: Iterable[Awaitable[Any]]) -> list[Any]:
        async def run(write: Awaitable[Any]) -> Any:
            async with self._sem:
                try:
                    return await write
                except (Conflict, NotFound) as exc:
                    log.debug("write skipped: %s", exc)
                except Exception:  # noqa: BLE001 - level-based: the next tick tries again
                    log.exception("write failed")
                return None

        return list(await asyncio.gather(*(run(w) for w in writes)))


class StatusWriter:
    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.kube, self.clock, self.wall = kube, clock, wall
        self.overlays: dict[str, ParseJob] = {}  # by uid: our last write, until the watch brings it
        self.freed_slots: deque[float] = deque(maxlen=10000)  # clock() of runs ending with work waiting
        self.bounded = Bounded()

    # --- what the index says, with our writes on top -------------------------------------

    def current(self, pj: ParseJob) -> ParseJob:
        mine = self.overlays.get(pj.uid)
        if mine is None:
            return pj
        if mine.status.seq > pj.status.seq:
            return pj.with_status(mine.status.raw)
        del self.overlays[pj.uid]  # the watch caught up
        return pj

    def forget_except(self, uids: set[str]) -> None:
        for uid in self.overlays.keys() - uids:
            del self.overlays[uid]

    # --- writes -------------------------------------------------------------------------

    async def _write(self, pj: ParseJob, status: dict[str, Any]) -> ParseJob:
        await self.kube.replace_status(pj.namespace, pj.name, status, pj.status.seq)
        written = self.overlays[pj.uid] = pj.with_status(status)
        return written

    async def running(self, pj: ParseJob, job_name: str, job_uid: str, at: str | None, batch_size: int) -> str:
        await self._write(pj, st.running(pj, job_name, at, batch_size, job_uid))
        if self.freed_slots:
            metrics.ADMISSION_LATENCY.observe(max(0.0, self.clock() - self.freed_slots.popleft()))
        metrics.ADMITTED.labels(priority=pj.priority).inc()
        created = epoch_of(pj.created)
        if created is not None:
            metrics.QUEUE_WAIT.observe(max(0.0, self.wall() - created))
        # No Event: admission is in the status (condition Admitted, history), and an Event is
        # an API write per ParseJob; the final one tells the story (`kubectl describe`).
        return pj.uid

    async def requeued(self, pj: ParseJob, requeue: Requeue, at: str | None = None) -> str:
        await self._write(pj, st.requeued(pj, requeue, at))
        metrics.REQUEUED.labels(reason=requeue.reason).inc()
        self.kube.emit(pj.ref(), "Normal", requeue.reason, requeue.message)
        return pj.uid

    async def finished(self, pj: ParseJob, outcome: Outcome, at: str | None = None) -> str:
        """`at`: when it was decided (default now)."""
        written = await self._write(pj, st.finished(pj, outcome, at))
        now = self.wall()
        kind = (written.status.raw.get("result") or {}).get("kind") or "unknown"
        metrics.COMPLETED.labels(kind=kind, outcome=outcome.phase, reason=outcome.reason).inc()
        for hist, since in ((metrics.RUN_TIME, pj.status.started_at), (metrics.END_TO_END, pj.created)):
            t = epoch_of(since)
            if t is not None:
                hist.observe(max(0.0, now - t))
        self.kube.emit(pj.ref(), *outcome.event())
        return pj.uid

    async def cancelled(self, pj: ParseJob) -> ParseJob:
        """Cancelled (the ParseJob is being deleted); the ParseJob as it ends."""
        final = pj.with_status(st.cancelled(pj))
        try:
            await self.kube.replace_status(pj.namespace, pj.name, dict(final.status.raw), pj.status.seq)
        except NotFound:
            pass
        self.kube.emit(pj.ref(), "Normal", "Cancelled", "deleted before it finished; its Job is stopped")
        metrics.COMPLETED.labels(kind="unknown", outcome=CANCELLED, reason="Cancelled").inc()
        return final
