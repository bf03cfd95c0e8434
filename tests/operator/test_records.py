"""Postgres catch-up against the real Postgres fixture: idempotent, never backwards."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from schedgen.operator import records
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


def test_record_book():
    b = new_body()
    q, r, done = (records.row_of(x, CFG) for x in lifecycle(b))
    book = records.RecordBook()
    assert book.behind([q]) == [q]
    book.mark([r])
    assert book.behind([q, r]) == [] and book.behind([done]) == [done]
    book.forget_except(set())
    assert book.behind([q]) == [q]


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
