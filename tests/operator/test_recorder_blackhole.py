"""A black-holed Postgres (connections accepted, nothing ever answered) must not hang
the recorder: every step and every record_now ends within its deadline, the records
loop backs off and retries, and the rows catch up once the database answers again."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.parse
import uuid

import pytest
from prometheus_client import REGISTRY

from schedgen.operator import status as st
from schedgen.operator.config import OperatorConfig
from schedgen.operator.recorder import PostgresUnavailable, Recorder

CFG = OperatorConfig(default_bucket="bucket-x")
STEP_TIMEOUT = 3.0
# After the step's deadline psycopg tries to cancel the query on the server (a black
# hole too: its own ~10 s timeouts), then closes the connection.
BOUND = STEP_TIMEOUT + 12.0


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


def body() -> dict:
    b = {"metadata": {"name": "pj", "namespace": "ns", "uid": str(uuid.uuid4()), "generation": 1},
         "spec": {"source": {"s3": {"key": "k.pdf"}}, "tenant": "t"}, "status": {}}
    q = st.merged(b, st.queued(b))
    return st.merged(q, st.running(q, "pj-1"))


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


def test_a_black_holed_session_times_out_backs_off_and_catches_up(hole, pg_conn):
    h, dsn = hole
    loop = asyncio.new_event_loop()
    recorder = Recorder(dsn, CFG, interval=0.5)
    recorder.step_timeout = STEP_TIMEOUT
    first, second = body(), body()
    assert loop.run_until_complete(recorder.step([first])) == 0.5  # connected through the relay
    assert phase(pg_conn, first["metadata"]["uid"]) == "Running"

    h.open = False  # the established session goes silent mid-flight
    before, t0 = errors(), time.monotonic()
    assert loop.run_until_complete(recorder.step([first, second])) == 1.0  # failed: back off
    assert time.monotonic() - t0 < BOUND  # its deadline + psycopg's bounded cancel attempt, not forever
    assert errors() == before + 1 and recorder.conn is None
    # New sessions are accepted and never answered: the connect is bounded too.
    t0 = time.monotonic()
    assert loop.run_until_complete(recorder.step([first, second])) == 2.0
    assert time.monotonic() - t0 < BOUND
    t0 = time.monotonic()
    with pytest.raises(PostgresUnavailable):  # the finalizer's write: bounded, then "retry"
        loop.run_until_complete(recorder.record_now(second))
    assert time.monotonic() - t0 < BOUND
    assert phase(pg_conn, second["metadata"]["uid"]) is None

    h.open = True  # it answers again: the next step reconnects and catches up
    assert loop.run_until_complete(recorder.step([first, second])) == 0.5
    assert phase(pg_conn, second["metadata"]["uid"]) == "Running"
    loop.run_until_complete(recorder.disconnect())
    loop.close()


def test_an_events_write_to_a_silent_database_ends_at_its_deadline(hole, pg_conn):
    """The scheduler's events write (results.py: db.write_events in a thread) is bounded
    by db.deadline: the session goes silent mid-transaction, the call ends with
    DatabaseUnavailable (retried next tick), nothing half-written."""
    from schedgen import db
    from schedgen.errors import DatabaseUnavailable
    from schedgen.models import Event, ParseResult, ScheduleKind

    h, dsn = hole
    uid = str(uuid.uuid4())
    ref = db.JobRef(uid=uid, namespace="ns", name="pj", tenant="t", source_bucket="b", source_key="k.pdf")
    result = ParseResult(ScheduleKind.LECTURE, [Event(module="COS 214", activity="L1")], pages=1)
    with db.connect(dsn) as conn:
        h.open = False  # connected, then silent
        t0 = time.monotonic()
        with pytest.raises(DatabaseUnavailable), db.deadline(conn, 2.0):
            db.write_events(conn, ref, result)
        assert 2.0 <= time.monotonic() - t0 < 6.0
    assert phase(pg_conn, uid) is None
    h.open = True
    with db.connect(dsn) as conn, db.deadline(conn, 5.0):  # answered in time: the timer never fires
        db.write_events(conn, ref, result)
    assert phase(pg_conn, uid) == "Queued"
    assert pg_conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (uid,)).fetchone() == (1,)
