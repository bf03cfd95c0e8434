"""The API's connection pool against the real Postgres (no cluster): bounded, fails fast
into `DatabaseUnavailable` (503), and replaces connections Postgres dropped."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from schedgen.api.backends import postgres as api_db
from schedgen.errors import ConfigurationError, DatabaseUnavailable


@contextlib.asynccontextmanager
async def opened(dsn: str, size: int):
    pool = api_db.new_pool(dsn, size)
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


def test_pool_is_bounded(postgres):
    async def main():
        async with opened(postgres.dsn, 2) as pool:
            async with api_db.connection(pool) as a, api_db.connection(pool) as b:
                assert a is not b
                t0 = time.monotonic()
                with pytest.raises(DatabaseUnavailable, match="pool exhausted"):
                    async with api_db.connection(pool, timeout=0.5):
                        pass
                assert 0.4 < time.monotonic() - t0 < 3
            async with api_db.connection(pool) as again:  # released ones are reused
                assert again in (a, b)

    asyncio.run(main())


def test_connections_are_autocommit_with_a_statement_timeout(postgres):
    async def main():
        async with opened(postgres.dsn, 1) as pool:
            async with api_db.connection(pool) as conn:
                assert conn.autocommit
                assert await (await conn.execute("SHOW statement_timeout")).fetchone() == ("5s",)
            with pytest.raises(DatabaseUnavailable, match="statement timed out"):
                async with api_db.connection(pool) as conn:
                    await conn.execute("SET statement_timeout = 100")  # shorter, to keep the test quick
                    await conn.execute("SELECT pg_sleep(2)")
            await api_db.ping(pool)  # the pool still serves

    asyncio.run(main())


def test_postgres_down_fails_fast(closed_port):
    async def main():
        async with opened(f"postgresql://postgres@127.0.0.1:{closed_port}/schedgen", 2) as pool:
            t0 = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match=f"127.0.0.1:{closed_port}"):
                await api_db.ping(pool)
            assert time.monotonic() - t0 < api_db.PING_TIMEOUT + 1

    asyncio.run(main())


def test_dropped_connections_are_replaced(postgres, pg_conn):
    async def main():
        async with opened(postgres.dsn, 1) as pool:
            async with api_db.connection(pool) as conn:
                pid = conn.info.backend_pid
            pg_conn.execute("SELECT pg_terminate_backend(%s)", (pid,))  # Postgres restarted, say
            async with api_db.connection(pool) as conn:
                assert conn.info.backend_pid != pid
                assert await (await conn.execute("SELECT 1")).fetchone() == (1,)

    asyncio.run(main())


def test_no_dsn_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="SCHEDGEN_DATABASE_URL"):
        api_db.new_pool("", 4)
