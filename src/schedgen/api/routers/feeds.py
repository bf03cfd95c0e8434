"""Calendar feeds over HTTP: `POST/DELETE /api/v1/jobs/{id}/feed`, `POST/GET /api/v1/feeds`
and `PUT/DELETE /api/v1/feeds/{id}` (with the API key) and `GET /feeds/{token}.ics`
(without: the token in the URL is the secret; the Gate looks it up, counts it and hands
the feed on). A feed's answer is byte-identical while the job it serves is unchanged
(DTSTAMP is the job's completion, SEQUENCE 0) and carries an ETag and Last-Modified, so
polling apps get 304s; a following feed's answer changes when a newer job succeeds."""

from __future__ import annotations

from urllib.parse import urlsplit

import datetime as dt

from email.utils import format_datetime

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..context import ApiContext
from ..dependencies import calendar_params, context, principal, tenant
from ..gate import Principal
from ..httpcache import conditional
from ..schemas import (COMMON, FEED_ID, ICS, JOB_ID, NOT_MODIFIED, PREFIX, FeedInfo, FeedList, FeedOut, FeedTarget,
                       errors)
from ..services import calendars, feeds
from ..services.calendars import CalendarParams, stamp_of
from ..services.lookup import iso

router = APIRouter(tags=["feeds"])
JobId = Path(..., min_length=1, max_length=63, pattern=JOB_ID)
Token = Path(..., min_length=32, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The feed's secret token")
FeedId = Path(..., pattern=FEED_ID, description="The feed's id (FeedOut.id)")
CALENDAR_QUERY = {"from", "until", "examHours", "exclude"}  # a feed URL's query overrides these stored ones
ExpiresInDays = Query(None, alias="expiresInDays", ge=1, le=3650,
                      description="Days the feed serves (default and maximum: the server's SCHEDGEN_API_FEED_MAX_DAYS)")


def feed_urls(request: Request, base: str, token: str, expires_at: dt.datetime | None = None) -> dict:
    """The feed's URLs: under `SCHEDGEN_API_PUBLIC_URL` when set, else this request's."""
    root = (base or str(request.base_url)).rstrip("/")
    url = f"{root}/feeds/{token}.ics"
    parts = urlsplit(url)
    expires = expires_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else None
    return {"token": token, "url": url, "webcal": f"webcal://{parts.netloc}{parts.path}", "expiresAt": expires}


def made_feed(request: Request, ctx: ApiContext, made: feeds.NewFeed) -> JSONResponse:
    """201 with the new feed's URLs (its token shown this once) and what it serves."""
    doc = feed_urls(request, ctx.cfg.public_url, made.token, made.expires_at)
    doc |= {"id": made.id, "jobId": made.job_id, "follow": {"scheduleType": made.follow} if made.follow else None}
    return JSONResponse(doc, status_code=201)


def feed_info(row: dict) -> dict:
    """A stored feed as the API shows it (FeedInfo)."""
    return {"id": row["id"], "jobId": None if row["follow"] else row["job_name"],
            "follow": {"scheduleType": row["follow"]} if row["follow"] else None, "params": row["params"],
            "createdAt": iso(row["created_at"]), "expiresAt": iso(row["expires_at"])}


def target_of(body: FeedTarget) -> feeds.Target:
    return feeds.Target(body.jobId, body.follow.scheduleType if body.follow else None)


@router.post(PREFIX + "/jobs/{job_id}/feed", status_code=201, response_model=FeedOut, operation_id="createFeed",
             responses=errors(404, 422, *COMMON),
             summary="A calendar feed URL for the job (a new one each time; the previous one is revoked)")
async def create_feed(request: Request, job_id: str = JobId, params: CalendarParams = Depends(calendar_params),
                      days: int | None = ExpiresInDays,
                      ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    """The feed ends when it expires or when the caller's API key is revoked."""
    made = await feeds.create(ctx, who.tenant, who.key_hash, feeds.Target(job_id=job_id), params, days)
    return made_feed(request, ctx, made)


@router.post(PREFIX + "/feeds", status_code=201, response_model=FeedOut, operation_id="createTenantFeed",
             responses=errors(400, 404, 422, *COMMON),
             summary="A calendar feed pinned to a job (`jobId`) or following the newest Succeeded job of a "
                     "schedule kind (`follow`)")
async def create_tenant_feed(request: Request, target: FeedTarget = Body(...),
                             params: CalendarParams = Depends(calendar_params), days: int | None = ExpiresInDays,
                             ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    """A following feed keeps its URL when the timetable is re-uploaded: it serves the
    newest job (by upload) of that kind once it has Succeeded; before the first one, a
    calendar without events. Lectures need `from` and `until`."""
    made = await feeds.create(ctx, who.tenant, who.key_hash, target_of(target), params, days)
    return made_feed(request, ctx, made)


@router.get(PREFIX + "/feeds", response_model=FeedList, operation_id="listFeeds", responses=errors(*COMMON),
            summary="The tenant's calendar feeds that serve (without their tokens)")
async def list_feeds(ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    return JSONResponse({"items": [feed_info(row) for row in await feeds.listing(ctx, who)]})


@router.put(PREFIX + "/feeds/{feed_id}", response_model=FeedInfo, operation_id="pointFeed",
            responses=errors(400, 404, 409, 422, *COMMON),
            summary="Point a feed at another job of the tenant, or make it follow a kind; its URL stays")
async def point_feed(request: Request, feed_id: str = FeedId, target: FeedTarget = Body(...),
                     params: CalendarParams = Depends(calendar_params),
                     ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    """Calendar query parameters given replace the stored ones; the others stay."""
    changes = {k: v for k, v in params.to_json().items() if k in set(request.query_params)}
    return JSONResponse(feed_info(await feeds.point(ctx, who, feed_id, target_of(target), changes)))


@router.delete(PREFIX + "/feeds/{feed_id}", status_code=204, response_class=Response, operation_id="deleteFeed",
               responses=errors(404, 422, *COMMON), summary="Revoke a calendar feed (its URL answers 404)")
async def delete_feed(feed_id: str = FeedId, ctx: ApiContext = Depends(context), who: str = Depends(tenant)):
    await feeds.revoke_by_id(ctx, who, feed_id)
    return Response(status_code=204)


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
    served = await feeds.resolve(ctx, token, getattr(request.state, "feed", None))
    params = served.params.overridden(given, CALENDAR_QUERY & set(request.query_params))
    if served.job is None:  # a following feed before its first Succeeded job
        body = calendars.render_empty(ctx, served.feed.follow or "", served.feed.tenant, params)
        return conditional(request, body, ICS)
    body = await calendars.render(ctx, served.job, params)
    return conditional(request, body, ICS, {"Last-Modified": format_datetime(stamp_of(served.job), usegmt=True)})
