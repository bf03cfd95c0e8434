"""write_events / read_events against a real Postgres."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from runner_testlib import event_rows, job_row
from schedgen import db
from schedgen.models import Event, ParseResult, ScheduleKind


def job(uid: str | None = None) -> db.JobRef:
    uid = uid or str(uuid.uuid4())
    return db.JobRef(uid=uid, namespace="ns", name=f"job-{uid[:8]}", tenant="t1",
                     source_bucket="b", source_key="k.pdf", schedule_type="auto")


EXAM = Event(module="COS 284", activity="Exam Written", date="2025-11-12", start_time="07:30",
             venues=("IT Building CBT Labs 1,2,3",), campus="HATFIELD", paper="1",
             status="FINAL", module_campus="HATF", exam_campus="HATFIELD", comments="bring ID")
LECTURE = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
                end_time="09:20", venues=("Centenary 6", "IT 4-1"), campus="HATFIELD",
                offered="S2", language="E", study_programme="BSc")


def test_round_trip_and_typed_columns(pg_conn):
    ref = job()
    db.write_events(pg_conn, ref, ParseResult(ScheduleKind.EXAM, [EXAM, LECTURE], pages=1, seconds=0.25))

    assert db.read_events(pg_conn, ref.uid) == [EXAM, LECTURE]
    rows = event_rows(pg_conn, ref.uid)
    assert rows[0][5] == dt.date(2025, 11, 12) and rows[0][6] == dt.time(7, 30)
    assert rows[1][8] == ["Centenary 6", "IT 4-1"]
    assert rows[0][10] == {"paper": "1", "status": "FINAL", "moduleCampus": "HATF",
                           "examCampus": "HATFIELD", "comments": "bring ID"}
    row = job_row(pg_conn, ref.uid)
    assert (row["kind"], row["event_count"], row["pages"], row["parse_seconds"]) == ("exam", 2, 1, 0.25)
    assert (row["namespace"], row["tenant"], row["source_key"], row["phase"]) == ("ns", "t1", "k.pdf", "Queued")


def test_rewrite_replaces_and_keeps_operator_fields(pg_conn):
    ref = job()
    pg_conn.execute(
        "INSERT INTO parse_jobs (uid, namespace, name, tenant, source_key, phase, attempts)"
        " VALUES (%s, 'ns', 'from-operator', 't1', 'k.pdf', 'Running', 2)", (ref.uid,))
    result = ParseResult(ScheduleKind.LECTURE, [LECTURE] * 3, pages=2)
    db.write_events(pg_conn, ref, result)
    db.write_events(pg_conn, ref, result)
    assert len(event_rows(pg_conn, ref.uid)) == 3
    db.write_events(pg_conn, ref, ParseResult(ScheduleKind.LECTURE, [LECTURE], pages=2))
    assert [r[0] for r in event_rows(pg_conn, ref.uid)] == [0]
    row = job_row(pg_conn, ref.uid)
    assert (row["phase"], row["attempts"], row["name"], row["event_count"]) == ("Running", 2, "from-operator", 1)


def test_failed_write_leaves_previous_events(pg_conn):
    ref = job()
    db.write_events(pg_conn, ref, ParseResult(ScheduleKind.LECTURE, [LECTURE], pages=1))
    bad = Event(module=None, activity="L1")  # NOT NULL violation inside the transaction
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.write_events(pg_conn, ref, ParseResult(ScheduleKind.LECTURE, [LECTURE, bad], pages=1))
    assert db.read_events(pg_conn, ref.uid) == [LECTURE]


def test_read_events_of_unknown_job_is_empty(pg_conn):
    assert db.read_events(pg_conn, str(uuid.uuid4())) == []
