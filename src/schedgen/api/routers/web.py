"""The web page: `/` and its three static files (package data in `static/`), no build step.

The files are read once at import and served from memory with an ETag. Only the named
files exist (no path from the request reaches the file system). Every answer carries a
strict Content-Security-Policy: scripts, styles and requests from this origin only, no
inline script, no frames. The Gate leaves these paths alone (only /api/v1 needs a key);
the page asks for a key itself (docs/web.md).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}


def _load() -> dict[str, tuple[bytes, str]]:
    folder = files("schedgen.api") / "static"
    out = {}
    for name in TYPES:
        body = (folder / name).read_bytes()
        out[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


FILES = _load()
router = APIRouter(include_in_schema=False)


def serve(name: str, request: Request) -> Response:
    body, etag = FILES[name]
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=TYPES[name], headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    return serve("index.html", request)


@router.get("/static/{name}")
async def static(name: str, request: Request) -> Response:
    if name not in FILES or name == "index.html":
        raise HTTPException(404, "no such file")
    return serve(name, request)
