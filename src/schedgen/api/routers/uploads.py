"""`POST /api/v1/uploads`: the multipart form streamed in, the upload accepted (202)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..context import ApiContext
from ..dependencies import context, principal
from ..gate import Principal
from ..multipart import read_upload
from ..schemas import COMMON, PREFIX, UPLOAD_REQUEST, Accepted, errors
from ..services import uploads
from ..services.uploads import Receipt

router = APIRouter(prefix=PREFIX)


@router.post("/uploads", status_code=202, response_model=Accepted, tags=["jobs"], openapi_extra=UPLOAD_REQUEST,
             operation_id="uploadSchedule",
             responses=errors(400, 403, 409, 413, 415, 422, *COMMON),
             summary="Upload a schedule PDF; creates a ParseJob")
async def upload(request: Request, ctx: ApiContext = Depends(context), who: Principal = Depends(principal)):
    return accepted_response(await receive(request, ctx, who))


async def receive(request: Request, ctx: ApiContext, who: Principal) -> Receipt:
    """Read the streamed form (413/415 before anything is stored), then accept it for the
    caller's tenant; the compatibility upload shares this. The upload's bytes are reserved
    in the process's budget before the first is read and until its spooled file is gone
    (503 `UploadCapacityExceeded` when they do not fit: nothing was written)."""
    cfg = ctx.cfg
    length = request.headers.get("content-length")
    with ctx.uploads.hold(reservation(length, cfg.max_upload_bytes)):
        upload = await read_upload(request.headers.get("content-type", ""), length, request.stream(),
                                   max_bytes=cfg.max_upload_bytes, spool_bytes=cfg.spool_memory_bytes)
        try:
            return await uploads.accept(ctx, upload, who.tenant, who.max_priority,
                                        request.headers.get("idempotency-key"))
        finally:
            upload.close()


def reservation(content_length: str | None, max_bytes: int) -> int:
    """The most bytes the upload's file can hold: its declared length (the body holds the
    file and a little more), else (chunked, or a bad length the reader refuses) the
    largest upload allowed."""
    try:
        declared = int(content_length) if content_length is not None else max_bytes
    except ValueError:
        declared = max_bytes
    return max(0, min(declared, max_bytes))


def accepted_response(receipt: Receipt) -> JSONResponse:
    """202 with the job's links; `Location` is its status URL."""
    status = receipt.status
    name = status["id"]
    base = f"{PREFIX}/jobs/{name}"
    body = {"id": name, "uid": status["uid"], "tenant": status["tenant"], "phase": status["phase"],
            "priority": status["priority"], "scheduleType": status["scheduleType"],
            "sha256": receipt.sha256, "size": receipt.size, "replayed": receipt.replayed,
            "statusUrl": base, "eventsUrl": f"{base}/events", "calendarUrl": f"{base}/calendar.ics"}
    headers = {"Location": base}
    if receipt.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)
