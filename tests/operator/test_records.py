"""Postgres catch-up against the real Postgres fixture: idempotent, never backwards;
the Recorder connects, catches up, survives the database going away and backs off."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from prometheus_client import REGISTRY

from schedgen.operator import records
from schedgen.operator.recorder import PostgresUnavailable, RecordBook, Recorder
from schedgen.operator import status as st
from schedgen.operator.config import OperatorConfig
from schedgen.operator.outcome import Outcome

CFG = OperatorConfig(default_bucket="bucket-x")


def new_body() -> dict:
    return {"metadata": {"name": "pj", "namespace": "ns", "uid": str(uuid.uuid4()), "generation": 1},
            "spec": {"source": {"s3": {"key": "k.pdf"}}, "priority": "high", "tenant": "t"}, "status": {}}


def lifecycle(b: dict) -> list[dict]:
    q = st.merged(b, st.queued(b))
    r = st.merged(q, st.running(q, "pj-1"))
    done = st.merged(r, st.finished(r, Outcome("Succeeded", "Completed", "ok",
                                                result={"kind": "lecture", "events": 30, "pages": 2,
                                                        "parseSeconds": 0.4}, attempts=1)))
    return [q, r, done]


def run_sync(dsn: str, bodies: list[dict]) -> None:
    async def go():
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await records.sync(conn, [records.row_of(b, CFG) for b in bodies])
    asyncio.run(go())


def row(pg_conn, uid):
    return pg_conn.execute("SELECT phase, transition_seq, attempts, kind, event_count, source_bucket, tenant,"
                           " priority, job_name FROM parse_jobs WHERE uid = %s", (uid,)).fetchone()


def transitions(pg_conn, uid):
    return pg_conn.execute("SELECT seq, phase FROM parse_job_transitions WHERE job_uid = %s ORDER BY seq",
                           (uid,)).fetchall()


def test_catch_up_after_outage_records_every_transition_once(postgres, pg_conn):
    b = new_body()
    q, r, done = lifecycle(b)
    run_sync(postgres.dsn, [done])  # the database was down for Queued and Running
    uid = b["metadata"]["uid"]
    assert row(pg_conn, uid) == ("Succeeded", 3, 1, "lecture", 30, "bucket-x", "t", "high", "pj-1")
    assert transitions(pg_conn, uid) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
    run_sync(postgres.dsn, [done, done])  # replays change nothing
    run_sync(postgres.dsn, [q])  # a stale view never goes backwards
    assert row(pg_conn, uid)[0:2] == ("Succeeded", 3)
    assert len(transitions(pg_conn, uid)) == 3


def test_step_by_step_and_runner_columns_win(postgres, pg_conn):
    b = new_body()
    uid = b["metadata"]["uid"]
    q, r, done = lifecycle(b)
    run_sync(postgres.dsn, [q])
    assert row(pg_conn, uid)[0:2] == ("Queued", 1)
    run_sync(postgres.dsn, [r])
    # the runner wrote its own result columns meanwhile
    pg_conn.execute("UPDATE parse_jobs SET kind = 'test', event_count = 12 WHERE uid = %s", (uid,))
    run_sync(postgres.dsn, [done])
    assert row(pg_conn, uid)[0:5] == ("Succeeded", 3, 1, "test", 12)


def test_row_created_first_by_the_runner_is_adopted(postgres, pg_conn):
    b = new_body()
    uid = b["metadata"]["uid"]
    pg_conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key) VALUES (%s,'ns','pj','t','k.pdf')",
                    (uid,))
    q, r, _ = lifecycle(b)
    run_sync(postgres.dsn, [r])
    assert row(pg_conn, uid)[0:2] == ("Running", 2)
    assert transitions(pg_conn, uid) == [(1, "Queued"), (2, "Running")]


def test_attempts_update_without_a_phase_change(postgres, pg_conn):
    b = new_body()
    uid = b["metadata"]["uid"]
    _, r, _ = lifecycle(b)
    run_sync(postgres.dsn, [r])
    r2 = {**r, "status": {**r["status"], "attempts": 2}}
    run_sync(postgres.dsn, [r2])
    assert row(pg_conn, uid)[2] == 2


def test_no_record_without_status():
    assert records.row_of(new_body(), CFG) is None


def test_error_code_has_its_own_column(postgres, pg_conn):
    b = new_body()
    q = st.merged(b, st.queued(b))
    r = st.merged(q, st.running(q, "pj-1"))
    failed = st.merged(r, st.finished(r, Outcome("Failed", "InvalidPDF", "no table on any page",
                                                  code="NoTables", attempts=1)))
    run_sync(postgres.dsn, [failed])
    got = pg_conn.execute("SELECT error_reason, error_code, error_message FROM parse_jobs WHERE uid = %s",
                          (b["metadata"]["uid"],)).fetchone()
    assert got == ("InvalidPDF", "NoTables", "no table on any page")


def test_record_book():
    b = new_body()
    q, r, done = (records.row_of(x, CFG) for x in lifecycle(b))
    book = RecordBook()
    assert book.behind([q]) == [q]
    book.mark([r])
    assert book.behind([q, r]) == [] and book.behind([done]) == [done]
    book.forget_except(set())
    assert book.behind([q]) == [q]


# --- the Recorder: one connection, catch-up, outages ------------------------------------


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def errors() -> float:
    return REGISTRY.get_sample_value("schedgen_records_errors_total") or 0.0


def test_recorder_connects_and_catches_up_only_what_is_behind(postgres, pg_conn, loop):
    recorder = Recorder(postgres.dsn, CFG, interval=0.5)
    a, b = new_body(), new_body()
    (qa, _, done_a), (qb, rb, _) = lifecycle(a), lifecycle(b)
    assert loop.run_until_complete(recorder.step([done_a, qb])) == 0.5
    assert recorder.conn is not None and not recorder.conn.closed
    assert row(pg_conn, a["metadata"]["uid"])[0:2] == ("Succeeded", 3)
    assert row(pg_conn, b["metadata"]["uid"])[0:2] == ("Queued", 1)
    # What the book knows to be written is not written again ...
    pg_conn.execute("UPDATE parse_jobs SET tenant = 'edited' WHERE uid = %s", (a["metadata"]["uid"],))
    loop.run_until_complete(recorder.step([done_a, rb]))
    assert row(pg_conn, a["metadata"]["uid"])[6] == "edited"
    assert row(pg_conn, b["metadata"]["uid"])[0:2] == ("Running", 2)
    loop.run_until_complete(recorder.disconnect())
    assert recorder.conn is None


def test_recorder_reconnects_after_its_backend_is_terminated_and_replays(postgres, pg_conn, loop):
    recorder = Recorder(postgres.dsn, CFG, interval=0.5)
    a, b = new_body(), new_body()
    (_, _, done_a), (qb, rb, _) = lifecycle(a), lifecycle(b)
    loop.run_until_complete(recorder.step([done_a, qb]))
    pid = recorder.conn.info.backend_pid
    assert pg_conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    deadline = time.monotonic() + 10
    while pg_conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, "the backend did not go away"
        time.sleep(0.05)
    # meanwhile a's row was lost: only a replay of everything brings it back
    pg_conn.execute("DELETE FROM parse_job_transitions WHERE job_uid = %s", (a["metadata"]["uid"],))
    pg_conn.execute("DELETE FROM parse_jobs WHERE uid = %s", (a["metadata"]["uid"],))
    before = errors()
    assert loop.run_until_complete(recorder.step([done_a, rb])) == 1.0  # failed: back off
    assert errors() == before + 1 and recorder.conn is None
    assert row(pg_conn, b["metadata"]["uid"])[0] == "Queued"
    assert loop.run_until_complete(recorder.step([done_a, rb])) == 0.5  # reconnected
    assert recorder.conn.info.backend_pid != pid
    assert row(pg_conn, a["metadata"]["uid"])[0:2] == ("Succeeded", 3)
    assert transitions(pg_conn, a["metadata"]["uid"]) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
    assert row(pg_conn, b["metadata"]["uid"])[0:2] == ("Running", 2)
    loop.run_until_complete(recorder.disconnect())


def test_recorder_backs_off_while_postgres_is_away(postgres, pg_conn, closed_port, loop):
    recorder = Recorder(f"postgresql://schedgen@127.0.0.1:{closed_port}/schedgen", CFG, interval=0.5)
    b = new_body()
    q, _, _ = lifecycle(b)
    before = errors()
    delays = [loop.run_until_complete(recorder.step([q])) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0] and errors() == before + 6
    recorder.dsn = postgres.dsn  # Postgres is back
    assert loop.run_until_complete(recorder.step([q])) == 0.5
    assert row(pg_conn, b["metadata"]["uid"])[0:2] == ("Queued", 1)
    loop.run_until_complete(recorder.disconnect())


def test_record_now_writes_the_final_row_or_says_it_could_not(postgres, pg_conn, closed_port, loop):
    b = new_body()
    _, _, done = lifecycle(b)
    recorder = Recorder(postgres.dsn, CFG)
    written = loop.run_until_complete(recorder.record_now(done))
    assert (written.phase, written.seq) == ("Succeeded", 3)
    assert row(pg_conn, b["metadata"]["uid"])[0:2] == ("Succeeded", 3)
    assert recorder.book.behind([written]) == []  # the daemon will not write it again
    assert loop.run_until_complete(recorder.record_now(new_body())) is None  # no status yet: no row
    away = Recorder(f"postgresql://schedgen@127.0.0.1:{closed_port}/schedgen", CFG)
    with pytest.raises(PostgresUnavailable):
        loop.run_until_complete(away.record_now(done))
