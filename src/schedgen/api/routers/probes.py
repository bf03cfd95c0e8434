"""Probes at the root: liveness and readiness (each backend checked). They answer without a
key, so they say which backend is down and nothing about it (no host, user, bucket or
error text: those are logged). The metrics have a listener of their own (main.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ..context import ApiContext
from ..dependencies import context
from ..schemas import Health, Ready

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health, operation_id="checkLiveness")
async def healthz():
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_model=Ready, responses={503: {"model": Ready}}, operation_id="checkReadiness")
async def readyz(ctx: ApiContext = Depends(context)):
    checks = await ctx.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)
