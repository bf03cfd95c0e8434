"""FastAPI dependencies shared by the routers: the context, the caller, and the calendar
query parameters."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Annotated

from fastapi import Query, Request
from pydantic import BeforeValidator, StringConstraints

from .context import ApiContext
from .services.calendars import CalendarParams

if TYPE_CHECKING:
    from .gate import Principal

EXCLUSION = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?$"
ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _iso_date(value: object) -> object:
    """Only YYYY-MM-DD: pydantic would also take `0` (a Unix time: 1970-01-01)."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("an ISO date, YYYY-MM-DD")
    return value


IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]


def context(request: Request) -> ApiContext:
    return request.app.state.context


def principal(request: Request) -> "Principal":
    """The caller the Gate authenticated."""
    return request.state.principal


def tenant(request: Request) -> str:
    """The tenant the Gate authenticated (from the key, never from the request)."""
    return principal(request).tenant


def calendar_params(first_day: IsoDate | None = Query(None, alias="from",
                                                      description="First day of lectures (ISO date)"),
                    last_day: IsoDate | None = Query(None, alias="until",
                                                     description="Last day of lectures (ISO date)"),
                    exam_hours: float = Query(3.0, alias="examHours", ge=0.5, le=12,
                                              description="Assumed length of exams without an end time"),
                    exclude: list[Annotated[str, StringConstraints(pattern=EXCLUSION)]] = Query(
                        [], max_length=50, description="Skip lectures on a date (YYYY-MM-DD) or inclusive "
                                                       "range (FROM..UNTIL, ≤366 days); repeatable, ≤50")
                    ) -> CalendarParams:
    """The calendar query parameters (`calendar.ics` and the feeds take the same)."""
    return CalendarParams(first_day, last_day, exam_hours, tuple(exclude))
