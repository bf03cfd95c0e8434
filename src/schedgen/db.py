"""Postgres access shared by the components: connections, versioned migrations, and how
an event maps to its `events` row (the operator writes them: operator/record_store.py;
the API reads them).

Errors that mean "the database is not reachable right now" surface as
`DatabaseUnavailable` (transient) so a later attempt can succeed; messages never
contain the DSN's password.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import uuid
from dataclasses import dataclass
from importlib import resources

import psycopg
import psycopg.errors
from psycopg import conninfo
from psycopg.types.json import Jsonb

from schedgen.errors import ConfigurationError, DatabaseUnavailable
from schedgen.models import Event, camel_case

# Any constant works as long as every migrator uses the same one ("schedgen" in ASCII).
MIGRATION_LOCK_KEY = 0x73636865646765
_MIGRATION_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")
# Event fields without their own column; stored in events.details (camelCase keys).
_DETAIL_FIELDS = (
    "offered", "language", "study_programme", "paper", "status",
    "module_campus", "exam_campus", "comments",
)


# --- connections -------------------------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname` for messages: never the password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    return "{}@{}:{}/{}".format(
        parts.get("user", "?"), parts.get("host", "localhost"),
        parts.get("port", 5432), parts.get("dbname", "?"),
    )


def scrub(message: str, dsn: str) -> str:
    """One line, without the DSN's password (libpq may echo connection parameters)."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    message = " ".join(str(message).split())  # libpq messages are multi-line
    return message.replace(str(password), "***") if password else message


# TCP keepalives and tcp_user_timeout: a peer that vanishes (packets dropped) ends the
# session within ~30 s instead of the kernel's ~15 min of retransmissions.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 20000}


def connect(dsn: str, *, timeout: float = 5) -> psycopg.Connection:
    """Open an autocommit connection; callers open transactions explicitly."""
    if not dsn:
        raise ConfigurationError("no database DSN given (set SCHEDGEN_DATABASE_URL)")
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigurationError("the database DSN is not a valid connection string") from None
    try:
        return psycopg.connect(dsn, connect_timeout=max(1, int(timeout)), autocommit=True, **KEEPALIVES)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to Postgres at {describe_dsn(dsn)}: {scrub(str(exc), dsn)}"
        ) from None


def _unavailable(exc: psycopg.OperationalError, conn: psycopg.Connection) -> DatabaseUnavailable:
    dsn = conn.info.dsn if not conn.closed else ""
    return DatabaseUnavailable(f"lost the Postgres connection: {scrub(str(exc), dsn)}")


# --- migrations --------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The packaged `schedgen/migrations/NNNN_name.sql` files, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("schedgen").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ConfigurationError(f"two migrations share version {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def applied_versions(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [row[0] for row in rows]


def migrate(conn: psycopg.Connection, *, log=lambda message: None) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; returns those applied.

    A session-level advisory lock serialises concurrent migrators (several API or
    operator replicas starting at once): the second waits, then finds nothing to do.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection (each migration is its own transaction)")
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = set(applied_versions(conn))
            applied = []
            for migration in migrations():
                if migration.version in done:
                    continue
                log(f"applying {migration.version:04d}_{migration.name}")
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
            return applied
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.OperationalError as exc:
        raise _unavailable(exc, conn) from None


def migrate_command(dsn: str | None = None) -> int:
    """`schedgen db migrate`: returns a process exit code (0, or the error's exit_code)."""
    dsn = dsn or os.environ.get("SCHEDGEN_DATABASE_URL", "")
    try:
        with connect(dsn) as conn:
            print(f"migrating {describe_dsn(dsn)}", flush=True)
            applied = migrate(conn, log=lambda m: print(m, flush=True))
            version = max(applied_versions(conn), default=0)
    except (ConfigurationError, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg.Error as exc:
        print(f"error: migration failed: {scrub(str(exc), dsn)}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied {len(applied)} migration(s); schema at version {version:04d}")
    else:
        print(f"nothing to do: schema already at version {version:04d}")
    known = max((m.version for m in migrations()), default=0)
    if version > known:
        # A rollback: a newer release migrated this database. Migrations only add, and
        # each stays compatible with the release before it, so this one runs on it as is.
        print(f"the schema is newer than this release's ({known:04d}): kept as it is (forward-only migrations)")
    return 0


# --- events ------------------------------------------------------------------------


def event_row(job_uid: uuid.UUID, ordinal: int, e: Event) -> tuple:
    details = {camel_case(f): getattr(e, f) for f in _DETAIL_FIELDS if getattr(e, f) is not None}
    return (
        job_uid, ordinal, e.module, e.activity, e.group, e.day,
        dt.date.fromisoformat(e.date) if e.date else None,
        _time(e.start_time), _time(e.end_time),
        list(e.venues), e.campus, Jsonb(details),
    )


def _time(value: str | None) -> dt.time | None:
    """"HH:MM" (the model's format); tolerate "H:MM" and seconds."""
    if not value:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", value.strip())
    if not match:
        raise ValueError(f"event time {value!r} is not HH:MM")
    return dt.time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


EVENT_COLUMNS = ("job_uid", "ordinal", "module", "activity", "group_name", "day", "date",
                 "start_time", "end_time", "venues", "campus", "details")
EVENT_TYPES = ("uuid", "int4", "text", "text", "text", "text", "date",
               "time", "time", "text[]", "text", "jsonb")


# The events of one job in parse order; rows go through `event_from_row` (the API reads
# them with its async pool, so the query and the row mapping are shared, not the call).
EVENTS_QUERY = ("SELECT module, activity, group_name, day, date, start_time, end_time, venues,"
                " campus, details FROM events WHERE job_uid = %s ORDER BY ordinal")


def event_from_row(row: tuple) -> Event:
    module, activity, group, day, date, start, end, venues, campus, details = row
    extra = {f: (details or {}).get(camel_case(f)) for f in _DETAIL_FIELDS}
    return Event(
        module=module, activity=activity, group=group, day=day,
        date=date.isoformat() if date else None,
        start_time=start.strftime("%H:%M") if start else None,
        end_time=end.strftime("%H:%M") if end else None,
        venues=tuple(venues or ()), campus=campus, **extra,
    )
