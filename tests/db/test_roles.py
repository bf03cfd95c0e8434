"""Least privilege (migration 0004): login users in the group roles `schedgen_operator`
and `schedgen_api` connect to a freshly migrated database and can do their own work,
and only that. Everything is checked by real statements against the real Postgres, which
(as in production) lets a login in over TCP only with its own password (SCRAM-SHA-256)."""

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
API_EVENTS_QUERY = db.EVENTS_QUERY.replace(" FROM events ", " FROM api_events ")  # the API's view (0007)
EVENT = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
              end_time="09:20", venues=("IT 4-1",), campus="HATFIELD")


@pytest.fixture
def roles(empty_database, pg_login):
    """The database migrated by its owner (the superuser), and one login user per role
    (as a deployment creates them: `CREATE USER ... PASSWORD ... IN ROLE ...`); their DSNs,
    each with its own password (every TCP login is SCRAM-SHA-256, hack/devservices.py)."""
    with db.connect(empty_database) as conn:
        db.migrate(conn)
    return {"operator": pg_login("op", "schedgen_operator", empty_database),
            "api": pg_login("api", "schedgen_api", empty_database),
            "nobody": pg_login("nobody", None, empty_database),
            "owner": empty_database}


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
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('schedgen.tenant', 't1', true)")  # as every API transaction does (0007)
        rows = conn.execute(API_EVENTS_QUERY, (ref.uid,)).fetchall()
        assert [db.event_from_row(r).module for r in rows] == ["COS 214"]
        assert conn.execute("SELECT phase FROM parse_jobs WHERE uid = %s", (ref.uid,)).fetchone() == ("Running",)
        assert conn.execute("SELECT count(*) FROM parse_job_transitions").fetchone()[0] >= 1
        # Its own state: idempotency keys (its tenant's), rate-limit windows; API keys it reads (0007)
        conn.execute("SELECT count(*) FROM api_keys")
        conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
                     " VALUES ('t1', 'k', 'c', 'ns', 'j')")
        conn.execute("DELETE FROM idempotency_keys WHERE key_hash = 'k'")
        conn.execute("INSERT INTO rate_limit_windows VALUES ('c', 'upload', now(), 1)")
        conn.execute("DELETE FROM rate_limit_windows")
    assert denied(dsn, "SELECT * FROM events")  # only through the view api_events (migration 0007)
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
    for table in ("parse_jobs", "parse_job_transitions", "events", "api_events", "api_keys", "idempotency_keys",
                  "rate_limit_windows", "schema_migrations", "calendar_feeds"):
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
        with conn.transaction():  # the API writes its tenant's rows in its tenant's transaction (0007)
            conn.execute("SELECT set_config('schedgen.tenant', 't1', true)")
            conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name,"
                         " job_uid) VALUES ('t1', 'k1', 'c', 'ns', %s, %s)", (ref.name, ref.uid))
            conn.execute("INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid)"
                         " VALUES ('h', 't1', 'ns', %s, %s)", (ref.name, ref.uid))
        with pytest.raises(DENIED):  # another tenant's job: refused by the function itself
            conn.execute("SELECT schedgen_erase_job(%s, 'ns', %s, 'someone-else')", (ref.uid, ref.name))
        assert conn.execute("SELECT schedgen_erase_job(%s, 'ns', %s, 't1')",
                            (ref.uid, ref.name)).fetchone() == (1,)
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
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


# --- API keys: only schedgen_key_admin (migration 0007) ------------------------------------------


@pytest.fixture
def key_admin(roles, pg_login):
    """A login in role schedgen_key_admin (whoever issues API keys), with its own password."""
    return pg_login("keys", "schedgen_key_admin", roles["owner"])


def cli(*args: str, dsn: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SCHEDGEN_DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "schedgen.api", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def key_row(dsn: str, key: str) -> tuple | None:
    from schedgen.api.backends import postgres as api_db

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT tenant, admin, max_priority, revoked_at IS NOT NULL FROM api_keys"
                            " WHERE key_hash = %s", (api_db.hash_key(key),)).fetchone()


def test_the_api_role_cannot_mint_or_widen_keys(roles):
    api = roles["api"]
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        conn.execute("INSERT INTO api_keys (key_hash, key_prefix, tenant) VALUES ('h0', 'p0', 't1')")
    assert denied(api, "INSERT INTO api_keys (key_hash, key_prefix, tenant, admin) VALUES ('h1', 'p1', 't1', true)")
    assert denied(api, "UPDATE api_keys SET admin = true, max_priority = 'high' WHERE key_hash = 'h0'")
    assert denied(api, "UPDATE api_keys SET revoked_at = NULL")
    assert denied(api, "DELETE FROM api_keys")
    assert denied(api, "SELECT schedgen_add_key('h2', 'p2', 't1', null, true, 'high')")
    assert denied(api, "SELECT schedgen_add_key('h3', 'p3', 't1', null, false, 'normal')")
    assert denied(api, "SELECT schedgen_revoke_key('h0', 'p0')")
    with psycopg.connect(api, autocommit=True) as conn:  # what it does need: look keys up
        assert conn.execute("SELECT tenant, admin FROM api_keys WHERE key_hash = 'h0'").fetchone() == ("t1", False)


def test_add_key_works_for_key_admins_and_the_owner_only(roles, key_admin):
    made = cli("add-key", "--tenant", "team-k", "--admin", "--max-priority", "high", dsn=key_admin)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key_row(roles["owner"], key) == ("team-k", True, "high", False)
    owner = cli("add-key", "--tenant", "team-o", dsn=roles["owner"])
    assert owner.returncode == 0 and key_row(roles["owner"], owner.stdout.strip()) == ("team-o", False, "normal", False)
    for flags in (("--admin",), ()):
        refused = cli("add-key", "--tenant", "team-x", *flags, dsn=roles["api"])
        assert refused.returncode == 3 and "schedgen_key_admin" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM api_keys WHERE tenant = 'team-x'").fetchone() == (0,)
    refused = cli("revoke-key", key[:12], dsn=roles["api"])
    assert refused.returncode == 3 and key_row(roles["owner"], key)[3] is False
    assert cli("revoke-key", key[:12], dsn=key_admin).returncode == 0
    assert key_row(roles["owner"], key)[3] is True


ADD_KEY = "schedgen_add_key(text, text, text, text, boolean, text)"


def test_admin_keys_need_a_key_admin_even_where_execute_is_granted(roles):
    """Defence in depth: should EXECUTE ever be granted wider (self-service keys, say),
    the function itself still refuses admin keys to anyone outside schedgen_key_admin."""
    nobody = conninfo.conninfo_to_dict(roles["nobody"])["user"]
    owner = psycopg.connect(roles["owner"], autocommit=True)
    try:
        owner.execute(f'GRANT USAGE ON SCHEMA public TO "{nobody}"')
        owner.execute(f'GRANT EXECUTE ON FUNCTION {ADD_KEY} TO "{nobody}"')
        with psycopg.connect(roles["nobody"], autocommit=True) as conn:
            conn.execute("SELECT schedgen_add_key('h4', 'p4', 't1', null, false, 'normal')")
        assert denied(roles["nobody"], "SELECT schedgen_add_key('h5', 'p5', 't1', null, true, 'normal')")
        assert owner.execute("SELECT key_hash, admin FROM api_keys WHERE key_hash IN ('h4', 'h5')").fetchall() == [
            ("h4", False)]
    finally:  # the fixture drops the login: nothing may depend on it
        owner.execute(f'REVOKE ALL ON SCHEMA public FROM "{nobody}"')
        if owner.execute(f"SELECT to_regprocedure('{ADD_KEY}')").fetchone()[0]:
            owner.execute(f'REVOKE ALL ON FUNCTION {ADD_KEY} FROM "{nobody}"')
        owner.close()


# --- row-level security (migration 0007) ---------------------------------------------------------

# What the API's role reads of a tenant's: events through the view api_events (the operator
# COPYs into events, which row-level security would refuse).
TENANT_TABLES = ("parse_jobs", "api_events", "parse_job_transitions", "calendar_feeds", "idempotency_keys")


def two_tenants(owner: str) -> dict[str, str]:
    """A job of tenant t1 and one of t2, each with an event, a transition, a feed and an
    idempotency key (written by the owner); tenant -> job uid."""
    uids = {}
    for tenant in ("t1", "t2"):
        pj = lifecycle(new_parsejob(tenant=tenant))[1]
        write_events(owner, pj)
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("INSERT INTO parse_job_transitions VALUES (%s, 99, 'Queued', null, null, now())", (pj.uid,))
            conn.execute("INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid)"
                         " VALUES (%s, %s, 'ns', %s, %s)", (f"feed-{tenant}", tenant, pj.name, pj.uid))
            conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
                         " VALUES (%s, %s, 'c', 'ns', %s)", (tenant, f"idem-{tenant}", pj.name))
        uids[tenant] = pj.uid
    return uids


def tenants_seen(conn, table: str) -> set[str]:
    """Which tenants' rows `SELECT * FROM table` returns: no WHERE clause at all."""
    rows = conn.execute(f"SELECT * FROM {table}").fetchall()
    columns = [c.name for c in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]
    if "tenant" in columns:
        return {r[columns.index("tenant")] for r in rows}
    uids = {str(r[columns.index("job_uid")]) for r in rows}
    owner_rows = conn.execute("SELECT uid::text, tenant FROM parse_jobs").fetchall()
    return {tenant for uid, tenant in owner_rows if uid in uids} | ({"?"} if uids - {u for u, _ in owner_rows} else set())


def test_the_api_role_sees_only_the_tenant_of_its_transaction(roles):
    uids = two_tenants(roles["owner"])
    with psycopg.connect(roles["api"]) as conn:  # not autocommit: SET LOCAL lasts one transaction
        for table in TENANT_TABLES:  # no tenant set: nothing at all
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        conn.rollback()
        conn.execute("SELECT set_config('schedgen.tenant', 't1', true)")
        for table in TENANT_TABLES:
            assert tenants_seen(conn, table) == {"t1"}, table
        assert conn.execute("SELECT count(*) FROM api_events WHERE job_uid = %s", (uids["t2"],)).fetchone() == (0,)
        # writes stay in the tenant: another tenant's rows are not there to change ...
        assert conn.execute("UPDATE calendar_feeds SET revoked_at = now() WHERE tenant = 't2'").rowcount == 0
        assert conn.execute("DELETE FROM idempotency_keys WHERE tenant = 't2'").rowcount == 0
        conn.commit()
        # ... and a row of another tenant cannot be written
        conn.execute("SELECT set_config('schedgen.tenant', 't1', true)")
        with pytest.raises(DENIED):
            conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
                         " VALUES ('t2', 'sneaky', 'c', 'ns', 'j')")
        conn.rollback()
        conn.execute("SELECT set_config('schedgen.tenant', 't1', true)")
        with pytest.raises(DENIED):
            conn.execute("INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid)"
                         " VALUES ('sneaky', 't2', 'ns', 'j', %s)", (uids["t2"],))
        conn.rollback()
        # an admin key's queue views: every tenant, explicitly, and read only
        conn.execute("SELECT set_config('schedgen.tenant', '*', true)")
        for table in ("parse_jobs", "api_events", "parse_job_transitions", "calendar_feeds"):
            assert tenants_seen(conn, table) == {"t1", "t2"}, table
        with pytest.raises(DENIED):
            conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
                         " VALUES ('*', 'star', 'c', 'ns', 'j')")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM parse_jobs").fetchone() == (0,)  # it ended with its transaction
    assert denied(roles["api"], "SELECT * FROM events")  # the table itself: not at all
    with psycopg.connect(roles["owner"], autocommit=True) as conn:  # nothing changed
        assert conn.execute("SELECT count(*) FROM calendar_feeds WHERE revoked_at IS NULL").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (2,)


def test_the_operator_role_sees_and_writes_every_tenant(roles):
    two_tenants(roles["owner"])
    uid = operator_records(roles["operator"])  # its own code path, no tenant set
    with psycopg.connect(roles["operator"], autocommit=True) as conn:
        for table in ("parse_jobs", "events", "parse_job_transitions"):
            assert {"t1", "t2"} <= tenants_seen(conn, table), table
        assert conn.execute("SELECT count(*) FROM parse_jobs WHERE uid = %s", (uid,)).fetchone() == (1,)
        conn.execute("UPDATE parse_jobs SET attempts = attempts + 1 WHERE tenant = 't2'")
        conn.execute("DELETE FROM events WHERE job_uid IN (SELECT uid FROM parse_jobs WHERE tenant = 't2')")


def test_the_api_code_reads_through_its_tenant(roles):
    """The API's own statements (backends/postgres.py) under the API's role: a tenant's
    scope answers for that tenant only, even a query that forgot its WHERE clause."""
    from schedgen.api.backends import postgres as api_db

    uids = two_tenants(roles["owner"])

    async def main():
        pool = api_db.new_pool(roles["api"], 2)
        await pool.open()
        try:
            async with api_db.tenant_connection(pool, "t2") as conn:
                rows = await (await conn.execute("SELECT tenant FROM parse_jobs")).fetchall()
            assert rows == [("t2",)]
            assert await api_db.read_events(pool, "t1", uids["t1"])
            assert await api_db.read_events(pool, "t2", uids["t1"]) == []
            async with api_db.connection(pool) as conn:  # outside a tenant's transaction: nothing
                assert await (await conn.execute("SELECT count(*) FROM parse_jobs")).fetchone() == (0,)
            async with api_db.tenant_connection(pool, api_db.ALL_TENANTS) as conn:  # an admin key's view
                rows = await (await conn.execute("SELECT DISTINCT tenant FROM parse_jobs ORDER BY 1")).fetchall()
            assert rows == [("t1",), ("t2",)]
        finally:
            await pool.close()

    asyncio.run(main())


# --- passwords: the server checks them (SCRAM-SHA-256), as in production ------------------------


def refused(dsn: str, **change) -> str:
    """The server's refusal of `dsn` with `change` applied (password=None: without one)."""
    params = conninfo.conninfo_to_dict(dsn)
    params.update(change)
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(**params, connect_timeout=5).close()
    return str(info.value)


def test_a_login_needs_its_own_password(roles):
    """No role login gets in without its password, with a wrong one, or with another
    login's: the server checks it (pg_hba.conf says scram-sha-256 for TCP, not trust)."""
    operator_password = conninfo.conninfo_to_dict(roles["operator"])["password"]
    for role in ("api", "operator", "owner"):
        assert "no password supplied" in refused(roles[role], password=None), role
        assert "password authentication failed" in refused(roles[role], password="not-the-password"), role
    assert "password authentication failed" in refused(roles["api"], password=operator_password)
    # the owner is a superuser: not even it comes in over TCP without its password
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        methods = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'").fetchall()
        assert methods == [("scram-sha-256",)], methods  # every TCP rule (loopback, the clusters' network)
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                              (conninfo.conninfo_to_dict(roles["api"])["user"],)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$")  # a verifier, never the password itself


def test_a_refused_password_is_never_in_a_message(roles, capsys):
    """A wrong password fails as DatabaseUnavailable whose message names the user and
    host but not the password (db.scrub), also on the operator's own code path and in
    `schedgen db migrate`'s output (the chart's migration Job log)."""
    from schedgen.errors import DatabaseUnavailable

    secret = "hunter2-" + uuid.uuid4().hex
    wrong = conninfo.make_conninfo(roles["api"], password=secret)
    with pytest.raises(DatabaseUnavailable) as info:
        db.connect(wrong, timeout=5)
    message = str(info.value)
    assert "password authentication failed" in message and secret not in message, message
    assert conninfo.conninfo_to_dict(roles["api"])["user"] in message
    assert db.migrate_command(conninfo.make_conninfo(roles["owner"], password=secret)) != 0
    out = capsys.readouterr()
    assert "password authentication failed" in out.err and secret not in out.out + out.err, out

    async def operator_write() -> str:
        store = RecordStore(conninfo.make_conninfo(roles["operator"], password=secret))
        try:
            await store.sync([row_of(job_ref(), "b")])
        except Exception as exc:  # noqa: BLE001 -- whatever it raises, its text
            return str(exc)
        finally:
            await store.close()
        return ""
    text = asyncio.run(operator_write())
    assert secret not in text, text
