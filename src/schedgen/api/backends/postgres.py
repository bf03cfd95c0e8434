"""The API's Postgres: its connection pool and statements (rate limits, API keys,
idempotency keys, job records, erasure, calendar feeds).

Tables holding a tenant's data (records, events, transitions, feeds, idempotency keys)
are read and written only through `tenant_connection`: a transaction that first sets the
tenant whose rows row-level security lets it see (migration 0007), so a statement that
forgets its `WHERE tenant = ...` still cannot return another tenant's rows."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from schedgen.db import EVENTS_QUERY, describe_dsn, event_from_row, scrub
from schedgen.errors import ConfigurationError, DatabaseUnavailable

CONNECT_TIMEOUT = 3  # seconds
ACQUIRE_TIMEOUT = 5.0  # seconds to wait for a pooled connection
PING_TIMEOUT = 2.0  # readiness: answer well within the probe's deadline
STATEMENT_TIMEOUT_MS = 5000  # a stuck query cannot hold a request past its deadline


# --- the pool -------------------------------------------------------------------------


def new_pool(dsn: str, size: int) -> AsyncConnectionPool:
    """A bounded pool, opened in the app's lifespan (it belongs to that event loop).

    Every connection is checked (one round trip) before use, so connections that died
    with a Postgres restart are replaced instead of failing a request."""
    if not dsn:
        raise ConfigurationError("no database DSN given (set SCHEDGEN_DATABASE_URL)")
    return AsyncConnectionPool(
        dsn, min_size=1, max_size=max(1, size), open=False, name="schedgen-api", timeout=ACQUIRE_TIMEOUT,
        check=AsyncConnectionPool.check_connection,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"})


@contextlib.asynccontextmanager
async def connection(pool: AsyncConnectionPool,
                     timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection; any failure to reach Postgres becomes `DatabaseUnavailable` (503)."""
    try:
        async with pool.connection(timeout) as conn:
            yield conn
    except PoolTimeout:
        raise DatabaseUnavailable(
            f"no Postgres connection within {timeout or pool.timeout:g}s ({describe_dsn(pool.conninfo)}"
            " unreachable or the pool exhausted)") from None
    except psycopg.errors.QueryCanceled:
        raise DatabaseUnavailable("a Postgres statement timed out") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"lost the Postgres connection: {scrub(str(exc), pool.conninfo)[:300]}") from None


ALL_TENANTS = "*"  # the explicit scope of an admin key's queue views (read only; never a tenant name)


@contextlib.asynccontextmanager
async def tenant_connection(pool: AsyncConnectionPool, tenant: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection in a transaction that sees `tenant`'s rows only (`ALL_TENANTS`:
    every tenant's, for reading). The setting is transaction-local (SET LOCAL), so it ends
    with the transaction and never carries over to the connection's next user."""
    if not tenant:
        raise ValueError("a tenant scope is required")
    async with connection(pool) as conn, conn.transaction():
        await conn.execute("SELECT set_config('schedgen.tenant', %s, true)", (tenant,))
        yield conn


async def ping(pool: AsyncConnectionPool) -> None:
    async with connection(pool, PING_TIMEOUT) as conn:
        await conn.execute("SELECT 1")


# --- rate limits ------------------------------------------------------------------------

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class RateDecision:
    limit: int
    count: int
    reset_seconds: int

    @property
    def allowed(self) -> bool:
        return self.count <= self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


_RATES = """
INSERT INTO rate_limit_windows AS w (client_key, route_class, window_start, count)
SELECT client, cls, to_timestamp(floor(extract(epoch FROM clock_timestamp()) / %(win)s) * %(win)s), 1
  FROM unnest(%(clients)s::text[], %(classes)s::text[]) WITH ORDINALITY AS b(client, cls, n) ORDER BY n
ON CONFLICT (client_key, route_class, window_start) DO UPDATE SET count = w.count + 1
RETURNING client_key, route_class, count,
          extract(epoch FROM (window_start + make_interval(secs => %(win)s) - clock_timestamp()))
"""


async def hit_rate_limit(pool: AsyncConnectionPool, client: str, route_class: str, limit: int) -> RateDecision:
    """Count one request in the client's current fixed window (shared by all replicas)."""
    return (await hit_rate_limits(pool, [(client, route_class, limit)]))[0]


async def hit_rate_limits(pool: AsyncConnectionPool, buckets: list[tuple[str, str, int]]) -> list[RateDecision]:
    """Count one request in each (client, route class, limit) bucket, in one statement;
    the decisions in the same order. Rows are locked in the order given, so callers that
    list a key before its tenant never deadlock each other."""
    params = {"clients": [b[0] for b in buckets], "classes": [b[1] for b in buckets], "win": WINDOW_SECONDS}
    async with connection(pool) as conn:
        rows = await (await conn.execute(_RATES, params)).fetchall()
    found = {(client, cls): (count, reset) for client, cls, count, reset in rows}
    out = []
    for client, cls, limit in buckets:
        count, reset = found[(client, cls)]
        out.append(RateDecision(limit=limit, count=int(count), reset_seconds=max(1, math.ceil(float(reset)))))
    return out


async def purge(pool: AsyncConnectionPool, idempotency_ttl_seconds: int) -> None:
    """Old rate-limit windows and expired idempotency keys (every tenant's: through
    `schedgen_purge_idempotency`, since no tenant is set for maintenance)."""
    async with connection(pool) as conn:
        await conn.execute("DELETE FROM rate_limit_windows WHERE window_start < now() - interval '5 minutes'")
        await conn.execute("SELECT schedgen_purge_idempotency(%s)", (idempotency_ttl_seconds,))


# --- API keys --------------------------------------------------------------------------

KEY_PREFIX = "sgk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyInfo:
    """What a valid API key grants."""
    tenant: str
    admin: bool = False  # sees every tenant's queue
    max_priority: str = "normal"  # the most urgent priority its uploads may ask for


class KeyCache:
    """key hash -> KeyInfo (or None for unknown/revoked), kept `ttl` seconds."""

    def __init__(self, ttl: float, max_entries: int = 10000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, KeyInfo | None]] = {}

    def get(self, key_hash: str) -> tuple[bool, KeyInfo | None]:
        entry = self._entries.get(key_hash)
        if entry and entry[0] > time.monotonic():
            return True, entry[1]
        return False, None

    def put(self, key_hash: str, info: KeyInfo | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, info)


async def key_info(pool: AsyncConnectionPool, key_hash: str) -> KeyInfo | None:
    async with connection(pool) as conn:
        row = await (await conn.execute(
            "SELECT tenant, admin, max_priority FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
            (key_hash,))).fetchone()
    return KeyInfo(row[0], bool(row[1]), row[2]) if row else None


def add_key_sync(conn: Any, tenant: str, description: str | None = None, *, admin: bool = False,
                 max_priority: str = "normal") -> str:
    """A new key of `tenant` (shown once; stored as its hash) through `schedgen_add_key`:
    only members of schedgen_key_admin and the schema owner may (migration 0007)."""
    key = new_key()
    conn.execute("SELECT schedgen_add_key(%s, %s, %s, %s, %s, %s)",
                 (hash_key(key), key[:12], tenant, description, admin, max_priority))
    return key


def revoke_key_sync(conn: Any, prefix_or_key: str) -> int:
    """Revoke the key (or the keys of its 12-character prefix): how many were revoked."""
    row = conn.execute("SELECT schedgen_revoke_key(%s, %s)", (hash_key(prefix_or_key), prefix_or_key[:12])).fetchone()
    return int(row[0])


# --- idempotency keys -----------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    new: bool
    content_sha256: str
    job_name: str
    job_uid: str | None


async def claim_idempotency(pool: AsyncConnectionPool, tenant: str, key_hash: str, content_sha256: str,
                            namespace: str, job_name: str) -> Claim:
    async with tenant_connection(pool, tenant) as conn:
        row = await (await conn.execute(
            "INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant, key_hash) DO NOTHING RETURNING job_name",
            (tenant, key_hash, content_sha256, namespace, job_name))).fetchone()
        if row:
            return Claim(True, content_sha256, job_name, None)
        row = await (await conn.execute(
            "SELECT content_sha256, job_name, job_uid FROM idempotency_keys WHERE tenant = %s AND key_hash = %s",
            (tenant, key_hash))).fetchone()
    if row is None:  # purged between the two statements: claim again
        return await claim_idempotency(pool, tenant, key_hash, content_sha256, namespace, job_name)
    return Claim(False, row[0], row[1], str(row[2]) if row[2] else None)


async def complete_idempotency(pool: AsyncConnectionPool, tenant: str, key_hash: str, uid: str) -> None:
    async with tenant_connection(pool, tenant) as conn:
        await conn.execute("UPDATE idempotency_keys SET job_uid = %s WHERE tenant = %s AND key_hash = %s",
                           (uid, tenant, key_hash))


async def release_idempotency(pool: AsyncConnectionPool, tenant: str, key_hash: str) -> None:
    async with tenant_connection(pool, tenant) as conn:
        await conn.execute("DELETE FROM idempotency_keys WHERE tenant = %s AND key_hash = %s AND job_uid IS NULL",
                           (tenant, key_hash))


# --- job records (written by the operator) and events (by the runner) ------------------

# The API's role reads events only through the view `api_events` (migration 0007: the
# operator COPYs events, so that table has no row-level security): db.EVENTS_QUERY's
# columns and order, the rows of the transaction's tenant's jobs only.
_EVENTS = EVENTS_QUERY.replace(" FROM events ", " FROM api_events ")
assert _EVENTS != EVENTS_QUERY

_RECORD_COLUMNS = ("uid", "name", "tenant", "priority", "schedule_type", "phase", "attempts", "kind",
                   "event_count", "pages", "parse_seconds", "error_reason", "error_code", "error_message",
                   "created_at", "enqueued_at", "started_at", "completed_at",
                   "source_bucket", "source_key")  # the PDF, for erasure (never in a status document)


async def job_record(pool: AsyncConnectionPool, tenant: str, namespace: str, name: str) -> dict | None:
    """The newest record named `name` that `tenant` may see (None for another tenant's)."""
    async with tenant_connection(pool, tenant) as conn:
        row = await (await conn.execute(
            f"SELECT {', '.join(_RECORD_COLUMNS)} FROM parse_jobs WHERE namespace = %s AND name = %s"
            " ORDER BY created_at DESC LIMIT 1", (namespace, name))).fetchone()
    return dict(zip(_RECORD_COLUMNS, row)) if row else None


async def read_events(pool: AsyncConnectionPool, tenant: str, uid: str) -> list:
    """The job's events in parse order, as the runner wrote them (none of another tenant's job)."""
    async with tenant_connection(pool, tenant) as conn:
        cur = await conn.execute(_EVENTS, (uid,))
        return [event_from_row(row) for row in await cur.fetchall()]


async def finished_counts(pool: AsyncConnectionPool, tenant: str, namespace: str) -> dict[str, dict[str, int]]:
    """tenant -> {succeeded, failed, cancelled} from the records (they outlive the objects),
    of `tenant` (`ALL_TENANTS`: of every tenant)."""
    async with tenant_connection(pool, tenant) as conn:
        rows = await (await conn.execute(
            "SELECT tenant, phase, count(*) FROM parse_jobs WHERE namespace = %s"
            " AND phase IN ('Succeeded', 'Failed', 'Cancelled') GROUP BY tenant, phase", (namespace,))).fetchall()
    out: dict[str, dict[str, int]] = {}
    for tenant, phase, count in rows:
        out.setdefault(tenant, {})[phase.lower()] = int(count)
    return out



async def queue_history(pool: AsyncConnectionPool, namespace: str, tenant: str | None, minutes: int,
                        step_seconds: int) -> list[dict]:
    """Waiting, running and finished-in-the-step counts at each step of the last
    `minutes`, from the records (created/started/completed times; they outlive the
    objects); `tenant` None: every tenant. A ParseJob put back in the queue counts from
    its latest start."""
    sql = ("SELECT t,"
           " count(j.uid) FILTER (WHERE j.created_at <= t AND (j.started_at IS NULL OR j.started_at > t)"
           "   AND (j.completed_at IS NULL OR j.completed_at > t)),"
           " count(j.uid) FILTER (WHERE j.started_at <= t AND (j.completed_at IS NULL OR j.completed_at > t)),"
           " count(j.uid) FILTER (WHERE j.completed_at > t - make_interval(secs => %(step)s) AND j.completed_at <= t)"
           " FROM generate_series(now() - make_interval(mins => %(minutes)s), now(), make_interval(secs => %(step)s)) t"
           " LEFT JOIN parse_jobs j ON j.namespace = %(ns)s AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s)"
           "   AND j.created_at <= t AND (j.completed_at IS NULL OR j.completed_at > t - make_interval(secs => %(step)s))"
           " GROUP BY t ORDER BY t")
    async with tenant_connection(pool, tenant or ALL_TENANTS) as conn:
        rows = await (await conn.execute(sql, {"ns": namespace, "tenant": tenant, "minutes": minutes,
                                               "step": step_seconds})).fetchall()
    return [{"at": t.isoformat().replace("+00:00", "Z"), "waiting": int(w), "running": int(r), "finished": int(f)}
            for t, w, r, f in rows]


async def list_records(pool: AsyncConnectionPool, namespace: str, tenant: str, phase: str | None,
                       before: tuple[dt.datetime, str] | None, exclude: list[str], limit: int) -> list[dict]:
    """The tenant's newest records (one per name), keyset-paginated on (created_at, name)
    descending, without the names in `exclude` (the live ParseJobs answer for those)."""
    sql = (f"SELECT {', '.join(_RECORD_COLUMNS)} FROM (SELECT DISTINCT ON (name) * FROM parse_jobs"
           " WHERE namespace = %(ns)s AND tenant = %(tenant)s ORDER BY name, created_at DESC) r"
           " WHERE NOT (name = ANY(%(exclude)s))")
    params: dict = {"ns": namespace, "tenant": tenant, "exclude": exclude, "limit": limit}
    if phase:
        sql += " AND phase = %(phase)s"
        params["phase"] = phase
    if before:
        sql += " AND (created_at, name) < (%(ts)s, %(name)s)"
        params["ts"], params["name"] = before
    sql += " ORDER BY created_at DESC, name DESC LIMIT %(limit)s"
    async with tenant_connection(pool, tenant) as conn:
        rows = await (await conn.execute(sql, params)).fetchall()
    return [dict(zip(_RECORD_COLUMNS, row)) for row in rows]


# --- erasure (migration 0006) --------------------------------------------------------------


async def erase_job(pool: AsyncConnectionPool, uid: str, namespace: str, name: str, tenant: str) -> int:
    """Delete the job's rows and tombstone its uid (schedgen_erase_job: the API role
    cannot delete records itself)."""
    async with connection(pool) as conn:
        row = await (await conn.execute("SELECT schedgen_erase_job(%s, %s, %s, %s)",
                                        (uid, namespace, name, tenant))).fetchone()
    return int(row[0])


async def source_key_in_use(pool: AsyncConnectionPool, key: str, except_uid: str) -> bool:
    """Whether another recorded job (any tenant, any namespace) uses the object `key`: a
    yes or no through `schedgen_source_key_in_use` (the API's role sees no other tenant's rows)."""
    async with connection(pool) as conn:
        row = await (await conn.execute("SELECT schedgen_source_key_in_use(%s, %s)", (key, except_uid))).fetchone()
    return bool(row[0])


# --- calendar feeds (migrations 0006, 0007, 0008) -------------------------------------------


@dataclass(frozen=True)
class Feed:
    tenant: str
    namespace: str
    job_name: str  # a following feed: a placeholder of no job (migration 0008)
    job_uid: str
    params: dict
    created_by_key: str | None = None  # the key's hash: revoking the key ends the feed
    expires_at: dt.datetime | None = None
    follow: str | None = None  # a schedule kind: the feed serves the tenant's newest Succeeded job of it
    id: str | None = None  # the feed's public handle (PUT/DELETE /api/v1/feeds/{id}); set by the database


class FeedTaken(Exception):
    """The job has a current feed of its own already (one per job: calendar_feeds_current)."""


def following_placeholder(kind: str) -> tuple[str, str]:
    """(job_name, job_uid) of a following feed: a random uuid of no job, so it never holds
    a job's one current feed and the previous release answers it 404 (migration 0008)."""
    return f"follows-{kind}", str(uuid.uuid4())


async def create_feed(pool: AsyncConnectionPool, token_hash: str, feed: Feed) -> str:
    """The new feed's id. A pinned feed revokes its job's previous one in the same
    transaction (a concurrent create of the same job's feed makes the unique index refuse
    one: it tries again)."""
    try:
        return await _create_feed(pool, token_hash, feed)
    except psycopg.errors.UniqueViolation:
        return await _create_feed(pool, token_hash, feed)


async def _create_feed(pool: AsyncConnectionPool, token_hash: str, feed: Feed) -> str:
    async with tenant_connection(pool, feed.tenant) as conn:
        if feed.follow is None:
            await conn.execute("UPDATE calendar_feeds SET revoked_at = now() WHERE job_uid = %s"
                               " AND revoked_at IS NULL", (feed.job_uid,))
        row = await (await conn.execute(
            "INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid, params,"
            " created_by_key, expires_at, follow_schedule_type) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (token_hash, feed.tenant, feed.namespace, feed.job_name, feed.job_uid, Jsonb(feed.params),
             feed.created_by_key, feed.expires_at, feed.follow))).fetchone()
    return str(row[0])


async def revoke_feed(pool: AsyncConnectionPool, tenant: str, job_uid: str) -> int:
    async with tenant_connection(pool, tenant) as conn:
        cur = await conn.execute("UPDATE calendar_feeds SET revoked_at = now() WHERE job_uid = %s"
                                 " AND revoked_at IS NULL", (job_uid,))
    return cur.rowcount


async def revoke_feed_by_id(pool: AsyncConnectionPool, tenant: str, namespace: str, feed_id: str) -> int:
    async with tenant_connection(pool, tenant) as conn:
        cur = await conn.execute("UPDATE calendar_feeds SET revoked_at = now() WHERE id = %s AND namespace = %s"
                                 " AND revoked_at IS NULL", (feed_id, namespace))
    return cur.rowcount


_FEED_COLUMNS = ("id", "job_name", "follow", "params", "created_at", "expires_at")
_FEED_SELECT = "f.id, f.job_name, f.follow_schedule_type, f.params, f.created_at, f.expires_at"


def _feed_row(row) -> dict:
    return dict(zip(_FEED_COLUMNS, row)) | {"id": str(row[0]), "params": dict(row[3] or {})}


_POINT_FEED = f"""
UPDATE calendar_feeds f SET job_name = %s, job_uid = %s, follow_schedule_type = %s, params = f.params || %s
 WHERE f.id = %s AND f.namespace = %s AND f.revoked_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > now())
RETURNING {_FEED_SELECT}
"""


async def point_feed(pool: AsyncConnectionPool, tenant: str, namespace: str, feed_id: str,
                     target: tuple[str, str, str | None], params: dict) -> dict | None:
    """Point the tenant's current feed `feed_id` at `target` (job_name, job_uid, follow)
    with `params` merged into its stored ones: the feed afterwards, its token unchanged.
    None when the tenant has no such feed; `FeedTaken` when the job has a feed of its own."""
    job_name, job_uid, follow = target
    try:
        async with tenant_connection(pool, tenant) as conn:
            row = await (await conn.execute(_POINT_FEED, (job_name, job_uid, follow, Jsonb(params), feed_id,
                                                          namespace))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise FeedTaken() from None
    return _feed_row(row) if row else None


_LIVE_FEEDS = f"""
SELECT {_FEED_SELECT}
  FROM calendar_feeds f
 WHERE f.namespace = %s AND f.revoked_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > now())
   AND (f.created_by_key IS NULL OR EXISTS (
            SELECT 1 FROM api_keys k WHERE k.key_hash = f.created_by_key AND k.revoked_at IS NULL))
 ORDER BY f.created_at DESC, f.id
"""


async def list_feeds(pool: AsyncConnectionPool, tenant: str, namespace: str) -> list[dict]:
    """The tenant's feeds that serve (row-level security: its own only), newest first."""
    async with tenant_connection(pool, tenant) as conn:
        rows = await (await conn.execute(_LIVE_FEEDS, (namespace,))).fetchall()
    return [_feed_row(row) for row in rows]


async def find_feed(pool: AsyncConnectionPool, token_hash: str) -> Feed | None:
    """The feed of a token while it serves: not revoked, not expired, its key not revoked
    (`schedgen_open_feed`: the tenant is known only from the feed itself)."""
    async with connection(pool) as conn:
        row = await (await conn.execute(
            "SELECT tenant, namespace, job_name, job_uid, params, id, follow_schedule_type"
            " FROM schedgen_open_feed(%s)", (token_hash,))).fetchone()
    if row is None:
        return None
    return Feed(row[0], row[1], row[2], str(row[3]), dict(row[4] or {}), follow=row[6], id=str(row[5]))


async def newest_succeeded(pool: AsyncConnectionPool, tenant: str, namespace: str, kind: str) -> str | None:
    """The name of the tenant's newest (by creation) Succeeded job whose result is `kind`,
    as recorded (records outlive the ParseJobs; an erased job has none)."""
    async with tenant_connection(pool, tenant) as conn:
        row = await (await conn.execute(
            "SELECT name FROM parse_jobs WHERE tenant = %s AND namespace = %s AND kind = %s"
            " AND phase = 'Succeeded' ORDER BY created_at DESC, name DESC LIMIT 1",
            (tenant, namespace, kind))).fetchone()
    return row[0] if row else None
