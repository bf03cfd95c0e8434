"""The parser rules: how UP schedule tables become events.

Input is a list of table rows whose cells are lists of text lines with their vertical
position (`Line`). Everything specific to the UP exports lives here:

- which header texts name which column (matched on letters only, so `Start\\nTime`
  and wrapped or overlapping header text are still recognised);
- which columns make a kind (lecture, test, exam);
- how a continued row (leading cells empty, next page) joins the row above;
- how one row becomes events, and which events are the same session.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace

from schedgen.errors import MalformedSchedule
from schedgen.models import Event, ScheduleKind


@dataclass(frozen=True)
class Line:
    """One text line of a cell; `top` is its y position on the page (for alignment)."""

    text: str
    top: float


Cell = list[Line]
Row = list[Cell]


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # the header as printed, normalised by `letters`
    required: bool = True


COLUMNS: dict[ScheduleKind, tuple[Column, ...]] = {
    ScheduleKind.LECTURE: (
        Column("module", "module"),
        Column("offered", "offered", required=False),
        Column("group", "group"),
        Column("language", "lang", required=False),
        Column("activity", "activity"),
        Column("day", "day"),
        Column("time", "time"),
        Column("venue", "venue"),
        Column("campus", "campus", required=False),
        Column("study_programme", "studyprog", required=False),
    ),
    ScheduleKind.TEST: (
        Column("module", "module"),
        Column("test", "test"),
        Column("day", "day", required=False),
        Column("date", "date"),
        Column("time", "time"),
        Column("campus", "campus", required=False),
        Column("venue", "venue"),
    ),
    ScheduleKind.EXAM: (
        Column("status", "status", required=False),
        Column("module", "module"),
        Column("paper", "paper", required=False),
        Column("activity", "activity"),
        Column("date", "date"),
        Column("start_time", "starttime"),
        Column("module_campus", "modulecampus", required=False),
        Column("exam_campus", "examcampus", required=False),
        Column("venue", "venue"),
        Column("comments", "examcomments", required=False),
    ),
}

# Cells that identify a row; a row with all of them empty continues the row above.
KEY_COLUMNS: dict[ScheduleKind, tuple[str, ...]] = {
    ScheduleKind.LECTURE: ("module", "group"),
    ScheduleKind.TEST: ("module", "test", "date"),
    ScheduleKind.EXAM: ("module", "date"),
}

FUZZY_THRESHOLD = 0.6
MIN_EXACT_HEADERS = 3  # a header row names at least this many columns exactly
KNOWN_HEADERS = frozenset(c.header for columns in COLUMNS.values() for c in columns)


def letters(text: str) -> str:
    """Header text reduced to lowercase letters and digits: line breaks and spacing vanish."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


# --- header recognition -------------------------------------------------------------


@dataclass
class Header:
    """Which table column (by index) holds which field, for one kind."""

    kind: ScheduleKind
    index: dict[str, int]
    width: int


def recognise_header(cells: list[str], only: ScheduleKind | None = None) -> Header | None:
    """The best-matching kind for a header row, or None if it is no known header.

    Exact (letters-only) matches are taken first; the cells left over are matched by
    longest common subsequence, best pair first, so that overlapping header text such as
    `pEuxsam Camp` still finds `Exam Campus`.
    """
    normalised = [letters(c) for c in cells]
    if len(KNOWN_HEADERS.intersection(normalised)) < MIN_EXACT_HEADERS:
        return None  # a data row: cheap to rule out before any fuzzy matching
    best: Header | None = None
    best_score = 0
    for kind, columns in COLUMNS.items():
        if only is not None and kind is not only:
            continue
        index = _match_columns(normalised, columns)
        if not all(c.key in index for c in columns if c.required):
            continue
        exact = sum(1 for c in columns if c.key in index and normalised[index[c.key]] == c.header)
        score = exact * 100 + len(index)
        if score > best_score:
            best, best_score = Header(kind, index, len(cells)), score
    return best


def _match_columns(cells: list[str], columns: tuple[Column, ...]) -> dict[str, int]:
    index: dict[str, int] = {}
    taken: set[int] = set()
    for column in columns:
        for i, cell in enumerate(cells):
            if i not in taken and cell == column.header:
                index[column.key] = i
                taken.add(i)
                break
    pairs = sorted(
        (
            (_similarity(cell, column.header), -i, column.key, i)
            for column in columns
            if column.key not in index
            for i, cell in enumerate(cells)
            if i not in taken and cell
        ),
        reverse=True,
    )
    for score, _, key, i in pairs:
        if score < FUZZY_THRESHOLD:
            break
        if key in index or i in taken:
            continue
        index[key] = i
        taken.add(i)
    return index


def _similarity(cell: str, header: str) -> float:
    return _lcs(cell, header) / max(len(cell), len(header))


def _lcs(a: str, b: str) -> int:
    previous = [0] * (len(b) + 1)
    for ch in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if ch == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


# --- rows ----------------------------------------------------------------------------


@dataclass
class Record:
    """One logical table row: field name -> lines (after continuations were joined)."""

    cells: dict[str, list[Line]] = field(default_factory=dict)

    def text(self, key: str, sep: str = " ") -> str | None:
        joined = sep.join(line.text for line in self.cells.get(key, ())).strip()
        return joined or None

    def lines(self, key: str) -> list[Line]:
        return self.cells.get(key, [])


def to_records(rows: list[Row], header: Header) -> list[Record]:
    """Table rows (header rows already removed) to records, joining continued rows."""
    keys = KEY_COLUMNS[header.kind]
    records: list[Record] = []
    for row in rows:
        cells = {key: row[i] for key, i in header.index.items() if i < len(row)}
        if not any(cells.values()):
            continue
        continued = records and not any(cells.get(k) for k in keys)
        if continued:
            for key, lines in cells.items():
                records[-1].cells.setdefault(key, []).extend(lines)
        else:
            records.append(Record(cells))
    return records


# --- events --------------------------------------------------------------------------


def events_for(kind: ScheduleKind, records: list[Record]) -> list[Event]:
    build = {ScheduleKind.LECTURE: lecture_events, ScheduleKind.TEST: test_events,
             ScheduleKind.EXAM: exam_events}[kind]
    return merge_sessions([event for record in records for event in build(record)])


def lecture_events(record: Record) -> list[Event]:
    """One event per session line: Activity, Day, Time and Venue lines align by height.

    A line of another column belongs to the last activity line at or above it, so a
    venue wrapped onto a second line stays with its session.
    """
    anchors = record.lines("activity")
    if not anchors:
        return []
    sessions = _align(anchors, record, ("day", "time", "venue"))
    events = []
    for activity, parts in sessions:
        start, end = parse_time_range(parts["time"])
        events.append(Event(
            module=normalise_module(record.text("module")),
            activity=activity,
            group=record.text("group"),
            day=normalise_day(parts["day"]),
            start_time=start,
            end_time=end,
            venues=tuple(v for v in [normalise_venue(parts["venue"])] if v),
            campus=record.text("campus"),
            offered=record.text("offered"),
            language=record.text("language"),
            study_programme=record.text("study_programme"),
        ))
    return events


def _align(anchors: list[Line], record: Record, keys: tuple[str, ...]):
    tolerance = 2.0
    tops = [a.top for a in anchors]
    parts = [{key: [] for key in keys} for _ in anchors]
    for key in keys:
        for line in record.lines(key):
            slot = 0
            for i, top in enumerate(tops):
                if top <= line.top + tolerance:
                    slot = i
            parts[slot][key].append(line.text)
    return [(a.text.strip(), {k: " ".join(v) for k, v in p.items()}) for a, p in zip(anchors, parts)]


def test_events(record: Record) -> list[Event]:
    start, end = parse_time_range(record.text("time") or "")
    return [Event(
        module=normalise_module(record.text("module")),
        activity=join_wrapped_name(record.lines("test")),
        day=normalise_day(record.text("day") or "") if record.text("day") else None,
        date=parse_date(record.text("date") or ""),
        start_time=start,
        end_time=end,
        venues=tuple(v for v in (normalise_venue(line.text) for line in record.lines("venue")) if v),
        campus=record.text("campus"),
    )]


def exam_events(record: Record) -> list[Event]:
    start, end = parse_time_range(record.text("start_time") or "")
    venue = normalise_venue(record.text("venue") or "")
    return [Event(
        module=normalise_module(record.text("module")),
        activity=record.text("activity") or "Exam",
        date=parse_date(record.text("date") or ""),
        start_time=start,
        end_time=end,
        venues=(venue,) if venue else (),
        campus=record.text("exam_campus") or record.text("module_campus"),
        paper=record.text("paper"),
        status=record.text("status"),
        module_campus=record.text("module_campus"),
        exam_campus=record.text("exam_campus"),
        comments=record.text("comments"),
    )]


def merge_sessions(events: list[Event]) -> list[Event]:
    """Events that are the same session (all but venues equal) become one, venues joined.

    Keeps first-seen order of events and of venues.
    """
    merged: dict[tuple, Event] = {}
    for event in events:
        key = session_key(event)
        if key in merged:
            old = merged[key]
            venues = old.venues + tuple(v for v in event.venues if v not in old.venues)
            merged[key] = replace(old, venues=venues)
        else:
            merged[key] = event
    return list(merged.values())


def session_key(event: Event) -> tuple:
    return (event.module, event.offered, event.group, event.activity, event.day, event.date,
            event.start_time, event.end_time, event.paper)


# --- value normalisation -------------------------------------------------------------

_TIME = r"(\d{1,2})\s*[:hH.]\s*(\d{2})"
_TIME_RANGE = re.compile(rf"^\s*{_TIME}\s*(?:[-–—]|to)?\s*(?:{_TIME})?\s*$")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DATE = re.compile(r"^\s*(\d{1,2})\s*[ \-/]\s*([A-Za-z]{3,9})\.?\s*[ \-/]\s*(\d{4})\s*$")
_ISO_DATE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")
_MODULE = re.compile(r"^\s*([A-Za-z]{3})\s*(\d{3})\s*$")


def parse_time_range(text: str) -> tuple[str | None, str | None]:
    """`08:30 - 09:20` -> ("08:30", "09:20"); a single time has no end (exams)."""
    if not text.strip():
        return None, None
    match = _TIME_RANGE.match(text)
    if not match:
        raise MalformedSchedule(f"unreadable time range {text!r}")
    start = _hhmm(match.group(1), match.group(2))
    end = _hhmm(match.group(3), match.group(4)) if match.group(3) else None
    return start, end


def _hhmm(hours: str, minutes: str) -> str:
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise MalformedSchedule(f"time out of range {hours}:{minutes}")
    return f"{h:02d}:{m:02d}"


def parse_date(text: str) -> str | None:
    """`23 Aug 2025`, `12 NOV 2025`, `2025-08-23` -> "2025-08-23"."""
    if not text.strip():
        return None
    if match := _ISO_DATE.match(text):
        year, month, day = (int(g) for g in match.groups())
    elif match := _DATE.match(text):
        month = _MONTHS.get(match.group(2)[:3].lower())
        if month is None:
            raise MalformedSchedule(f"unreadable month in date {text!r}")
        day, year = int(match.group(1)), int(match.group(3))
    else:
        raise MalformedSchedule(f"unreadable date {text!r}")
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError as exc:
        raise MalformedSchedule(f"impossible date {text!r}") from exc


def normalise_day(text: str) -> str:
    """`monday`, `Mon`, ` MONDAY ` -> `Monday`."""
    word = text.strip().lower()
    for day in _DAYS:
        if len(word) >= 3 and day.lower().startswith(word):
            return day
    raise MalformedSchedule(f"unreadable day {text!r}")


def normalise_venue(text: str) -> str:
    """Collapse runs of white space; venues keep their own spelling otherwise."""
    return " ".join(text.split())


def normalise_module(text: str | None) -> str:
    """`COS214`, `cos 214` -> `COS 214`; other codes are kept, spacing collapsed."""
    if not text:
        raise MalformedSchedule("row without a module code")
    if match := _MODULE.match(text):
        return f"{match.group(1).upper()} {match.group(2)}"
    return " ".join(text.split())


def join_wrapped_name(lines: list[Line]) -> str:
    """`PTest` + `1` -> `PTest1`; a wrapped word continues with a space."""
    out = ""
    for line in lines:
        piece = line.text.strip()
        if not piece:
            continue
        out += piece if (not out or piece[0].isdigit()) else " " + piece
    if not out:
        raise MalformedSchedule("test row without a test name")
    return out
