"""What a ParseJob's Postgres row says: its `parse_jobs` columns and its transitions,
read from the status (the source of truth). Pure; record_store.py writes it."""

from __future__ import annotations

from dataclasses import dataclass

from schedgen.parsejob import SCHEDULE_KINDS, ParseJob


@dataclass(frozen=True)
class Transition:
    seq: int
    phase: str
    reason: str
    message: str
    at: str


@dataclass(frozen=True)
class ParseJobRow:
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
        """Rows only move forward: (transitionSeq, attempts)."""
        return (self.seq, self.attempts)


def row_of(pj: ParseJob, default_bucket: str) -> ParseJobRow | None:
    """The row of a ParseJob, or None before its first transition."""
    st = pj.status
    if st.seq <= 0 or not st.phase:
        return None
    result = st.raw.get("result") or {}
    error = st.raw.get("error") or {}
    seconds = result.get("parseSeconds")
    history = tuple(
        Transition(int(h["seq"]), h["phase"], h.get("reason") or "", h.get("message") or "", h["at"])
        for h in st.raw.get("history") or [] if h.get("seq") and h.get("phase") and h.get("at"))
    return ParseJobRow(
        uid=pj.uid, namespace=pj.namespace, name=pj.name, tenant=pj.tenant, priority=pj.priority,
        schedule_type=pj.schedule_type, source_bucket=pj.source_bucket or default_bucket,
        source_key=pj.source_key, phase=st.phase, seq=st.seq, attempts=st.attempts, job_name=st.job_name,
        enqueued_at=st.enqueued_at, started_at=st.started_at, completed_at=st.completed_at,
        error_reason=error.get("reason"), error_code=error.get("code"), error_message=error.get("message"),
        kind=result.get("kind") if result.get("kind") in SCHEDULE_KINDS else None,
        event_count=result.get("events"), pages=result.get("pages"),
        parse_seconds=float(seconds) if isinstance(seconds, (int, float)) else None, history=history)
