"""Tables for people (rich). Scripts use `--output json`, which bypasses this module."""

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


def event_cell(event: dict, key: str) -> str:
    if key == "venues":
        return ", ".join(event.get("venues") or []) or "-"
    if key == "time":
        start, end = event.get("startTime"), event.get("endTime")
        return f"{start}-{end}" if start and end else _cell(start)
    return _cell(event.get(key))


def events_table(kind: str, events: list[dict]) -> Table:
    columns = EVENT_COLUMNS.get(kind) or EVENT_COLUMNS["lecture"]
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


def jobs_table(items: list[dict], *, files: list[str] | None = None) -> Table:
    table = new_table()
    if files is not None:
        table.add_column("File", overflow="fold")
    for header in ("Job", "Phase", "Priority", "Kind", "Events", "Queue", "Created"):
        table.add_column(header, overflow="fold", no_wrap=header == "Job")
    for i, status in enumerate(items):
        kind, events = _result(status)
        row = [status.get("id", "-"), phase(status.get("phase")), _cell(status.get("priority")), kind, events,
               _cell(status.get("queuePosition")), _cell(status.get("createdAt"))]
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
