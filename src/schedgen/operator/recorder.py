"""The recorder: keeps the Postgres rows of ParseJobs caught up with their statuses.

One `Recorder` per operator (in kopf's memo). The records daemon runs `run()`: every
`SCHEDGEN_RECORDS_INTERVAL_SECONDS` one `step()` writes the rows that are behind the
ParseJob index (records.sync: idempotent, never backwards). The finalizer calls
`record_now()` so a deleted ParseJob's last transition is in Postgres before the object
goes.

Every session is bounded (`SESSION_OPTIONS`): connect timeout, TCP keepalives and
`tcp_user_timeout` (a peer that stops answering is dropped by the kernel), a server-side
`statement_timeout`/`lock_timeout`/`idle_in_transaction_session_timeout`, and on top of
these a client-side deadline on every step (`STEP_TIMEOUT_SECONDS`): a black-holed
database (connections accepted, nothing ever answered) costs a step its deadline, never
hangs the daemon or the finalizer.

Postgres going away is expected, not an error: a failed step drops the connection and
waits longer each time (doubling, 1 s to 10 s); the next one reconnects and, since
nothing is known to be in the new session's database any more, replays every row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable, Mapping

import psycopg

from . import metrics
from .config import OperatorConfig
from .records import ParseJobRow, row_of, sync

log = logging.getLogger(__name__)
Logger = logging.Logger | logging.LoggerAdapter  # kopf's daemon logger is an adapter

BATCH = 500  # rows per transaction
MIN_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0
# One catch-up step (connect included), one record_now. When it expires psycopg first
# tries to cancel the query (itself bounded, ~10 s against a silent server), then closes.
STEP_TIMEOUT_SECONDS = 20.0
CLOSE_TIMEOUT_SECONDS = 2.0
SESSION_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 20000,  # ms: unacknowledged data for this long drops the connection
    "options": "-c statement_timeout=15s -c lock_timeout=5s -c idle_in_transaction_session_timeout=60s",
    "application_name": "schedgen-operator",
}
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)


class PostgresUnavailable(Exception):
    pass


class RecordBook:
    """Which (transitionSeq, attempts) of each ParseJob is known to be in Postgres."""

    def __init__(self) -> None:
        self.recorded: dict[str, tuple[int, int]] = {}

    def may_be_behind(self, body: Mapping[str, Any]) -> bool:
        """Cheap pre-check on a ParseJob body, before building its row."""
        status = body.get("status") or {}
        version = (int(status.get("transitionSeq") or 0), int(status.get("attempts") or 0))
        return version[0] > 0 and self.recorded.get(body["metadata"]["uid"], (0, -1)) < version

    def behind(self, rows: Iterable[ParseJobRow]) -> list[ParseJobRow]:
        return [r for r in rows if self.recorded.get(r.uid, (0, -1)) < r.version]

    def mark(self, rows: Iterable[ParseJobRow]) -> None:
        for r in rows:
            if self.recorded.get(r.uid, (0, -1)) < r.version:
                self.recorded[r.uid] = r.version

    def forget_except(self, uids: set[str]) -> None:
        for uid in list(self.recorded):
            if uid not in uids:
                del self.recorded[uid]

    def reset(self) -> None:
        self.recorded.clear()


class Recorder:
    def __init__(self, dsn: str, cfg: OperatorConfig, interval: float | None = None, batch: int = BATCH):
        self.dsn = dsn
        self.cfg = cfg
        self.interval = cfg.records_interval_seconds if interval is None else interval
        self.batch = batch
        self.book = RecordBook()
        self.conn: psycopg.AsyncConnection | None = None
        self.delay = self.interval  # until the next step
        self.step_timeout = STEP_TIMEOUT_SECONDS

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **SESSION_OPTIONS)

    async def run(self, stopped: Any, parsejobs: Callable[[], list[dict[str, Any]]], logger: Logger = log) -> None:
        """Step until `stopped` (a kopf.DaemonStopped: truthy once set, `wait(timeout)`)."""
        try:
            while not stopped:
                await stopped.wait(await self.step(parsejobs(), logger))
        finally:
            await self.disconnect()

    async def step(self, parsejobs: Iterable[Mapping[str, Any]], logger: Logger = log) -> float:
        """Write the rows that are behind `parsejobs`; the seconds until the next step."""
        try:
            await asyncio.wait_for(self._catch_up(list(parsejobs), logger), self.step_timeout)
            self.delay = self.interval
        except UNAVAILABLE as exc:
            metrics.RECORDS_ERRORS.inc()
            await self.disconnect()
            self.delay = min(max(self.delay * 2, MIN_RETRY_SECONDS), MAX_RETRY_SECONDS)
            logger.warning("records: Postgres unavailable (%s); retrying in %.0fs",
                           (str(exc).strip() or f"{type(exc).__name__}: no answer")[:200],
                           self.delay)
        return self.delay

    async def _catch_up(self, bodies: list[Mapping[str, Any]], logger: Logger) -> None:
        if self.conn is None or self.conn.closed:
            self.conn = await self._connect()
            self.book.reset()  # a new session: replay everything, the upsert is idempotent
            logger.info("records: connected to Postgres")
        behind = self.book.behind(r for r in (row_of(b, self.cfg) for b in bodies if self.book.may_be_behind(b))
                                  if r is not None)
        metrics.RECORDS_PENDING.set(len(behind))
        for i in range(0, len(behind), self.batch):
            chunk = behind[i:i + self.batch]
            await sync(self.conn, chunk)
            self.book.mark(chunk)
            metrics.RECORDS_WRITTEN.inc(len(chunk))
        self.book.forget_except({b["metadata"]["uid"] for b in bodies})
        metrics.RECORDS_PENDING.set(0)

    async def record_now(self, body: Mapping[str, Any]) -> ParseJobRow | None:
        """Write one ParseJob's row at once, on a connection of its own (the daemon's may
        be in a transaction). Raises PostgresUnavailable: the caller must retry."""
        row = row_of(body, self.cfg)
        if row is None:
            return None
        try:
            await asyncio.wait_for(self._record_one(row), self.step_timeout)
        except UNAVAILABLE as exc:
            raise PostgresUnavailable(str(exc).strip() or type(exc).__name__) from None
        self.book.mark([row])
        return row

    async def _record_one(self, row: ParseJobRow) -> None:
        conn = await self._connect()
        try:
            await sync(conn, [row])
        finally:
            await _close(conn)

    async def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await _close(conn)


async def _close(conn: psycopg.AsyncConnection) -> None:
    """Close, bounded: a connection to a black hole must not hang its closing either."""
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_SECONDS)
    except BaseException as exc:  # noqa: BLE001 - it is gone either way
        if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():
            raise
