"""Calendar feeds: a secret URL that calendar apps subscribe to without an API key.

The token is 256 random bits, stored only as its SHA-256 (a database dump reveals no
feed). So it cannot be shown twice: each new feed of a job revokes the job's previous one.
A feed is bound to the API key that made it (revoking the key ends it) and expires: after
the days asked for, at most `SCHEDGEN_API_FEED_MAX_DAYS` (migration 0007).

A feed is pinned to one job, or follows the timetable: it serves the tenant's newest
Succeeded job of a schedule kind, so a re-uploaded timetable reaches the subscribers of
the same URL (migration 0008). A pinned feed can be pointed at another job of its
tenant, keeping its token: `point`."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from schedgen.models import ScheduleKind
from schedgen.parsejob import SUCCEEDED

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
    id: str
    job_id: str | None = None  # a pinned feed's job
    follow: str | None = None  # a following feed's schedule kind


@dataclass(frozen=True)
class Target:
    """What a feed serves: one job (`job_id`) or the newest Succeeded job of a kind (`follow`)."""
    job_id: str | None = None
    follow: str | None = None


@dataclass(frozen=True)
class Served:
    """What a feed token opens: the job to render (None: a following feed with no job yet)."""
    job: Job | None
    params: CalendarParams
    feed: postgres.Feed


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


async def create(ctx: ApiContext, tenant: str, key_hash: str | None, target: Target, params: CalendarParams,
                 days: int | None = None) -> NewFeed:
    """A new feed of the tenant (pinned to its job, or following a kind) with these
    calendar parameters, made by the key `key_hash` (None: an anonymous caller)."""
    if target.follow:
        _check_following(target.follow, params)
        job_name, job_uid = postgres.following_placeholder(target.follow)
    else:
        job = await find_job(ctx, tenant, target.job_id or "")
        job_name, job_uid = job.name, job.uid
    expires_at = expiry(ctx.cfg.feed_max_days, days, dt.datetime.now(dt.timezone.utc))
    token = secrets.token_urlsafe(32)
    feed_id = await postgres.create_feed(ctx.pool, token_hash(token), postgres.Feed(
        tenant, ctx.cfg.namespace, job_name, job_uid, params.to_json(), created_by_key=key_hash,
        expires_at=expires_at, follow=target.follow))
    return NewFeed(token, expires_at, feed_id, None if target.follow else job_name, target.follow)


def _check_following(kind: str, params: CalendarParams) -> None:
    """Lectures recur weekly: a feed following them needs the term's days up front (a
    pinned feed learns it at its first fetch; a following one may have no job yet)."""
    if kind == ScheduleKind.LECTURE.value and not (params.first_day and params.last_day):
        raise ApiError(400, "CalendarRangeRequired", "a feed following lectures needs from and until")


async def point(ctx: ApiContext, tenant: str, feed_id: str, target: Target, changes: dict) -> dict:
    """Point the tenant's feed at another of its Succeeded jobs, or make it follow a kind;
    `changes`: calendar parameters that replace the stored ones. The token (URL) stays."""
    if target.follow:
        new = (*postgres.following_placeholder(target.follow), target.follow)
    else:
        job = await find_job(ctx, tenant, target.job_id or "")  # another tenant's job: 404
        if job.phase != SUCCEEDED:
            raise ApiError(409, "JobNotSucceeded", f"job {job.name} is {job.phase}: a feed serves Succeeded jobs")
        new = (job.name, job.uid, None)
    try:
        found = await postgres.point_feed(ctx.pool, tenant, ctx.cfg.namespace, feed_id, new, changes)
    except postgres.FeedTaken:
        raise ApiError(409, "FeedExists", f"job {target.job_id} has a feed of its own: revoke it first "
                                          "(DELETE /api/v1/jobs/{id}/feed) or point that one") from None
    if found is None:
        raise ApiError(404, "FeedNotFound", f"no calendar feed {feed_id} (revoked, expired, or another tenant's)")
    return found


async def listing(ctx: ApiContext, tenant: str) -> list[dict]:
    """The tenant's feeds that serve, newest first (never their tokens: only hashes are kept)."""
    return await postgres.list_feeds(ctx.pool, tenant, ctx.cfg.namespace)


async def revoke(ctx: ApiContext, tenant: str, job_id: str) -> None:
    """Revoke the job's feed (404 `FeedNotFound` when it has none)."""
    job = await find_job(ctx, tenant, job_id)
    if not await postgres.revoke_feed(ctx.pool, tenant, job.uid):
        raise ApiError(404, "FeedNotFound", f"job {job_id} has no calendar feed")


async def revoke_by_id(ctx: ApiContext, tenant: str, feed_id: str) -> None:
    """Revoke the tenant's feed `feed_id` (404 `FeedNotFound` when it has none such)."""
    if not await postgres.revoke_feed_by_id(ctx.pool, tenant, ctx.cfg.namespace, feed_id):
        raise ApiError(404, "FeedNotFound", f"no calendar feed {feed_id}")


async def resolve(ctx: ApiContext, token: str, found: postgres.Feed | None = None) -> Served:
    """What a feed token serves and its stored parameters (`found`: the feed the Gate
    looked up already); 404 when the feed does not serve (revoked, expired, its key
    revoked) or its pinned job is gone (a new job under the same name is not the feed's)."""
    found = found or await postgres.find_feed(ctx.pool, token_hash(token))
    if found is None:
        raise ApiError(404, "FeedNotFound", GONE)
    params = CalendarParams.from_json(found.params)
    if found.follow:
        return Served(await _newest(ctx, found), params, found)
    job = await lookup(ctx, found.job_name, found.tenant)
    if job is None or job.uid != found.job_uid:
        raise ApiError(404, "FeedNotFound", GONE)
    return Served(job, params, found)


async def _newest(ctx: ApiContext, feed: postgres.Feed) -> Job | None:
    """The tenant's newest Succeeded job of the feed's kind, as recorded (None: none yet)."""
    name = await postgres.newest_succeeded(ctx.pool, feed.tenant, feed.namespace, feed.follow or "")
    return await lookup(ctx, name, feed.tenant) if name else None
