"""The one writer of the operator's Postgres records: `parse_jobs` rows, their
transitions, and the events of a checked result. One set of kept sessions, one
backoff, one upsert.

A row only moves forward: the upsert applies when the status's (transitionSeq,
attempts) is ahead of the row's, and transitions are inserted ON CONFLICT DO NOTHING,
so any replay (after an outage, from either replica) records nothing twice and never
goes backwards. The result columns (kind, event_count, ...) come from the result object.

Every session is bounded (`SESSION_OPTIONS`): connect timeout, TCP keepalives and
`tcp_user_timeout` (a peer that stops answering is dropped by the kernel), server-side
statement/lock/idle-in-transaction timeouts, and a client-side deadline on every call
(`CALL_TIMEOUT_SECONDS`): a black-holed database delays records, never the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import psycopg
from psycopg import conninfo

from schedgen import db
from schedgen.models import ParseResult

from .backoff import Backoff, Unavailable
from .rows import ParseJobRow

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 20.0
POOL_SIZE = 4
SESSION_OPTIONS: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": 5,
    **db.KEEPALIVES,  # a peer that stops answering is dropped by the kernel
    "options": "-c statement_timeout=15s -c lock_timeout=5s -c idle_in_transaction_session_timeout=60s",
    "application_name": "schedgen-operator",
}
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError)

_UPSERT = """
INSERT INTO parse_jobs AS p (uid, namespace, name, tenant, priority, schedule_type, source_bucket,
    source_key, phase, transition_seq, attempts, job_name, kind, event_count, pages, parse_seconds,
    error_reason, error_code, error_message, enqueued_at, started_at, completed_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (uid) DO UPDATE SET
    tenant = EXCLUDED.tenant, priority = EXCLUDED.priority, schedule_type = EXCLUDED.schedule_type,
    source_bucket = EXCLUDED.source_bucket, source_key = EXCLUDED.source_key,
    phase = EXCLUDED.phase, transition_seq = EXCLUDED.transition_seq, attempts = EXCLUDED.attempts,
    job_name = EXCLUDED.job_name,
    kind = COALESCE(p.kind, EXCLUDED.kind), event_count = COALESCE(p.event_count, EXCLUDED.event_count),
    pages = COALESCE(p.pages, EXCLUDED.pages), parse_seconds = COALESCE(p.parse_seconds, EXCLUDED.parse_seconds),
    error_reason = EXCLUDED.error_reason, error_code = EXCLUDED.error_code,
    error_message = EXCLUDED.error_message,
    enqueued_at = EXCLUDED.enqueued_at, started_at = EXCLUDED.started_at,
    completed_at = EXCLUDED.completed_at, updated_at = now()
WHERE (p.transition_seq, p.attempts) < (EXCLUDED.transition_seq, EXCLUDED.attempts)
"""

_TRANSITION = """
INSERT INTO parse_job_transitions (job_uid, seq, phase, reason, message, at)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_uid, seq) DO NOTHING
"""

_RESULT = """
UPDATE parse_jobs SET kind = %s, event_count = %s, pages = %s, parse_seconds = %s, updated_at = now()
WHERE uid = %s
"""


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _values(r: ParseJobRow) -> tuple:
    return (r.uid, r.namespace, r.name, r.tenant, r.priority, r.schedule_type, r.source_bucket,
            r.source_key, r.phase, r.seq, r.attempts, r.job_name, r.kind, r.event_count, r.pages,
            r.parse_seconds, r.error_reason, r.error_code, r.error_message, _ts(r.enqueued_at),
            _ts(r.started_at), _ts(r.completed_at))


class Sessions:
    """At most `size` kept Postgres sessions, each used by one call at a time; one that
    failed is closed, never reused. A session is opened on demand, so while Postgres is
    away a call fails as fast as the connect does (refused at once, a black hole after
    connect_timeout) and the backoff alone decides when to try again (a pool that keeps
    reconnecting in the background would make each call wait for it instead)."""

    def __init__(self, dsn: str, size: int, options: dict[str, Any]):
        self.dsn, self.options = dsn, options
        self.idle: list[psycopg.AsyncConnection] = []
        self.slots = asyncio.Semaphore(size)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None or conn.closed or conn.broken:
                conn = await psycopg.AsyncConnection.connect(self.dsn, **self.options)
            try:
                yield conn
            except BaseException:
                await _close(conn)
                raise
            self.idle.append(conn)

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            await _close(conn)


async def _close(conn: psycopg.AsyncConnection) -> None:
    """Close, bounded: a connection to a black hole must not hang its closing either."""
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except BaseException as exc:  # noqa: BLE001 - it is gone either way
        if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():
            raise


class RecordStore:
    def __init__(self, dsn: str, clock: Callable[[], float] = time.monotonic, pool_size: int = POOL_SIZE,
                 call_timeout: float = CALL_TIMEOUT_SECONDS):
        self.dsn = dsn
        self.backoff = Backoff("Postgres", clock)
        self.call_timeout = call_timeout
        options = dict(SESSION_OPTIONS)
        if "application_name" in conninfo.conninfo_to_dict(dsn):
            del options["application_name"]  # the DSN's own wins
        self.sessions = Sessions(dsn, pool_size, options)

    async def close(self) -> None:
        await self.sessions.close()

    async def _call(self, work: Callable[[psycopg.AsyncConnection], Awaitable[None]]) -> None:
        """`work` in one transaction on a pooled session, under the backoff and the
        deadline; Unavailable when Postgres cannot be reached."""
        self.backoff.check()
        try:
            await asyncio.wait_for(self._in_transaction(work), self.call_timeout)
        except UNAVAILABLE as exc:
            reason = db.scrub(str(exc).strip() or f"{type(exc).__name__}: no answer", self.dsn)[:200]
            self.backoff.failed(reason)
            raise Unavailable(f"Postgres unavailable: {reason}") from None
        except psycopg.errors.UndefinedTable:
            self.backoff.failed("no schema")
            raise Unavailable("the database has no schedgen schema: run `schedgen db migrate`") from None
        self.backoff.succeeded()

    async def _in_transaction(self, work: Callable[[psycopg.AsyncConnection], Awaitable[None]]) -> None:
        async with self.sessions.session() as conn:
            async with conn.transaction():
                await work(conn)

    async def sync(self, rows: Sequence[ParseJobRow]) -> None:
        """Bring `rows` and their transitions up to date, in one transaction."""
        if rows:
            await self._call(lambda conn: _upsert(conn, rows))

    async def write_result(self, row: ParseJobRow, result: ParseResult) -> None:
        """The row, the result columns and the events of a checked result, atomically;
        safe to repeat (the events are replaced)."""
        async def work(conn: psycopg.AsyncConnection) -> None:
            await _upsert(conn, [row])
            await conn.execute(_RESULT, (result.kind.value, len(result.events), result.pages, result.seconds,
                                         row.uid))
            await conn.execute("DELETE FROM events WHERE job_uid = %s", (row.uid,))
            job_uid = uuid.UUID(row.uid)
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY events ({', '.join(db.EVENT_COLUMNS)}) FROM STDIN") as copy:
                    copy.set_types(list(db.EVENT_TYPES))
                    for i, event in enumerate(result.events):
                        await copy.write_row(db.event_row(job_uid, i, event))

        await self._call(work)


async def _upsert(conn: psycopg.AsyncConnection, rows: Sequence[ParseJobRow]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(_UPSERT, [_values(r) for r in rows])
        transitions = [(r.uid, t.seq, t.phase, t.reason, t.message[:2000], _ts(t.at)) for r in rows for t in r.history]
        if transitions:
            await cur.executemany(_TRANSITION, transitions)
