"""The ICS export and the `schedgen parse` command."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import icalendar
import pytest

from schedule_pdfs import FIXTURES
from schedgen.ics import CalendarRangeRequired, calendar_name, to_ics
from schedgen.models import Event, ScheduleKind
from schedgen.runner.parsing import parse_pdf

SCHEDGEN = [str(Path(sys.executable).with_name("schedgen"))]


def events_of(ics: bytes):
    return [c for c in icalendar.Calendar.from_ical(ics).walk("VEVENT")]


def test_lectures_recur_weekly_in_the_term():
    result = parse_pdf(FIXTURES / "up" / "UP_MOD_XLS.pdf")
    ics = to_ics(result.kind, result.events, first_day=dt.date(2025, 7, 21), last_day=dt.date(2025, 10, 31))
    vevents = events_of(ics)
    assert len(vevents) == 30
    first = vevents[0]
    assert str(first["summary"]) == "COS 214 L1"
    start = first.decoded("dtstart")
    assert (start.date(), start.hour, start.minute) == (dt.date(2025, 7, 21), 8, 30)  # a Monday
    assert str(start.tzinfo) == "Africa/Johannesburg"
    assert first["rrule"]["FREQ"] == ["WEEKLY"]
    assert len({str(v["uid"]) for v in vevents}) == 30
    with pytest.raises(CalendarRangeRequired):
        to_ics(result.kind, result.events)


def test_exams_get_an_assumed_duration_that_is_said():
    result = parse_pdf(FIXTURES / "up" / "UP_EXAM_SS.pdf")
    vevent = events_of(to_ics(result.kind, result.events, exam_hours=2.5))[0]
    assert vevent.decoded("dtend") - vevent.decoded("dtstart") == dt.timedelta(hours=2.5)
    assert "assumed" in str(vevent["description"])
    assert "IT Building CBT Labs 1,2,3" in str(vevent["location"])


def test_tests_are_dated_events():
    result = parse_pdf(FIXTURES / "up" / "UP_TST_PDF.pdf")
    vevents = events_of(to_ics(result.kind, result.events))
    assert len(vevents) == 12
    assert vevents[0].decoded("dtstart").isoformat() == "2025-08-23T10:00:00+02:00"
    assert vevents[0].decoded("dtend").isoformat() == "2025-08-23T11:30:00+02:00"


def test_cli_json_and_errors(tmp_path):
    out = subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_TST_PDF.pdf")],
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["kind"] == "test" and len(doc["events"]) == 12
    assert set(doc["events"][0]) >= {"module", "activity", "group", "day", "date", "startTime", "endTime",
                                      "venues", "campus"}
    bad = subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "synthetic" / "invalid-format.pdf")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: UnknownScheduleType: ")


def test_cli_ics_for_lectures(tmp_path):
    target = tmp_path / "lectures.ics"
    subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_MOD_XLS.pdf"), "-o", "ics",
                               "--from", "2025-07-21", "--until", "2025-10-31", "--output-file", str(target)], check=True)
    assert len(events_of(target.read_bytes())) == 30
    # -o is the format (kubectl's convention): the old `-o FILE` is refused with a hint
    old = subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_MOD_XLS.pdf"), "-o", str(target)],
                         capture_output=True, text=True)
    assert old.returncode == 2 and "--output-file FILE writes to a file" in old.stderr
    missing = subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_MOD_XLS.pdf"), "-o", "ics"],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "CalendarRangeRequired" in missing.stderr


def test_excluded_dates_become_exdates_at_the_lecture_start():
    from schedgen.ics import parse_exclusions

    result = parse_pdf(FIXTURES / "up" / "UP_MOD_XLS.pdf")
    exclude = parse_exclusions(["2025-09-22..2025-09-26", "2025-08-11"])  # a recess week and a Monday
    vevents = events_of(to_ics(result.kind, result.events, first_day=dt.date(2025, 7, 21),
                               last_day=dt.date(2025, 10, 31), exclude=exclude))
    first = vevents[0]  # COS 214 L1, Mondays 08:30
    exdates = [d.dt for x in (first["exdate"] if isinstance(first["exdate"], list) else [first["exdate"]])
               for d in x.dts]
    assert [(d.date(), d.hour, d.minute, str(d.tzinfo)) for d in exdates] == [
        (dt.date(2025, 8, 11), 8, 30, "Africa/Johannesburg"), (dt.date(2025, 9, 22), 8, 30, "Africa/Johannesburg")]
    # every recurring lecture skips the recess week on its own weekday and time
    for v in vevents:
        start = v.decoded("dtstart")
        days = [d.dt for x in (v["exdate"] if isinstance(v["exdate"], list) else [v["exdate"]]) for d in x.dts]
        assert any(dt.date(2025, 9, 22) <= d.date() <= dt.date(2025, 9, 26) for d in days)
        assert all((d.hour, d.minute, d.weekday()) == (start.hour, start.minute, start.weekday()) for d in days)
    # without exclusions: no EXDATE; with a fixed stamp the output is byte-identical
    stamp = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc)
    plain = to_ics(result.kind, result.events, first_day=dt.date(2025, 7, 21), last_day=dt.date(2025, 10, 31),
                   stamp=stamp)
    assert b"EXDATE" not in plain
    assert plain == to_ics(result.kind, result.events, first_day=dt.date(2025, 7, 21),
                           last_day=dt.date(2025, 10, 31), stamp=stamp)


@pytest.mark.parametrize("values", [["2025-13-01"], ["2025-09-26..2025-09-22"], ["2025-01-01..2026-01-02"],
                                    ["2025-01-01"] * 51, ["monday"]])
def test_bad_exclusions_are_refused(values):
    from schedgen.ics import InvalidExclusion, parse_exclusions

    with pytest.raises(InvalidExclusion):
        parse_exclusions(values)


def test_cli_ics_exclude(tmp_path):
    target = tmp_path / "lectures.ics"
    subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_MOD_XLS.pdf"), "-o", "ics",
                               "--from", "2025-07-21", "--until", "2025-10-31", "--exclude", "2025-09-22..2025-09-26",
                               "--output-file", str(target)], check=True)
    assert all("exdate" in v for v in events_of(target.read_bytes()))
    bad = subprocess.run(SCHEDGEN + ["parse", str(FIXTURES / "up" / "UP_MOD_XLS.pdf"), "-o", "ics",
                                     "--from", "2025-07-21", "--until", "2025-10-31", "--exclude", "soon"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "InvalidExclusion" in bad.stderr


def test_calendar_name_says_kind_years_and_owner():
    exam = lambda day: Event(module="COS 301", activity="Exam", date=day, start_time="08:30")  # noqa: E731
    assert calendar_name(ScheduleKind.EXAM, [exam("2026-06-02")], owner="cs") == "UP exams 2026 (cs)"
    assert calendar_name(ScheduleKind.TEST, [exam("2025-11-30"), exam("2026-01-10")]) == "UP tests 2025-2026"
    assert calendar_name(ScheduleKind.EXAM, []) == "UP exams"
    assert calendar_name(ScheduleKind.LECTURE, [], dt.date(2026, 2, 9), dt.date(2026, 5, 29)) == "UP lectures 2026"


def test_name_and_refresh_interval_are_calendar_properties():
    events = [Event(module="COS 301", activity="Exam", date="2026-06-02", start_time="08:30")]
    raw = to_ics(ScheduleKind.EXAM, events, name="UP exams 2026", refresh=dt.timedelta(hours=6)).decode()
    cal = icalendar.Calendar.from_ical(raw)
    assert str(cal["name"]) == str(cal["x-wr-calname"]) == "UP exams 2026"
    assert "REFRESH-INTERVAL;VALUE=DURATION:PT6H\r\n" in raw and str(cal["x-published-ttl"]) == "PT6H"
    assert "\nNAME:" not in to_ics(ScheduleKind.EXAM, events).decode()  # `schedgen parse -o ics`: as before
