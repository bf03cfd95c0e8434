"""Queries the runner tests use to look at what was written."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def event_rows(conn, uid: str) -> list[tuple]:
    return conn.execute(
        "SELECT ordinal, module, activity, group_name, day, date, start_time, end_time,"
        " venues, campus, details FROM events WHERE job_uid = %s ORDER BY ordinal",
        (uid,),
    ).fetchall()


def job_row(conn, uid: str) -> dict | None:
    cur = conn.execute("SELECT * FROM parse_jobs WHERE uid = %s", (uid,))
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row)) if row else None
