"""Request helpers (FastAPI dependencies) shared by the routers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from .services import Services

if TYPE_CHECKING:
    from .gate import Principal


def services(request: Request) -> Services:
    return request.app.state.services


def principal(request: Request) -> "Principal":
    """The caller the Gate authenticated."""
    return request.state.principal


def tenant(request: Request) -> str:
    """The tenant the Gate authenticated (from the key, never from the request)."""
    return principal(request).tenant
