"""Least privilege (migration 0004): login users in the group roles `schedgen_operator`
and `schedgen_api` connect to a freshly migrated database and can do their own work,
and only that. Everything is checked by real statements against the real Postgres."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import psycopg.errors
import pytest
from psycopg import conninfo

from records_testlib import lifecycle, new_parsejob, read_events
from schedgen import db
from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator.record_store import RecordStore
from schedgen.operator.rows import row_of
from schedgen.parsejob import ParseJob

DENIED = psycopg.errors.InsufficientPrivilege
EVENT = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
              end_time="09:20", venues=("IT 4-1",), campus="HATFIELD")


@pytest.fixture
def roles(empty_database):
    """The database migrated by its owner (the superuser), and one login user per role
    (as a deployment creates them: `CREATE USER ... IN ROLE ...`); their DSNs."""
    with db.connect(empty_database) as conn:
        db.migrate(conn)
    suffix = uuid.uuid4().hex[:8]
    users = {"operator": f"op_{suffix}", "api": f"api_{suffix}", "nobody": f"nobody_{suffix}"}
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(f'CREATE USER "{users["operator"]}" IN ROLE schedgen_operator')
        conn.execute(f'CREATE USER "{users["api"]}" IN ROLE schedgen_api')
        conn.execute(f'CREATE USER "{users["nobody"]}"')
    yield {role: conninfo.make_conninfo(empty_database, user=user) for role, user in users.items()} | {
        "owner": empty_database}
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                     (list(users.values()),))
        for user in users.values():
            conn.execute(f'DROP USER "{user}"')


def job_ref() -> ParseJob:
    """A Running ParseJob of tenant t1."""
    return lifecycle(new_parsejob(tenant="t1"))[1]


def write_events(dsn: str, pj: ParseJob) -> None:
    """The operator's own code path (RecordStore.write_result): row and events."""
    async def go():
        store = RecordStore(dsn)
        try:
            await store.write_result(row_of(pj, "b"), ParseResult(ScheduleKind.LECTURE, [EVENT], pages=1, seconds=0.1))
        finally:
            await store.close()
    asyncio.run(go())


def denied(dsn: str, sql: str, params: tuple = ()) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(sql, params)
        except DENIED:
            return True
    return False


def operator_records(dsn: str) -> str:
    """The operator's own code path (RecordStore.sync) writes a ParseJob's row and history."""
    pj = job_ref()

    async def go():
        store = RecordStore(dsn)
        try:
            await store.sync([row_of(pj, "b")])
        finally:
            await store.close()
    asyncio.run(go())
    return pj.uid


def test_roles_exist_nologin_and_migration_is_idempotent(roles):
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        found = dict(conn.execute("SELECT rolname, rolcanlogin FROM pg_roles"
                                  " WHERE rolname IN ('schedgen_operator', 'schedgen_api')").fetchall())
        assert found == {"schedgen_operator": False, "schedgen_api": False}
        four = next(m for m in db.migrations() if m.version == 4)
        conn.execute(four.sql)  # roles already there (cluster-wide): re-running is harmless


def test_operator_writes_records_and_events_but_not_api_state(roles):
    dsn = roles["operator"]
    uid = operator_records(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT phase FROM parse_jobs WHERE uid = %s", (uid,)).fetchone() == ("Running",)
        assert conn.execute("SELECT count(*) FROM parse_job_transitions WHERE job_uid = %s",
                            (uid,)).fetchone() == (2,)
    # The events of a job (the operator is their writer).
    ref = job_ref()
    write_events(dsn, ref)
    with psycopg.connect(dsn) as conn:
        assert [e.module for e in read_events(conn, ref.uid)] == ["COS 214"]
    # Not the API's tables, no deletion of records, no history rewrite, no DDL.
    assert denied(dsn, "SELECT * FROM api_keys")
    assert denied(dsn, "SELECT * FROM idempotency_keys")
    assert denied(dsn, "INSERT INTO api_keys (key_hash, key_prefix, tenant) VALUES ('h', 'p', 't')")
    assert denied(dsn, "DELETE FROM parse_jobs WHERE uid = %s", (uid,))
    assert denied(dsn, "UPDATE parse_job_transitions SET phase = 'Failed' WHERE job_uid = %s", (uid,))
    assert denied(dsn, "DELETE FROM parse_job_transitions")
    assert denied(dsn, "CREATE TABLE sneaky (x int)")
    assert denied(dsn, "DROP TABLE events")
    assert denied(dsn, "INSERT INTO schema_migrations (version, name) VALUES (99, 'x')")


def test_api_reads_records_and_events_but_cannot_write_them(roles):
    ref = job_ref()
    write_events(roles["owner"], ref)
    dsn = roles["api"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert [e.module for e in read_events(conn, ref.uid)] == ["COS 214"]
        assert conn.execute("SELECT phase FROM parse_jobs WHERE uid = %s", (ref.uid,)).fetchone() == ("Running",)
        conn.execute("SELECT count(*) FROM parse_job_transitions").fetchone()
        # Its own state: API keys, idempotency keys, rate-limit windows.
        conn.execute("INSERT INTO api_keys (key_hash, key_prefix, tenant) VALUES ('h1', 'p1', 't1')")
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = 'h1'")
        conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
                     " VALUES ('t1', 'k', 'c', 'ns', 'j')")
        conn.execute("DELETE FROM idempotency_keys WHERE key_hash = 'k'")
        conn.execute("INSERT INTO rate_limit_windows VALUES ('c', 'upload', now(), 1)")
        conn.execute("DELETE FROM rate_limit_windows")
    # The events and the records are the operator's: the API writes none of them.
    with pytest.raises(DENIED):
        write_events(dsn, job_ref())
    assert denied(dsn, "INSERT INTO events (job_uid, ordinal, module, activity) VALUES (%s, 99, 'm', 'a')",
                  (ref.uid,))
    assert denied(dsn, "UPDATE events SET module = 'x' WHERE job_uid = %s", (ref.uid,))
    assert denied(dsn, "DELETE FROM events WHERE job_uid = %s", (ref.uid,))
    assert denied(dsn, "DELETE FROM erased_jobs")
    assert denied(dsn, "INSERT INTO erased_jobs (uid) VALUES (gen_random_uuid())")
    assert denied(dsn, "DELETE FROM calendar_feeds")
    assert denied(dsn, "UPDATE parse_jobs SET phase = 'Succeeded' WHERE uid = %s", (ref.uid,))
    assert denied(dsn, "DELETE FROM parse_jobs WHERE uid = %s", (ref.uid,))
    assert denied(dsn, "INSERT INTO parse_job_transitions VALUES (%s, 9, 'Failed', null, null, now())",
                  (ref.uid,))
    assert denied(dsn, "DELETE FROM api_keys")
    assert denied(dsn, "CREATE TABLE sneaky (x int)")
    assert denied(dsn, "TRUNCATE rate_limit_windows")
    # The operator's role is not the API's: it cannot write the operator's records either way.
    with pytest.raises(DENIED):
        operator_records(dsn)


def test_a_user_in_no_role_sees_nothing(roles):
    dsn = roles["nobody"]
    for table in ("parse_jobs", "parse_job_transitions", "events", "api_keys", "idempotency_keys",
                  "rate_limit_windows", "schema_migrations"):
        assert denied(dsn, f"SELECT * FROM {table}"), table
    assert denied(dsn, "CREATE TABLE sneaky (x int)")


def test_api_erases_one_job_only_through_the_function(roles):
    """Migration 0006: the API deletes a job's rows only by `schedgen_erase_job` (one job,
    its own tenant's), and the tombstone turns the operator's late writes into no-ops."""
    ref, other = job_ref(), job_ref()
    for r in (ref, other):
        write_events(roles["owner"], r)
    api = roles["api"]
    with psycopg.connect(api, autocommit=True) as conn:
        conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name, job_uid)"
                     " VALUES ('t1', 'k1', 'c', 'ns', %s, %s)", (ref.name, ref.uid))
        conn.execute("INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid)"
                     " VALUES ('h', 't1', 'ns', %s, %s)", (ref.name, ref.uid))
        with pytest.raises(DENIED):  # another tenant's job: refused by the function itself
            conn.execute("SELECT schedgen_erase_job(%s, 'ns', %s, 'someone-else')", (ref.uid, ref.name))
        assert conn.execute("SELECT schedgen_erase_job(%s, 'ns', %s, 't1')",
                            (ref.uid, ref.name)).fetchone() == (1,)
        for table, column in (("parse_jobs", "uid"), ("events", "job_uid"), ("parse_job_transitions", "job_uid"),
                              ("idempotency_keys", "job_uid"), ("calendar_feeds", "job_uid")):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = %s", (ref.uid,)).fetchone() == (0,)
        # the other job is untouched
        assert conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (other.uid,)).fetchone() == (1,)
    # nobody else may call it
    assert denied(roles["nobody"], "SELECT schedgen_erase_job(%s, 'ns', 'x', 't1')", (other.uid,))
    assert denied(roles["operator"], "SELECT schedgen_erase_job(%s, 'ns', 'x', 't1')", (other.uid,))
    # a late write of the operator for the erased uid (its events, its row) leaves nothing
    write_events(roles["operator"], ref)
    with psycopg.connect(roles["operator"], autocommit=True) as conn:  # dropped, not an FK error
        conn.execute("INSERT INTO parse_job_transitions VALUES (%s, 9, 'Failed', null, null, now())", (ref.uid,))
        assert conn.execute("SELECT count(*) FROM parse_job_transitions WHERE job_uid = %s",
                            (ref.uid,)).fetchone() == (0,)
    late = operator_records(roles["operator"])  # a new uid is recorded as usual
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM parse_jobs WHERE uid = %s", (ref.uid,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (ref.uid,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM parse_jobs WHERE uid = %s", (late,)).fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM erased_jobs WHERE uid = %s", (ref.uid,)).fetchone() == (1,)
