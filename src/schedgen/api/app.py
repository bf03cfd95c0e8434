"""The upload API (FastAPI): PDFs in, ParseJobs created, status and events out.

`create_app` assembles the FastAPI app from the routers (routers/) around one
`ApiContext`; `asgi` wraps it in the Gate (gate.py), which is what uvicorn serves.
See docs/api.md.
"""

from __future__ import annotations

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from .config import ApiConfig
from .context import ApiContext
from .errors import BACKEND_ERRORS, ApiError, backend_unavailable, error_response
from .gate import Gate, is_api_path
from . import schemas
from .routers import compat, feeds, jobs, probes, queue, uploads, web
from .schemas import KEY_REQUIRED, SECURITY_SCHEMES, is_compat_api_path

log = logging.getLogger("schedgen.api")


def create_app(cfg: ApiConfig | None = None, context: ApiContext | None = None) -> FastAPI:
    ctx = context or ApiContext(cfg or ApiConfig.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await ctx.start()
        try:
            yield
        finally:
            await ctx.close()

    app = FastAPI(title="schedgen upload API", version="1.0.0", lifespan=lifespan,
                  generate_unique_id_function=operation_id,
                  description="Upload University of Pretoria schedule PDFs; follow the parse; fetch events "
                              "as JSON or iCalendar. Every `/api/...` operation needs an API key, as "
                              "`X-API-Key: KEY` or `Authorization: Bearer KEY` (Authorize, above). Errors are "
                              "RFC 9457 problem details (application/problem+json) with a stable `code`.")
    app.state.context = ctx
    for area in (probes, uploads, jobs, queue, web, feeds):  # web: the page at / (docs/web.md)
        app.include_router(area.router)
    if (cfg or ctx.cfg).compat_routes:
        app.include_router(compat.router)
    _handle_errors(app)
    _document(app)
    return app


def operation_id(route: APIRoute) -> str:
    """A route's operationId when it names none: its handler's name in camelCase
    (every route here names one; this keeps a new route's readable too)."""
    first, *rest = route.name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def _document(app: FastAPI) -> None:
    """What FastAPI cannot know, added to the OpenAPI document.

    Which operations need an API key and how to send it (the Gate, not FastAPI, checks
    keys): the two schemes (`/docs` gets its Authorize button) and, per operation, the key
    requirement on the paths the Gate authenticates (`is_api_path`, the compatibility API
    paths) or none (probes, calendar feeds: their token is in the path). And the models'
    examples as written: FastAPI drops their nulls, which would leave out required fields."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        components = doc.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        for name, schema in components.get("schemas", {}).items():
            model = getattr(schemas, name, None)
            if isinstance(model, type) and issubclass(model, BaseModel) and "examples" in schema:
                schema["examples"] = model.model_json_schema()["examples"]
        for path, operations in doc.get("paths", {}).items():
            keyed = is_api_path(path) or is_compat_api_path(path)
            for operation in operations.values():
                operation["security"] = KEY_REQUIRED if keyed else []
        app.openapi_schema = doc
        return doc

    app.openapi = openapi


def asgi(cfg: ApiConfig | None = None):
    """The app behind its Gate (and CORS when origins are configured): what uvicorn serves.

    CORS is outermost so that preflights are answered without a key and the Gate's own
    errors (401, 429) carry the headers a browser needs to read them."""
    gate = Gate(create_app(cfg))
    origins = gate.cfg.cors_origins
    if not origins:
        return gate
    return CORSMiddleware(gate, allow_origins=list(origins), allow_credentials=True,
                          allow_methods=["GET", "POST", "DELETE"],
                          allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key",
                                         "If-None-Match", "X-Request-ID"],
                          expose_headers=["ETag", "Location", "Retry-After", "RateLimit-Limit",
                                          "RateLimit-Remaining", "RateLimit-Reset", "Idempotent-Replayed", "X-Request-ID"],
                          max_age=600)


def _handle_errors(app: FastAPI) -> None:
    """Every error a route meets answers in the API's JSON shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc, path=request.url.path, compat=_compat(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg')}")
        return error_response(ApiError(422, "InvalidParameters", "; ".join(parts) or "invalid request"),
                              path=request.url.path, compat=_compat(request))

    async def backend_error(request: Request, exc: Exception):
        return error_response(backend_unavailable(exc), path=request.url.path, compat=_compat(request))

    for exc_type in BACKEND_ERRORS:
        app.add_exception_handler(exc_type, backend_error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return error_response(ApiError(exc.status_code, code, str(exc.detail)), headers, path=request.url.path,
                              compat=_compat(request))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ApiError(500, "InternalError", "internal error"), path=request.url.path,
                              compat=_compat(request))


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path (several routes may share it)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _compat(request: Request) -> bool:
    return bool(getattr(getattr(request.app.state.context, "cfg", None), "compat_routes", False))
