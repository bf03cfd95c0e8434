"""Calendar feeds over HTTP: `POST/DELETE /api/v1/jobs/{id}/feed` (with the API key) and
`GET /feeds/{token}.ics` (without: the token in the URL is the secret; the Gate looks it
up, counts it and hands the feed on). A feed's answer is byte-identical while the job is
unchanged (DTSTAMP is the job's completion, SEQUENCE 0) and carries an ETag, so polling
apps get 304s."""

from __future__ import annotations

from urllib.parse import urlsplit

import datetime as dt

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..context import ApiContext
from ..dependencies import calendar_params, context, principal, tenant
from ..gate import Principal
from ..httpcache import conditional
from ..schemas import COMMON, ICS, JOB_ID, NOT_MODIFIED, PREFIX, FeedOut, errors
from ..services import calendars, feeds
from ..services.calendars import CalendarParams

router = APIRouter(tags=["feeds"])
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID)
Token = Path(..., min_length=32, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The feed's secret token")
CALENDAR_QUERY = {"from", "until", "examHours", "exclude"}  # a feed URL's query overrides these stored ones


def feed_urls(request: Request, base: str, token: str, expires_at: dt.datetime | None = None) -> dict:
    """The feed's URLs: under `SCHEDGEN_API_PUBLIC_URL` when set, else this request's."""
    root = (base or str(request.base_url)).rstrip("/")
    url = f"{root}/feeds/{token}.ics"
    parts = urlsplit(url)
    expires = expires_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else None
    return {"token": token, "url": url, "webcal": f"webcal://{parts.netloc}{parts.path}", "expiresAt": expires}


@router.post(PREFIX + "/jobs/{job_id}/feed", status_code=201, response_model=FeedOut, operation_id="createFeed",
             responses=errors(404, 422, *COMMON),
             summary="A calendar feed URL for the job (a new one each time; the previous one is revoked)")
async def create_feed(request: Request, job_id: str = JobId, params: CalendarParams = Depends(calendar_params),
                      days: int | None = Query(None, alias="expiresInDays", ge=1, le=3650,
                                               description="Days the feed serves (default and maximum: the "
                                                           "server's SCHEDGEN_API_FEED_MAX_DAYS)"),
                      ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    """The feed ends when it expires or when the caller's API key is revoked."""
    made = await feeds.create(ctx, who.tenant, who.key_hash, job_id, params, days)
    return JSONResponse(feed_urls(request, ctx.cfg.public_url, made.token, made.expires_at), status_code=201)


@router.delete(PREFIX + "/jobs/{job_id}/feed", status_code=204, response_class=Response, operation_id="revokeFeed",
               responses=errors(404, 422, *COMMON), summary="Revoke the job's calendar feed")
async def revoke_feed(job_id: str = JobId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    await feeds.revoke(ctx, who, job_id)
    return Response(status_code=204)


@router.get("/feeds/{token}.ics", response_class=Response, operation_id="getFeedCalendar",
            responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                             "description": "The job's iCalendar file"},
                       **NOT_MODIFIED, **errors(400, 404, 409, 422, 408, 429, 503)},
            summary="A calendar feed (no API key: the token in the URL is the secret)")
async def feed(request: Request, token: str = Token, given: CalendarParams = Depends(calendar_params),
               ctx: ApiContext = Depends(context)):
    job, stored = await feeds.resolve(ctx, token, getattr(request.state, "feed", None))
    params = stored.overridden(given, CALENDAR_QUERY & set(request.query_params))
    return conditional(request, await calendars.render(ctx, job, params), ICS)
