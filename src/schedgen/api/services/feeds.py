"""Calendar feeds: a secret URL per job that calendar apps subscribe to without an API key.

The token is 256 random bits, stored only as its SHA-256 (a database dump reveals no
feed). So it cannot be shown twice: each new feed revokes the job's previous one."""

from __future__ import annotations

import hashlib
import secrets

from ..backends import postgres
from ..context import ApiContext
from ..errors import ApiError
from .calendars import CalendarParams
from .lookup import Job, find_job, lookup


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create(ctx: ApiContext, tenant: str, job_id: str, params: CalendarParams) -> str:
    """A new feed of the tenant's job with these calendar parameters: its token."""
    job = await find_job(ctx, tenant, job_id)
    token = secrets.token_urlsafe(32)
    await postgres.create_feed(ctx.pool, token_hash(token),
                               postgres.Feed(tenant, ctx.cfg.namespace, job.name, job.uid, params.to_json()))
    return token


async def revoke(ctx: ApiContext, tenant: str, job_id: str) -> None:
    """Revoke the job's feed (404 `FeedNotFound` when it has none)."""
    job = await find_job(ctx, tenant, job_id)
    if not await postgres.revoke_feed(ctx.pool, job.uid):
        raise ApiError(404, "FeedNotFound", f"job {job_id} has no calendar feed")


async def resolve(ctx: ApiContext, token: str) -> tuple[Job, CalendarParams]:
    """The job of a feed token and the feed's stored parameters; 404 when the feed was
    revoked or its job is gone (a new job under the same name is not the feed's)."""
    found = await postgres.find_feed(ctx.pool, token_hash(token))
    job = await lookup(ctx, found.job_name, found.tenant) if found else None
    if found is None or job is None or job.uid != found.job_uid:
        raise ApiError(404, "FeedNotFound", "no such calendar feed (revoked, or its job was deleted)")
    return job, CalendarParams.from_json(found.params)
