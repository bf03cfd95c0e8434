"""The event model shared by the parser, the runner, the database and the API."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields


class ScheduleKind(str, enum.Enum):
    LECTURE = "lecture"
    TEST = "test"
    EXAM = "exam"


@dataclass(frozen=True)
class Event:
    """One real session. Times are "HH:MM"; `date` is ISO; absent values are None."""

    module: str
    activity: str
    group: str | None = None
    day: str | None = None
    date: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    venues: tuple[str, ...] = ()
    campus: str | None = None
    offered: str | None = None
    language: str | None = None
    study_programme: str | None = None
    paper: str | None = None
    status: str | None = None
    module_campus: str | None = None
    exam_campus: str | None = None
    comments: str | None = None

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[camel_case(f.name)] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Event":
        kwargs = {}
        for f in fields(cls):
            if camel_case(f.name) in data:
                value = data[camel_case(f.name)]
                kwargs[f.name] = tuple(value) if f.name == "venues" else value
        return cls(**kwargs)


@dataclass
class ParseResult:
    kind: ScheduleKind
    events: list[Event]
    pages: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "events": [e.to_json() for e in self.events]}

    def summary(self) -> dict:
        return {
            "kind": self.kind.value,
            "events": len(self.events),
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
        }


def camel_case(name: str) -> str:
    """`start_time` -> `startTime`: JSON keys are camelCase."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
