"""`/api/v1/queue`: the queue summary and its history (the web page's chart)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from ..context import ApiContext
from ..dependencies import context, principal
from ..gate import Principal
from ..schemas import COMMON, PREFIX, QueueHistoryOut, QueueOut, errors
from ..services.queue import cached_summary, history, tenant_view

router = APIRouter(prefix=PREFIX, tags=["queue"])


@router.get("/queue", response_model=QueueOut, responses=errors(*COMMON), operation_id="getQueue",
            summary="Waiting, running and finished counts of the caller's tenant (an admin key: every tenant's)")
async def queue(ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    if who.admin:
        return JSONResponse(await cached_summary(ctx, None))
    return JSONResponse(tenant_view(await cached_summary(ctx, who.tenant), who.tenant))


@router.get("/queue/history", response_model=QueueHistoryOut, responses=errors(422, *COMMON),
            operation_id="getQueueHistory",
            summary="Waiting, running and finished ParseJobs over the last minutes (the web page's chart)")
async def queue_history(ctx: ApiContext = Depends(context), who: Principal = Depends(principal),
                        minutes: int = Query(60, ge=5, le=1440, description="How far back"),
                        step: int = Query(60, ge=10, le=3600, description="Seconds between points")):
    """From the records: an admin key sees every tenant, any other key its own. At most
    721 points: over a long window a fine step is raised (stepSeconds says which)."""
    return JSONResponse(await history(ctx, None if who.admin else who.tenant, minutes, step))
