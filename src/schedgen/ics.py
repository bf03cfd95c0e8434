"""Events to an iCalendar file (RFC 5545) with the `icalendar` library.

Dated events (tests, exams) are placed in Africa/Johannesburg local time. Lectures are
weekly: each becomes a recurring event from the first matching weekday on or after
`first_day` until `last_day`, skipping the `exclude`d dates (EXDATE: recess weeks,
public holidays). Exams list no end time, so one is assumed (`exam_hours`) and the
description says so. With a fixed `stamp` the output is byte-identical for the same
events (UIDs are hashes of the event; SEQUENCE 0), so calendar feeds stay stable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import icalendar

from schedgen.models import Event, ScheduleKind

TIMEZONE = ZoneInfo("Africa/Johannesburg")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PRODID = "-//schedgen//UP schedule//EN"


MAX_EXCLUSIONS = 50
MAX_EXCLUSION_DAYS = 366

DateRange = tuple[dt.date, dt.date]  # inclusive


class CalendarRangeRequired(ValueError):
    """Lectures recur weekly: a calendar needs the first and last day of the term."""


class InvalidExclusion(ValueError):
    """An `exclude` value that is not a date or an inclusive date range, or too many."""


def parse_exclusions(values: list[str] | tuple[str, ...]) -> list[DateRange]:
    """`2026-04-27` or `2026-03-30..2026-04-03` (inclusive) each; at most 50 values, each
    range at most 366 days."""
    if len(values) > MAX_EXCLUSIONS:
        raise InvalidExclusion(f"at most {MAX_EXCLUSIONS} exclusions")
    ranges = []
    for value in values:
        first, sep, last = value.strip().partition("..")
        try:
            start = dt.date.fromisoformat(first)
            end = dt.date.fromisoformat(last) if sep else start
        except ValueError:
            raise InvalidExclusion(f"{value[:40]!r} is not a date (YYYY-MM-DD) or a range (FROM..UNTIL)") from None
        if end < start:
            raise InvalidExclusion(f"{value!r}: the range ends before it starts")
        if (end - start).days >= MAX_EXCLUSION_DAYS:
            raise InvalidExclusion(f"{value!r}: a range spans at most {MAX_EXCLUSION_DAYS} days")
        ranges.append((start, end))
    return ranges


def calendar_name(kind: ScheduleKind, events: list[Event], first_day: dt.date | None = None,
                  last_day: dt.date | None = None, owner: str | None = None) -> str:
    """What a calendar app shows for the calendar, e.g. "UP exams 2026 (tenant)": the
    kind, the year(s) its events fall in (lectures: the term's), the owner if given."""
    if kind is ScheduleKind.LECTURE:
        years = {d.year for d in (first_day, last_day) if d}
    else:
        years = {int(e.date[:4]) for e in events if e.date and e.date[:4].isdigit()}
    name = f"UP {kind.value}s"
    if years:
        name += f" {min(years)}" if len(years) == 1 else f" {min(years)}-{max(years)}"
    return f"{name} ({owner})" if owner else name


def to_ics(kind: ScheduleKind, events: list[Event], *, first_day: dt.date | None = None,
           last_day: dt.date | None = None, exam_hours: float = 3.0,
           stamp: dt.datetime | None = None, exclude: list[DateRange] | tuple = (),
           name: str | None = None, refresh: dt.timedelta | None = None) -> bytes:
    """The calendar; `name`: NAME (RFC 7986) and X-WR-CALNAME; `refresh`: how often a
    subscriber should poll, REFRESH-INTERVAL (RFC 7986) and X-PUBLISHED-TTL (Outlook, Apple)."""
    if kind is ScheduleKind.LECTURE and (first_day is None or last_day is None):
        raise CalendarRangeRequired("lecture calendars need a first and last day (--from/--until)")
    if first_day and last_day and last_day < first_day:
        raise CalendarRangeRequired("the last day is before the first day")
    stamp = stamp or dt.datetime.now(dt.timezone.utc)
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("x-wr-timezone", str(TIMEZONE))
    _describe(calendar, name, refresh)
    for event in events:
        component = _component(kind, event, first_day, last_day, exam_hours, exclude)
        if component is not None:
            component.add("dtstamp", stamp)
            component.add("sequence", 0)
            calendar.add_component(component)
    calendar.add_missing_timezones()
    return calendar.to_ical()


def _describe(calendar: icalendar.Calendar, name: str | None, refresh: dt.timedelta | None) -> None:
    if name:
        calendar.add("name", name)
        calendar.add("x-wr-calname", name)
    if refresh:
        calendar.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})
        calendar.add("x-published-ttl", icalendar.vDuration(refresh).to_ical().decode())


def _component(kind, event: Event, first_day, last_day, exam_hours, exclude=()) -> icalendar.Event | None:
    component = icalendar.Event()
    component.add("uid", _uid(event))
    component.add("summary", f"{event.module} {event.activity}")
    location = "; ".join(event.venues)
    if event.campus:
        location = f"{location} ({event.campus})" if location else event.campus
    if location:
        component.add("location", location)
    description = [f"Group {event.group}"] if event.group else []
    if kind is ScheduleKind.LECTURE:
        day = _first_weekday(first_day, event.day)
        if day > last_day:
            return None
        start, end = _at(day, event.start_time), _at(day, event.end_time)
        until = dt.datetime.combine(last_day, dt.time(23, 59, 59), TIMEZONE).astimezone(dt.timezone.utc)
        component.add("rrule", {"freq": "weekly", "until": until})
        skipped = [_at(d, event.start_time) for d in _weekly(day, last_day) if _excluded(d, exclude)]
        if skipped:
            component.add("exdate", skipped)
    else:
        day = dt.date.fromisoformat(event.date)
        start = _at(day, event.start_time)
        if event.end_time:
            end = _at(day, event.end_time)
        else:
            end = start + dt.timedelta(hours=exam_hours)
            description.append(f"The schedule gives no end time; {exam_hours:g} hours are assumed.")
    component.add("dtstart", start)
    component.add("dtend", end)
    if description:
        component.add("description", "\n".join(description))
    return component


def _weekly(first: dt.date, last: dt.date):
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=7)


def _excluded(day: dt.date, exclude) -> bool:
    return any(start <= day <= end for start, end in exclude)


def _first_weekday(first_day: dt.date, day_name: str) -> dt.date:
    offset = (WEEKDAYS.index(day_name) - first_day.weekday()) % 7
    return first_day + dt.timedelta(days=offset)


def _at(day: dt.date, hhmm: str) -> dt.datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes), TIMEZONE)


def _uid(event: Event) -> str:
    key = "|".join(str(part) for part in (event.module, event.offered, event.group, event.activity,
                                          event.day, event.date, event.start_time, event.end_time))
    return hashlib.sha256(key.encode()).hexdigest()[:32] + "@schedgen"
