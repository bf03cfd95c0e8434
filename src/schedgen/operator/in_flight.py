"""What ticks decided and have not yet seen written: the scheduler's pipeline.

A tick decides from the indexes, then starts its writes (the new runs' Secrets, Jobs and
Running statuses; the ended runs' final ones) as tasks and returns: the next tick does
not wait for them. At a deep backlog each of those writes is a round trip to a busy
apiserver, and a tick that waited for them all was admission's delay for every slot
that freed meanwhile.

Until the snapshot shows a write landed (the ParseJob's transitionSeq moved past the
one it was decided at), the ParseJob is *pending*:

* a start holds its slot as if Running (the caps count it) and is neither waiting nor
  observed: it is never admitted twice;
* an end holds no slot (its run is over) and is neither Running nor waiting: it is
  never decided twice. The Running writes of starts wait for the ends in flight when
  they were decided, so the statuses never show more Running than maxConcurrent.

A write that fails is forgotten at once (nothing landed: the next tick decides it
again from what the index shows); one that lands is forgotten when a snapshot shows it,
never sooner, so a snapshot taken a moment before the write landed still counts it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Iterable, Mapping

from schedgen.parsejob import ParseJob

from . import metrics
from . import status as st

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    seq: int  # the ParseJob's transitionSeq when decided: a larger one in a snapshot means written
    as_running: ParseJob | None = None  # a start: the ParseJob as it will be once Running; None: an end
    group: int = 0  # a start: its runner Job (members share one)


@dataclass
class Sorted:
    """A snapshot's ParseJobs as the in-flight writes leave them."""

    settled: list[ParseJob]  # no write pending: the tick decides from these
    starting: list[ParseJob]  # admitted, Job or Running status on the way (as Running)
    ending: list[ParseJob]  # run over, its final or requeued status on the way
    starting_groups: int  # runner Jobs on the way


class InFlight:
    def __init__(self, on_failed: Callable[[], None] = lambda: None):
        self.pending: dict[str, Pending] = {}  # by ParseJob uid
        self.tasks: set[asyncio.Task] = set()
        self.end_tasks: set[asyncio.Task] = set()
        self.on_failed = on_failed  # a write failed: tick again soon
        self._groups = itertools.count(1)

    def sort(self, parsejobs: Iterable[ParseJob]) -> Sorted:
        """Call before the tick's first await: the snapshot and this view must agree."""
        settled, starting, ending, groups = [], [], [], set()
        for pj in parsejobs:
            p = self.pending.get(pj.uid)
            if p is not None and pj.status.seq > p.seq:
                del self.pending[pj.uid]  # the write landed (or something else moved it on)
                p = None
            if p is None:
                settled.append(pj)
            elif p.as_running is not None:
                starting.append(p.as_running)
                groups.add(p.group)
            else:
                ending.append(pj)
        self._gauge()
        return Sorted(settled, starting, ending, len(groups))

    def forget_except(self, uids: set[str]) -> None:
        for uid in self.pending.keys() - uids:
            del self.pending[uid]

    # --- what a tick decided ------------------------------------------------------------

    def ending(self, decided: Iterable[ParseJob], writes: Coroutine[Any, Any, list[Any]]) -> None:
        """The ended runs' status writes (a Bounded run: one result per ParseJob, None
        where it failed)."""
        decided = list(decided)
        for pj in decided:
            self.pending[pj.uid] = Pending(pj.status.seq)
        task = self._spawn(self._settle(decided, writes))
        self.end_tasks.add(task)
        task.add_done_callback(self.end_tasks.discard)

    def starting(self, groups: Iterable[list[ParseJob]], at: Mapping[str, str],
                 writes: Coroutine[Any, Any, list[Any]]) -> None:
        """The admitted groups' starts (a Bounded run: per group the uids marked Running,
        None or fewer where it failed)."""
        groups = list(groups)
        for group in groups:
            n = next(self._groups)
            for pj in group:
                as_running = pj.with_status(st.running(pj, "", at.get(pj.uid), len(group)))
                self.pending[pj.uid] = Pending(pj.status.seq, as_running, n)
        self._spawn(self._settle([pj for g in groups for pj in g], self._flat(writes)))

    def ends_landed(self) -> Awaitable | None:
        """Awaits the end writes in flight now (for a start's Running writes); None when
        there are none."""
        if not self.end_tasks:
            return None
        return asyncio.gather(*self.end_tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Until every write in flight is done (tests; the scheduler's stop)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    # --- bookkeeping --------------------------------------------------------------------

    @staticmethod
    async def _flat(writes: Coroutine[Any, Any, list[Any]]) -> list[Any]:
        return [uid for uids in await writes if uids for uid in uids]

    async def _settle(self, decided: list[ParseJob], writes: Coroutine[Any, Any, list[Any]]) -> None:
        done: set[str] = set()
        try:
            done = {uid for uid in await writes if uid}
        finally:
            failed = {pj.uid: pj.status.seq for pj in decided if pj.uid not in done}
            for uid, seq in failed.items():
                p = self.pending.get(uid)
                if p is not None and p.seq == seq:  # not since decided again
                    del self.pending[uid]
            if failed:
                self.on_failed()
            self._gauge()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler writes failed", exc_info=task.exception())

    def _gauge(self) -> None:
        starts = sum(1 for p in self.pending.values() if p.as_running is not None)
        metrics.IN_FLIGHT.labels(kind="start").set(starts)
        metrics.IN_FLIGHT.labels(kind="end").set(len(self.pending) - starts)
