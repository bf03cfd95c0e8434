"""ParseJobs through their life (typed, as the operator's index holds them) and queries
that look at what the operator wrote to Postgres."""

from __future__ import annotations

import uuid

from schedgen.operator import status as st
from schedgen.operator.outcome import Outcome
from schedgen.parsejob import ParseJob

RESULT = {"kind": "lecture", "events": 30, "pages": 2, "parseSeconds": 0.4}


def new_parsejob(tenant: str = "t", priority: str = "high") -> ParseJob:
    return ParseJob.of({"metadata": {"name": "pj", "namespace": "ns", "uid": str(uuid.uuid4()), "generation": 1},
                        "spec": {"source": {"s3": {"key": "k.pdf"}}, "priority": priority, "tenant": tenant},
                        "status": {}})


def lifecycle(pj: ParseJob, outcome: Outcome | None = None) -> list[ParseJob]:
    """Queued, Running, then Succeeded (or `outcome`)."""
    q = pj.with_status(st.queued(pj))
    r = q.with_status(st.running(q, "pj-1"))
    outcome = outcome or Outcome("Succeeded", "Completed", "ok", result=RESULT, attempts=1)
    return [q, r, r.with_status(st.finished(r, outcome))]


def job_row(conn, uid: str) -> dict | None:
    cur = conn.execute("SELECT * FROM parse_jobs WHERE uid = %s", (uid,))
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row)) if row else None


def event_rows(conn, uid: str) -> list[tuple]:
    return conn.execute(
        "SELECT ordinal, module, activity, group_name, day, date, start_time, end_time,"
        " venues, campus, details FROM events WHERE job_uid = %s ORDER BY ordinal", (uid,)).fetchall()


def read_events(conn, uid: str) -> list:
    """The events as the API reads them (db.EVENTS_QUERY, db.event_from_row)."""
    from schedgen import db

    return [db.event_from_row(row) for row in conn.execute(db.EVENTS_QUERY, (uid,))]


def transitions(conn, uid: str) -> list[tuple]:
    return conn.execute("SELECT seq, phase FROM parse_job_transitions WHERE job_uid = %s ORDER BY seq",
                        (uid,)).fetchall()
