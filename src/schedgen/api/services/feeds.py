"""Calendar feeds: a secret URL per job that calendar apps subscribe to without an API key.

The token is 256 random bits, stored only as its SHA-256 (a database dump reveals no
feed). So it cannot be shown twice: each new feed revokes the job's previous one. A feed
is bound to the API key that made it (revoking the key ends it) and expires: after the
days asked for, at most `SCHEDGEN_API_FEED_MAX_DAYS` (migration 0007)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from ..backends import postgres
from ..context import ApiContext
from ..errors import ApiError
from .calendars import CalendarParams
from .lookup import Job, find_job, lookup

GONE = "no such calendar feed (revoked, expired, or its job was deleted)"


@dataclass(frozen=True)
class NewFeed:
    token: str
    expires_at: dt.datetime | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def expiry(max_days: int, days: int | None, now: dt.datetime) -> dt.datetime | None:
    """When a feed asked to live `days` (None: as long as allowed) ends; 422 beyond the
    server's maximum `max_days` (0: no maximum, and no expiry unless asked)."""
    if days is not None and (days < 1 or (max_days and days > max_days)):
        most = f"1 to {max_days}" if max_days else "at least 1"
        raise ApiError(422, "InvalidParameters", f"expiresInDays: {most} days")
    days = days or max_days
    return now + dt.timedelta(days=days) if days else None


async def create(ctx: ApiContext, tenant: str, key_hash: str | None, job_id: str, params: CalendarParams,
                 days: int | None = None) -> NewFeed:
    """A new feed of the tenant's job with these calendar parameters, made by the key
    `key_hash` (None: an anonymous caller): its token and when it expires."""
    job = await find_job(ctx, tenant, job_id)
    expires_at = expiry(ctx.cfg.feed_max_days, days, dt.datetime.now(dt.timezone.utc))
    token = secrets.token_urlsafe(32)
    await postgres.create_feed(ctx.pool, token_hash(token),
                               postgres.Feed(tenant, ctx.cfg.namespace, job.name, job.uid, params.to_json(),
                                             created_by_key=key_hash, expires_at=expires_at))
    return NewFeed(token, expires_at)


async def revoke(ctx: ApiContext, tenant: str, job_id: str) -> None:
    """Revoke the job's feed (404 `FeedNotFound` when it has none)."""
    job = await find_job(ctx, tenant, job_id)
    if not await postgres.revoke_feed(ctx.pool, tenant, job.uid):
        raise ApiError(404, "FeedNotFound", f"job {job_id} has no calendar feed")


async def resolve(ctx: ApiContext, token: str, found: postgres.Feed | None = None) -> tuple[Job, CalendarParams]:
    """The job of a feed token and the feed's stored parameters (`found`: the feed the
    Gate looked up already); 404 when the feed does not serve (revoked, expired, its key
    revoked) or its job is gone (a new job under the same name is not the feed's)."""
    found = found or await postgres.find_feed(ctx.pool, token_hash(token))
    job = await lookup(ctx, found.job_name, found.tenant) if found else None
    if found is None or job is None or job.uid != found.job_uid:
        raise ApiError(404, "FeedNotFound", GONE)
    return job, CalendarParams.from_json(found.params)
