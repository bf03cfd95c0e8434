"""A small bounded pool of async psycopg connections (psycopg_pool is not a dependency).

Connections are opened lazily up to `size`; a broken one is discarded. Every failure to
reach Postgres becomes `DatabaseUnavailable` (mapped to 503), with a short timeout on
both connecting and waiting for a free connection. Statements run with a server-side
`statement_timeout` so a stuck query cannot hold a request past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg

from psycopg import conninfo

from schedgen.db import describe_dsn
from schedgen.errors import ConfigurationError, DatabaseUnavailable


class AsyncPool:
    def __init__(self, dsn: str, size: int = 10, connect_timeout: float = 3.0,
                 acquire_timeout: float = 5.0, statement_timeout_ms: int = 5000):
        if not dsn:
            raise ConfigurationError("no database DSN given (set SCHEDGEN_DATABASE_URL)")
        self.dsn = dsn
        self.size = max(1, size)
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self._idle: list[psycopg.AsyncConnection] = []
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False  # never set: close() only drops idle connections

    def _semaphore(self) -> asyncio.Semaphore:
        # Connections and the semaphore belong to one event loop; a host that runs the
        # app on a new loop (some test transports) gets fresh ones.
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._loop = loop
            self._sem = asyncio.Semaphore(self.size)
            self._idle = []
        return self._sem

    async def _open(self) -> psycopg.AsyncConnection:
        try:
            return await asyncio.wait_for(psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout)),
                options=f"-c statement_timeout={self.statement_timeout_ms}"),
                timeout=self.connect_timeout + 1)
        except (psycopg.OperationalError, OSError, asyncio.TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to Postgres at {describe_dsn(self.dsn)}: {_scrub(str(exc) or 'timeout', self.dsn)}"
            ) from None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        sem = self._semaphore()
        try:
            await asyncio.wait_for(sem.acquire(), self.acquire_timeout)
        except asyncio.TimeoutError:
            raise DatabaseUnavailable("no free Postgres connection (pool exhausted)") from None
        conn = None
        try:
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if candidate.closed or candidate.broken:
                    continue
                conn = candidate
            if conn is None:
                conn = await self._open()
            try:
                yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                await _close_quietly(conn)
                conn = None
                if isinstance(exc, psycopg.errors.QueryCanceled):
                    raise DatabaseUnavailable("a Postgres statement timed out") from None
                raise DatabaseUnavailable(f"lost the Postgres connection: {_scrub(str(exc), self.dsn)}") from None
            except BaseException:
                # cancelled or failed mid-statement: the connection state is unknown
                if conn is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await _close_quietly(conn)
                    conn = None
                raise
        finally:
            if conn is not None:
                if conn.closed or conn.broken or self._closed or self._loop is not asyncio.get_running_loop():
                    await _close_quietly(conn)
                else:
                    self._idle.append(conn)
            sem.release()

    async def close(self) -> None:
        """Close the idle connections (the pool opens new ones if used again)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close_quietly(conn)


def _scrub(message: str, dsn: str) -> str:
    """One line, without the DSN's password."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    message = " ".join(str(message).split())[:300]
    return message.replace(str(password), "***") if password else message


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # noqa: BLE001
        pass
