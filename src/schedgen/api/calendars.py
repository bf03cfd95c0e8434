"""Calendar parameters and rendering, shared by `GET /api/v1/jobs/{id}/calendar.ics` and
the calendar feeds (feeds.py): same query parameters, same bytes for the same job."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from typing import Annotated

from fastapi import Query
from pydantic import StringConstraints

from schedgen.ics import CalendarRangeRequired, InvalidExclusion, parse_exclusions, to_ics
from schedgen.models import ScheduleKind

from . import jobs
from .errors import ApiError
from .services import Services

ICS = "text/calendar; charset=utf-8"
EXCLUSION = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(\.\.[0-9]{4}-[0-9]{2}-[0-9]{2})?$"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class CalendarParams:
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    exam_hours: float = 3.0
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        try:
            parse_exclusions(self.exclude)
        except InvalidExclusion as exc:
            raise ApiError(422, "InvalidParameters", f"exclude: {exc}") from None

    def to_json(self) -> dict:
        return {"from": self.first_day.isoformat() if self.first_day else None,
                "until": self.last_day.isoformat() if self.last_day else None,
                "examHours": self.exam_hours, "exclude": list(self.exclude)}

    @classmethod
    def from_json(cls, doc: dict) -> "CalendarParams":
        day = lambda v: dt.date.fromisoformat(v) if v else None  # noqa: E731
        return cls(day(doc.get("from")), day(doc.get("until")), float(doc.get("examHours") or 3.0),
                   tuple(doc.get("exclude") or ()))

    def overridden(self, other: "CalendarParams", given: set[str]) -> "CalendarParams":
        """These stored parameters with the ones a request gives explicitly."""
        return CalendarParams(other.first_day if "from" in given else self.first_day,
                              other.last_day if "until" in given else self.last_day,
                              other.exam_hours if "examHours" in given else self.exam_hours,
                              other.exclude if "exclude" in given else self.exclude)


def calendar_params(first_day: dt.date | None = Query(None, alias="from",
                                                      description="First day of lectures (ISO date)"),
                    last_day: dt.date | None = Query(None, alias="until",
                                                     description="Last day of lectures (ISO date)"),
                    exam_hours: float = Query(3.0, alias="examHours", ge=0.5, le=12,
                                              description="Assumed length of exams without an end time"),
                    exclude: list[Annotated[str, StringConstraints(pattern=EXCLUSION)]] = Query(
                        [], max_length=50,
                                               description="Skip lectures on a date (YYYY-MM-DD) or inclusive "
                                                           "range (FROM..UNTIL, ≤366 days); repeatable, ≤50")
                    ) -> CalendarParams:
    """The calendar query parameters (a FastAPI dependency)."""
    return CalendarParams(first_day, last_day, exam_hours, tuple(exclude))


def stamp_of(job: jobs.Job) -> dt.datetime:
    """DTSTAMP: when the job completed, so the same job renders the same bytes."""
    value = job.status.get("completedAt") or job.status.get("createdAt")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else EPOCH


async def render(svc: Services, job: jobs.Job, params: CalendarParams) -> bytes:
    kind, events = await jobs.succeeded_events(svc, job)
    try:
        return to_ics(ScheduleKind(kind), events, first_day=params.first_day, last_day=params.last_day,
                      exam_hours=params.exam_hours, stamp=stamp_of(job), exclude=parse_exclusions(params.exclude))
    except CalendarRangeRequired as exc:
        raise ApiError(400, "CalendarRangeRequired", str(exc).replace("--from/--until", "from/until")) from None
