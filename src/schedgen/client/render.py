"""Tables for people (rich): `-o table` and `-o wide` (more columns). Scripts use
`-o json`/`-o yaml`/`-o name`, which bypass this module."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

PHASE_STYLES = {"Succeeded": "green", "Failed": "red", "Cancelled": "yellow", "Running": "cyan",
                "Queued": "blue"}

# Columns per schedule kind: (header, event key); `venues` is a list, times join as start-end.
EVENT_COLUMNS = {
    "lecture": [("Module", "module"), ("Offered", "offered"), ("Group", "group"), ("Activity", "activity"),
                ("Day", "day"), ("Time", "time"), ("Venues", "venues"), ("Campus", "campus"),
                ("Lang", "language")],
    "test": [("Module", "module"), ("Test", "activity"), ("Date", "date"), ("Time", "time"),
             ("Venues", "venues"), ("Campus", "campus")],
    "exam": [("Module", "module"), ("Paper", "paper"), ("Activity", "activity"), ("Date", "date"),
             ("Start", "startTime"), ("Venues", "venues"), ("Exam campus", "examCampus"), ("Status", "status")],
}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def phase(value: str | None) -> Text:
    value = value or "-"
    return Text(value, style=PHASE_STYLES.get(value, ""))


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


# `-o wide`: the event fields no column of the kind's table shows yet, in this order
EVENT_FIELDS = ("module", "activity", "group", "day", "date", "startTime", "endTime", "venues", "campus", "offered",
                "language", "studyProgramme", "paper", "status", "moduleCampus", "examCampus", "comments")
FIELD_HEADERS = {"startTime": "Start", "endTime": "End", "studyProgramme": "Programme", "moduleCampus": "Module campus",
                 "examCampus": "Exam campus", "language": "Lang"}


def event_cell(event: dict, key: str) -> str:
    if key == "venues":
        return ", ".join(event.get("venues") or []) or "-"
    if key == "time":
        start, end = event.get("startTime"), event.get("endTime")
        return f"{start}-{end}" if start and end else _cell(start)
    return _cell(event.get(key))


def event_columns(kind: str, events: list[dict], *, wide: bool = False) -> list[tuple[str, str]]:
    """The kind's columns; wide: then every other field that some event has."""
    columns = list(EVENT_COLUMNS.get(kind) or EVENT_COLUMNS["lecture"])
    if wide:
        shown = {key for _, key in columns}
        if "time" in shown:  # the start-end column
            shown |= {"startTime", "endTime"}
        columns += [(FIELD_HEADERS.get(f, f[:1].upper() + f[1:]), f) for f in EVENT_FIELDS
                    if f not in shown and any(e.get(f) not in (None, "", []) for e in events)]
    return columns


def events_table(kind: str, events: list[dict], *, wide: bool = False) -> Table:
    columns = event_columns(kind, events, wide=wide)
    table = Table(title=f"{len(events)} {kind} event{'s' if len(events) != 1 else ''}", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for event in events:
        table.add_row(*(event_cell(event, key) for _, key in columns))
    return table


def _result(status: dict) -> tuple[str, str]:
    result = status.get("result") or {}
    return _cell(result.get("kind")), _cell(result.get("events"))


def new_table() -> Table:
    """The tables' look: a rule under the header, no outer frame or blank edge lines."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False)


JOB_HEADERS = ("Job", "Phase", "Priority", "Kind", "Events", "Queue", "Created")
WIDE_JOB_HEADERS = ("Tenant", "Type", "Attempts", "Pages", "Started", "Completed", "Error")  # -o wide adds these


def _error_word(status: dict) -> str:
    error = status.get("error") or {}
    return _cell(error.get("code") or error.get("reason"))


def jobs_table(items: list[dict], *, files: list[str] | None = None, wide: bool = False) -> Table:
    table = new_table()
    if files is not None:
        table.add_column("File", overflow="fold")
    for header in JOB_HEADERS + (WIDE_JOB_HEADERS if wide else ()):
        table.add_column(header, overflow="fold", no_wrap=header == "Job")
    for i, status in enumerate(items):
        kind, events = _result(status)
        row = [status.get("id", "-"), phase(status.get("phase")), _cell(status.get("priority")), kind, events,
               _cell(status.get("queuePosition")), _cell(status.get("createdAt"))]
        if wide:
            row += [_cell(status.get("tenant")), _cell(status.get("scheduleType")), _cell(status.get("attempts")),
                    _cell((status.get("result") or {}).get("pages")), _cell(status.get("startedAt")),
                    _cell(status.get("completedAt")), _error_word(status)]
        table.add_row(*([files[i]] if files is not None else []), *row)
    return table


def job_detail(status: dict) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    result = status.get("result") or {}
    error = status.get("error") or {}
    rows = [("Job", status.get("id")), ("Phase", phase(status.get("phase"))), ("Tenant", status.get("tenant")),
            ("Priority", status.get("priority")), ("Schedule type", status.get("scheduleType")),
            ("Queue position", status.get("queuePosition")), ("Attempts", status.get("attempts")),
            ("Kind", result.get("kind")), ("Events", result.get("events")), ("Pages", result.get("pages")),
            ("Parse seconds", result.get("parseSeconds")), ("Created", status.get("createdAt")),
            ("Started", status.get("startedAt")), ("Completed", status.get("completedAt"))]
    if error:
        rows.append(("Error", f"{error.get('code') or error.get('reason')}: {error.get('message')}"))
    for label, value in rows:
        table.add_row(label, value if isinstance(value, Text) else _cell(value))
    return table


def progress_text(status: dict) -> str:
    """One line for a progress display: phase, queue position, attempts."""
    parts = [status.get("phase") or "?"]
    if status.get("queuePosition") is not None:
        parts.append(f"queue position {status['queuePosition']}")
    if status.get("attempts"):
        parts.append(f"attempt {status['attempts']}")
    result = status.get("result") or {}
    if result.get("events") is not None:
        parts.append(f"{result['events']} {result.get('kind') or ''} events".replace("  ", " "))
    error = status.get("error") or {}
    if error.get("code") or error.get("reason"):
        parts.append(f"{error.get('code') or error.get('reason')}")
    return ", ".join(parts)


# --- logs -------------------------------------------------------------------------------


def summary_text(summary: dict | None) -> str:
    """The runner's summary in one line (none yet while the job waits or runs)."""
    if not summary:
        return "- (not finished)"
    if summary.get("ok"):
        return (f"parsed {_cell(summary.get('kind'))} schedule: {_cell(summary.get('events'))} events, "
                f"{_cell(summary.get('pages'))} pages in {_cell(summary.get('seconds'))} s")
    words = [w for w in (summary.get("reason"), summary.get("code")) if w]
    head = " ".join([words[0], f"({words[1]})"] if len(words) == 2 and words[0] != words[1] else words[:1])
    return f"{head or 'failed'}: {summary.get('message') or ''}".rstrip(": ")


def log_header(doc: dict) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in (("Job", _cell(doc.get("id"))), ("Phase", phase(doc.get("phase"))),
                         ("Attempts", _cell(doc.get("attempts"))), ("Summary", summary_text(doc.get("summary")))):
        table.add_row(label, value)
    return table


LOG_HEADERS = ("Time", "Type", "Reason", "Message")
WIDE_LOG_HEADERS = ("Count", "First seen", "From")


def log_events_table(events: list[dict], *, wide: bool = False) -> Table:
    table = Table(title=f"{len(events)} Event{'s' if len(events) != 1 else ''}", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False)
    for header in LOG_HEADERS + (WIDE_LOG_HEADERS if wide else ()):
        table.add_column(header, overflow="fold", no_wrap=header == "Time")
    for event in events:
        row = [_cell(event.get("lastTime")), Text(event.get("type") or "-", style="yellow" if event.get("type") ==
                                                   "Warning" else ""),
               _cell(event.get("reason")), _cell(event.get("message"))]
        if wide:
            row += [_cell(event.get("count")), _cell(event.get("firstTime")), _cell(event.get("from"))]
        table.add_row(*row)
    return table


def log_line(event: dict, *, wide: bool = False) -> str:
    """One Event as a plain line (`logs --follow`)."""
    parts = [_cell(event.get("lastTime")), _cell(event.get("type")), _cell(event.get("reason"))]
    if wide:
        parts += [f"x{_cell(event.get('count'))}", _cell(event.get("from"))]
    return "  ".join(parts + [_cell(event.get("message"))])
