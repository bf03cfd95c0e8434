"""Calendar parameters and rendering, shared by `GET /api/v1/jobs/{id}/calendar.ics` and
the calendar feeds: same parameters, same bytes for the same job."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from schedgen.ics import CalendarRangeRequired, InvalidExclusion, calendar_name, parse_exclusions, to_ics
from schedgen.models import Event, ScheduleKind

from ..context import ApiContext
from ..errors import ApiError
from .events import succeeded_events
from .lookup import Job

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


def stamp_of(job: Job) -> dt.datetime:
    """DTSTAMP: when the job completed, so the same job renders the same bytes."""
    value = job.status.get("completedAt") or job.status.get("createdAt")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else EPOCH


async def render(ctx: ApiContext, job: Job, params: CalendarParams) -> bytes:
    """The job's events as an iCalendar file (409 unless it Succeeded)."""
    kind, events = await succeeded_events(ctx, job)
    return _ics(ctx, ScheduleKind(kind), events, params, stamp_of(job), job.tenant)


def render_empty(ctx: ApiContext, kind: str, tenant: str, params: CalendarParams) -> bytes:
    """A named calendar without events: a following feed before its first job succeeded
    (or after the last one was erased), so subscribers keep a valid calendar."""
    return _ics(ctx, ScheduleKind(kind), [], params, EPOCH, tenant)


def _ics(ctx: ApiContext, kind: ScheduleKind, events: list[Event], params: CalendarParams, stamp: dt.datetime,
         tenant: str) -> bytes:
    minutes = ctx.cfg.feed_refresh_minutes
    try:
        return to_ics(kind, events, first_day=params.first_day, last_day=params.last_day,
                      exam_hours=params.exam_hours, stamp=stamp, exclude=parse_exclusions(params.exclude),
                      name=calendar_name(kind, events, params.first_day, params.last_day, tenant),
                      refresh=dt.timedelta(minutes=minutes) if minutes else None)
    except CalendarRangeRequired as exc:
        raise ApiError(400, "CalendarRangeRequired", str(exc).replace("--from/--until", "from/until")) from None
