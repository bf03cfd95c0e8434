"""Calendar feeds: a secret URL per job that calendar apps subscribe to without an API
key (`POST/DELETE /api/v1/jobs/{id}/feed`, `GET /feeds/{token}.ics`).

The token is 256 random bits, stored only as its SHA-256 (a database dump reveals no
feed). So it cannot be shown twice: POST makes a new feed each time, revoking the job's
previous one. The feed's answer is byte-identical while the job is unchanged (DTSTAMP is
the job's completion, SEQUENCE 0) and carries an ETag, so polling apps get 304s."""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from . import calendars, jobs, store
from .calendars import ICS, CalendarParams, calendar_params
from .deps import services, tenant
from .errors import ApiError
from .httpcache import conditional
from .schemas import COMMON, NOT_MODIFIED, PREFIX, FeedOut, errors

Token = Path(..., min_length=32, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="The feed's secret token")
_CALENDAR_PARAMS = {"from", "until", "examHours", "exclude"}

feed_api = APIRouter(prefix=PREFIX, tags=["feeds"])
feeds = APIRouter(tags=["feeds"])


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def feed_urls(request: Request, base: str, token: str) -> dict:
    root = (base or str(request.base_url)).rstrip("/")
    url = f"{root}/feeds/{token}.ics"
    parts = urlsplit(url)
    return {"token": token, "url": url, "webcal": f"webcal://{parts.netloc}{parts.path}"}


@feed_api.post("/jobs/{job_id}/feed", status_code=201, response_model=FeedOut,
               responses=errors(404, 422, *COMMON),
               summary="A calendar feed URL for the job (a new one each time; the previous one is revoked)")
async def create_feed(request: Request, job_id: str = Path(..., min_length=1, max_length=63,
                                                           pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
                      params: CalendarParams = Depends(calendar_params)):
    svc, who = services(request), tenant(request)
    job = await jobs.find_job(svc, who, job_id)
    token = secrets.token_urlsafe(32)
    await store.create_feed(svc.pool, _hash(token), store.Feed(who, svc.cfg.namespace, job.name, job.uid,
                                                                 params.to_json()))
    return JSONResponse(feed_urls(request, svc.cfg.public_url, token), status_code=201)


@feed_api.delete("/jobs/{job_id}/feed", status_code=204, response_class=Response,
                 responses=errors(404, 422, *COMMON), summary="Revoke the job's calendar feed")
async def revoke_feed(request: Request, job_id: str = Path(..., min_length=1, max_length=63,
                                                           pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")):
    svc, who = services(request), tenant(request)
    job = await jobs.find_job(svc, who, job_id)
    if not await store.revoke_feed(svc.pool, job.uid):
        raise ApiError(404, "FeedNotFound", f"job {job_id} has no calendar feed")
    return Response(status_code=204)


@feeds.get("/feeds/{token}.ics", response_class=Response,
           responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}},
                            "description": "The job's iCalendar file"},
                      **NOT_MODIFIED, **errors(400, 404, 409, 422, 408, 429, 503)},
           summary="A calendar feed (no API key: the token in the URL is the secret)")
async def feed(request: Request, token: str = Token, given: CalendarParams = Depends(calendar_params)):
    svc = services(request)
    found = await store.find_feed(svc.pool, _hash(token))
    job = await jobs.lookup(svc, found.job_name, found.tenant) if found else None
    if found is None or job is None or job.uid != found.job_uid:
        raise ApiError(404, "FeedNotFound", "no such calendar feed (revoked, or its job was deleted)")
    params = CalendarParams.from_json(found.params).overridden(given, _CALENDAR_PARAMS & set(request.query_params))
    return conditional(request, await calendars.render(svc, job, params), ICS)
