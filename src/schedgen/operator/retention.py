"""Retention: which finished ParseJobs to delete (their Postgres rows and events stay).

Succeeded ones go after `retentionSucceededSeconds` or beyond the newest
`retentionSucceededCount`; Failed and Cancelled ones likewise with the failed
settings. Pure: the retention daemon deletes what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .config import RuntimeConfig


@dataclass(frozen=True)
class Finished:
    key: tuple[str, str]
    uid: str
    phase: str
    completed_at: float  # epoch seconds


def select_expired(finished: Iterable[Finished], cfg: RuntimeConfig, now: float) -> list[Finished]:
    groups: dict[str, list[Finished]] = {"Succeeded": [], "Failed": []}
    for f in finished:
        groups["Succeeded" if f.phase == "Succeeded" else "Failed"].append(f)
    limits = {
        "Succeeded": (cfg.retention_succeeded_seconds, cfg.retention_succeeded_count),
        "Failed": (cfg.retention_failed_seconds, cfg.retention_failed_count),
    }
    out: list[Finished] = []
    for group, items in groups.items():
        max_age, max_count = limits[group]
        items.sort(key=lambda f: f.completed_at, reverse=True)  # newest first
        for i, f in enumerate(items):
            if i >= max(0, max_count) or now - f.completed_at > max_age:
                out.append(f)
    return out
