"""Versioned, idempotent, lock-protected migrations against a real Postgres."""

from __future__ import annotations

import threading

import psycopg
import pytest

from schedgen import db


def test_migrate_applies_each_version_once(empty_database, capsys):
    assert db.migrate_command(empty_database) == 0
    first = capsys.readouterr().out
    every = db.migrations()
    assert all(f"applying {m.version:04d}_{m.name}" in first for m in every), first
    assert f"applied {len(every)} migration(s)" in first

    assert db.migrate_command(empty_database) == 0
    second = capsys.readouterr().out
    assert "nothing to do" in second and "applying" not in second

    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations").fetchall()
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in db.migrations()]
    assert rows[0][0] == 1 and rows[0][2] is not None
    assert {"parse_jobs", "parse_job_transitions", "events", "schema_migrations"} <= tables


def test_migration_files_are_versioned_in_order():
    found = db.migrations()
    assert [m.version for m in found] == sorted({m.version for m in found})
    assert found[0].version == 1 and "CREATE TABLE parse_jobs" in found[0].sql


def test_concurrent_migrators_do_not_collide(empty_database):
    applied: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def migrator() -> None:
        try:
            with db.connect(empty_database) as conn:
                barrier.wait()
                applied.extend(m.version for m in db.migrate(conn))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=migrator) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(applied) == [m.version for m in db.migrations()]  # each applied exactly once


def test_migrate_command_database_down(closed_port, capsys):
    dsn = f"postgresql://schedgen:s3cr3t-pw@127.0.0.1:{closed_port}/schedgen"
    assert db.migrate_command(dsn) == 1
    err = capsys.readouterr().err
    assert "DatabaseUnavailable" in err and f"127.0.0.1:{closed_port}" in err
    assert "s3cr3t-pw" not in err


def test_migrate_command_without_dsn_is_misconfigured(monkeypatch, capsys):
    monkeypatch.delenv("SCHEDGEN_DATABASE_URL", raising=False)
    assert db.migrate_command(None) == 3
    assert "SCHEDGEN_DATABASE_URL" in capsys.readouterr().err


def test_connect_error_hides_password(closed_port):
    with pytest.raises(db.DatabaseUnavailable) as info:
        db.connect(f"host=127.0.0.1 port={closed_port} user=u password=hunter2 dbname=x", timeout=1)
    assert "hunter2" not in str(info.value) and info.value.exit_code == 1


def test_error_code_migration_splits_legacy_messages(empty_database):
    """Rows written before 0003 held "Code: message" in error_message."""
    by_version = {m.version: m for m in db.migrations()}
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for version in (1, 2):
            conn.execute(by_version[version].sql)
        for uid, message in (("00000000-0000-0000-0000-000000000001", "NoTables: no table on any page"),
                             ("00000000-0000-0000-0000-000000000002", "the Job disappeared: gone")):
            conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key, error_message)"
                         " VALUES (%s, 'ns', %s, 't', 'k', %s)", (uid, uid[-1], message))
        conn.execute(by_version[3].sql)
        rows = conn.execute("SELECT error_code, error_message FROM parse_jobs ORDER BY uid").fetchall()
    assert rows == [("NoTables", "no table on any page"), (None, "the Job disappeared: gone")]


def test_a_database_migrated_by_a_newer_release_is_kept(empty_database, capsys):
    """`helm rollback` runs the older release's migration hook on a database a newer release
    migrated: versions it does not know are no error and nothing is undone (migrations are
    forward-only and each stays compatible with the release before it)."""
    assert db.migrate_command(empty_database) == 0
    known = db.migrations()[-1].version
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_a_newer_release')", (known + 1,))
        conn.execute("CREATE TABLE from_a_newer_release (id int)")
    capsys.readouterr()
    assert db.migrate_command(empty_database) == 0
    out = capsys.readouterr().out
    assert f"nothing to do: schema already at version {known + 1:04d}" in out
    assert f"newer than this release's ({known:04d})" in out and "applying" not in out
    with psycopg.connect(empty_database) as conn:
        assert db.applied_versions(conn) == [*(m.version for m in db.migrations()), known + 1]
        assert conn.execute("SELECT to_regclass('from_a_newer_release')").fetchone()[0] is not None
