"""Conditional GETs: a strong ETag (a hash of the body) and `If-None-Match` → 304.

The ETag is computed from the bytes about to be sent, so it changes exactly when the
answer does, whichever source (ParseJob or record) produced it."""

from __future__ import annotations

import hashlib
import json

from fastapi import Request
from fastapi.responses import Response


JSON = "application/json"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:40] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison, a list, or `*`."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def json_bytes(doc) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def conditional(request: Request, body: bytes, media_type: str = JSON, headers: dict | None = None) -> Response:
    """200 with the body and its ETag, or 304 (no body) when the client has it already."""
    etag = etag_of(body)
    out = {**(headers or {}), "ETag": etag, "Cache-Control": "private, no-cache"}
    if matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={k: v for k, v in out.items() if k != "Content-Disposition"})
    return Response(body, media_type=media_type, headers=out)
