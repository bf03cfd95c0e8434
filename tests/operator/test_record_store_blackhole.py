"""A black-holed Postgres (connections accepted, nothing ever answered) must not hang
the record store: every call ends within its deadline, the catch-up backs off and
retries, and the rows catch up once the database answers again."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
import uuid

import pytest
from prometheus_client import REGISTRY

from records_testlib import lifecycle, new_parsejob
from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator.backoff import Unavailable
from schedgen.operator.record_store import RecordStore
from schedgen.operator.row_catchup import RowCatchUp
from schedgen.operator.rows import row_of
from schedgen.parsejob import ParseJob

CALL_TIMEOUT = 3.0
# After the call's deadline psycopg tries to cancel the query on the server (a black
# hole too: its own ~10 s timeouts), then closes the connection.
BOUND = CALL_TIMEOUT + 12.0


class Hole:
    """A local TCP port relaying to Postgres while `open`; when not, it still accepts
    connections and swallows what it reads, answering nothing (a black hole, not a
    refused or reset connection)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.socks.append(client)
            upstream = socket.create_connection(self.target)
            self.socks.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.open:
                try:
                    dst.sendall(data)
                except OSError:
                    return
            # closed: swallowed, never answered, the connection stays up

    def close(self) -> None:
        self.sock.close()
        for s in self.socks:
            s.close()


def running() -> ParseJob:
    return lifecycle(new_parsejob())[1]


def errors() -> float:
    return REGISTRY.get_sample_value("schedgen_records_errors_total") or 0.0


@pytest.fixture
def hole(postgres):
    parts = urllib.parse.urlsplit(postgres.dsn)
    h = Hole((parts.hostname, parts.port))
    yield h, postgres.dsn.replace(f":{parts.port}/", f":{h.port}/")
    h.close()


def phase(pg_conn, uid):
    found = pg_conn.execute("SELECT phase FROM parse_jobs WHERE uid = %s", (uid,)).fetchone()
    return found[0] if found else None


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_black_holed_session_times_out_backs_off_and_catches_up(hole, pg_conn):
    h, dsn = hole
    loop = asyncio.new_event_loop()
    clock = Clock()
    store = RecordStore(dsn, clock=clock, call_timeout=CALL_TIMEOUT, pool_size=1)
    catchup = RowCatchUp(store, "bucket-x", interval=0.5)
    first, second = running(), running()
    assert loop.run_until_complete(catchup.step([first])) == 0.5  # connected through the relay
    assert phase(pg_conn, first.uid) == "Running"

    h.open = False  # the established session goes silent mid-flight
    before, t0 = errors(), time.monotonic()
    assert loop.run_until_complete(catchup.step([first, second])) == 1.0  # failed: back off
    assert time.monotonic() - t0 < BOUND  # its deadline + psycopg's bounded cancel attempt, not forever
    assert errors() == before + 1
    # New sessions are accepted and never answered: the connect is bounded too.
    clock.now = store.backoff.until
    t0 = time.monotonic()
    assert loop.run_until_complete(catchup.step([first, second])) == 2.0
    assert time.monotonic() - t0 < BOUND
    clock.now = store.backoff.until
    t0 = time.monotonic()
    with pytest.raises(Unavailable):  # the finalizer's write: bounded, then "retry"
        loop.run_until_complete(catchup.record_now(second))
    assert time.monotonic() - t0 < BOUND
    assert phase(pg_conn, second.uid) is None

    h.open = True  # it answers again: the next step reconnects and catches up
    clock.now = store.backoff.until
    assert loop.run_until_complete(catchup.step([first, second])) == 0.5
    assert phase(pg_conn, second.uid) == "Running"
    loop.run_until_complete(store.close())
    loop.close()


def test_an_events_write_to_a_silent_database_ends_at_its_deadline(hole, pg_conn):
    """The Job reconciler's events write: the session goes silent mid-transaction, the
    call ends with Unavailable (retried later), nothing half-written."""
    h, dsn = hole
    loop = asyncio.new_event_loop()
    clock = Clock()
    store = RecordStore(dsn, clock=clock, call_timeout=2.0, pool_size=1)
    warm = running()
    loop.run_until_complete(store.sync([row_of(warm, "b")]))  # the session is established
    pj = running()
    result = ParseResult(ScheduleKind.LECTURE, [Event(module="COS 214", activity="L1")], pages=1)
    h.open = False  # connected, then silent
    t0 = time.monotonic()
    with pytest.raises(Unavailable):
        loop.run_until_complete(store.write_result(row_of(pj, "b"), result))
    assert 2.0 <= time.monotonic() - t0 < BOUND
    assert phase(pg_conn, pj.uid) is None
    h.open = True
    clock.now = store.backoff.until
    loop.run_until_complete(store.write_result(row_of(pj, "b"), result))  # answered in time
    assert phase(pg_conn, pj.uid) == "Running"
    assert pg_conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (pj.uid,)).fetchone() == (1,)
    loop.run_until_complete(store.close())
    loop.close()
