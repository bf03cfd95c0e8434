"""Postgres rows catch up with the ParseJob statuses, level-based (the `records` daemon).

Every `SCHEDGEN_RECORDS_INTERVAL_SECONDS` one `step` writes the rows that are behind the
ParseJob index through the record store (record_store.py: idempotent, never backwards);
the finalizer calls `record_now` so a deleted ParseJob's last transition is in Postgres
before the object goes. Postgres going away is expected: a failed step waits for the
store's backoff (1 s doubling to 30 s), and since nothing is then known to be in the
database any more (it may have been restored), the next step replays every row.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from schedgen.parsejob import ParseJob

from . import metrics
from .backoff import Unavailable
from .record_store import RecordStore
from .rows import ParseJobRow, row_of

log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter  # kopf's daemon logger is an adapter

BATCH = 500  # rows per transaction


class RecordBook:
    """Which (transitionSeq, attempts) of each ParseJob is known to be in Postgres."""

    def __init__(self) -> None:
        self.recorded: dict[str, tuple[int, int]] = {}

    def may_be_behind(self, pj: ParseJob) -> bool:
        """Cheap pre-check, before building the row."""
        version = (pj.status.seq, pj.status.attempts)
        return version[0] > 0 and self.recorded.get(pj.uid, (0, -1)) < version

    def behind(self, rows: Iterable[ParseJobRow]) -> list[ParseJobRow]:
        return [r for r in rows if self.recorded.get(r.uid, (0, -1)) < r.version]

    def mark(self, rows: Iterable[ParseJobRow]) -> None:
        for r in rows:
            if self.recorded.get(r.uid, (0, -1)) < r.version:
                self.recorded[r.uid] = r.version

    def forget_except(self, uids: set[str]) -> None:
        for uid in self.recorded.keys() - uids:
            del self.recorded[uid]

    def reset(self) -> None:
        self.recorded.clear()


class RowCatchUp:
    def __init__(self, store: RecordStore, default_bucket: str, interval: float, batch: int = BATCH):
        self.store = store
        self.default_bucket = default_bucket
        self.interval = interval
        self.batch = batch
        self.book = RecordBook()

    async def run(self, stopped: Any, parsejobs: Callable[[], list[ParseJob]], logger: Logger = log) -> None:
        """Step until `stopped` (a kopf.DaemonStopped: truthy once set, `wait(timeout)`)."""
        while not stopped:
            await stopped.wait(await self.step(parsejobs(), logger))

    async def step(self, parsejobs: Iterable[ParseJob], logger: Logger = log) -> float:
        """Write the rows that are behind; the seconds until the next step."""
        pjs = list(parsejobs)
        try:
            await self._catch_up(pjs)
        except Unavailable as exc:
            metrics.RECORDS_ERRORS.inc()
            self.book.reset()  # nothing is known to be there any more: replay every row
            logger.warning("records: %s; retrying in %.0fs", exc, max(self.store.backoff.seconds_left(), 1.0))
            return max(self.store.backoff.seconds_left(), self.interval)
        return self.interval

    async def _catch_up(self, pjs: list[ParseJob]) -> None:
        rows = (row_of(pj, self.default_bucket) for pj in pjs if self.book.may_be_behind(pj))
        behind = self.book.behind(r for r in rows if r is not None)
        metrics.RECORDS_PENDING.set(len(behind))
        for i in range(0, len(behind), self.batch):
            chunk = behind[i:i + self.batch]
            await self.store.sync(chunk)
            self.book.mark(chunk)
            metrics.RECORDS_WRITTEN.inc(len(chunk))
        self.book.forget_except({pj.uid for pj in pjs})
        metrics.RECORDS_PENDING.set(0)

    async def record_now(self, pj: ParseJob) -> ParseJobRow | None:
        """Write one ParseJob's row at once (the finalizer). Raises Unavailable: the
        caller must retry."""
        row = row_of(pj, self.default_bucket)
        if row is None:
            return None
        await self.store.sync([row])
        self.book.mark([row])
        return row
