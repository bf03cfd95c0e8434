"""Postgres rows of ParseJobs: what a row says, and bringing rows up to date, level-based.

The ParseJob status is the source of truth; its `transitionSeq` and `history` say
which phase changes happened. `sync` upserts the parse_jobs row only where the row's
transition_seq (or attempts) is behind, and inserts the history entries into
parse_job_transitions with ON CONFLICT DO NOTHING. So it can run any number of times,
after any outage, from any replica: nothing is lost, nothing recorded twice, a row
never goes backwards. The runner's result columns (kind, event_count, ...) win over
the operator's copy (COALESCE). recorder.py decides when and which rows to sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from schedgen.parsejob import SCHEDULE_KINDS

from .config import OperatorConfig
from .job_template import bucket_of, key_of, priority_of, tenant_of


@dataclass(frozen=True)
class Transition:
    seq: int
    phase: str
    reason: str
    message: str
    at: str


@dataclass(frozen=True)
class ParseJobRow:
    """The parse_jobs row of one ParseJob and its transitions, as its status tells them."""

    uid: str
    namespace: str
    name: str
    tenant: str
    priority: str
    schedule_type: str
    source_bucket: str
    source_key: str
    phase: str
    seq: int
    attempts: int
    job_name: str | None
    enqueued_at: str | None
    started_at: str | None
    completed_at: str | None
    error_reason: str | None
    error_code: str | None
    error_message: str | None
    kind: str | None
    event_count: int | None
    pages: int | None
    parse_seconds: float | None
    history: tuple[Transition, ...]

    @property
    def version(self) -> tuple[int, int]:
        return (self.seq, self.attempts)


def row_of(body: Mapping[str, Any], cfg: OperatorConfig) -> ParseJobRow | None:
    status = body.get("status") or {}
    seq = int(status.get("transitionSeq") or 0)
    if seq <= 0 or not status.get("phase"):
        return None
    meta = body["metadata"]
    spec = body.get("spec") or {}
    result = status.get("result") or {}
    error = status.get("error") or {}
    kind = result.get("kind") if result.get("kind") in SCHEDULE_KINDS else None
    seconds = result.get("parseSeconds")
    history = tuple(
        Transition(int(h["seq"]), h["phase"], h.get("reason") or "", h.get("message") or "", h["at"])
        for h in status.get("history") or [] if h.get("seq") and h.get("phase") and h.get("at")
    )
    return ParseJobRow(
        uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
        tenant=tenant_of(body), priority=priority_of(body),
        schedule_type=spec.get("scheduleType") or "auto",
        source_bucket=bucket_of(body, cfg), source_key=key_of(body),
        phase=status["phase"], seq=seq, attempts=int(status.get("attempts") or 0),
        job_name=status.get("jobName"),
        enqueued_at=status.get("enqueuedAt"), started_at=status.get("startedAt"),
        completed_at=status.get("completedAt"),
        error_reason=error.get("reason"),
        error_code=error.get("code"), error_message=error.get("message"),
        kind=kind, event_count=result.get("events"), pages=result.get("pages"),
        parse_seconds=float(seconds) if seconds not in (None, "") else None,
        history=history,
    )


def _ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


_UPSERT = """
INSERT INTO parse_jobs AS p (uid, namespace, name, tenant, priority, schedule_type, source_bucket,
    source_key, phase, transition_seq, attempts, job_name, kind, event_count, pages, parse_seconds,
    error_reason, error_code, error_message, enqueued_at, started_at, completed_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (uid) DO UPDATE SET
    tenant = EXCLUDED.tenant, priority = EXCLUDED.priority, schedule_type = EXCLUDED.schedule_type,
    source_bucket = EXCLUDED.source_bucket, source_key = EXCLUDED.source_key,
    phase = EXCLUDED.phase, transition_seq = EXCLUDED.transition_seq, attempts = EXCLUDED.attempts,
    job_name = EXCLUDED.job_name,
    kind = COALESCE(p.kind, EXCLUDED.kind), event_count = COALESCE(p.event_count, EXCLUDED.event_count),
    pages = COALESCE(p.pages, EXCLUDED.pages), parse_seconds = COALESCE(p.parse_seconds, EXCLUDED.parse_seconds),
    error_reason = EXCLUDED.error_reason, error_code = EXCLUDED.error_code,
    error_message = EXCLUDED.error_message,
    enqueued_at = EXCLUDED.enqueued_at, started_at = EXCLUDED.started_at,
    completed_at = EXCLUDED.completed_at, updated_at = now()
WHERE (p.transition_seq, p.attempts) < (EXCLUDED.transition_seq, EXCLUDED.attempts)
"""

_TRANSITION = """
INSERT INTO parse_job_transitions (job_uid, seq, phase, reason, message, at)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_uid, seq) DO NOTHING
"""


def _values(r: ParseJobRow) -> tuple:
    return (r.uid, r.namespace, r.name, r.tenant, r.priority, r.schedule_type, r.source_bucket,
            r.source_key, r.phase, r.seq, r.attempts, r.job_name, r.kind, r.event_count, r.pages,
            r.parse_seconds, r.error_reason, r.error_code, r.error_message, _ts(r.enqueued_at), _ts(r.started_at),
            _ts(r.completed_at))


async def sync(conn: Any, rows: Sequence[ParseJobRow]) -> None:
    """Bring `rows` up to date in one transaction (psycopg AsyncConnection)."""
    if not rows:
        return
    async with conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(_UPSERT, [_values(r) for r in rows])
            transitions = [(r.uid, t.seq, t.phase, t.reason, t.message[:2000], _ts(t.at))
                           for r in rows for t in r.history]
            if transitions:
                await cur.executemany(_TRANSITION, transitions)
