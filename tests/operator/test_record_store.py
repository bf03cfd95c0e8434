"""The one writer of the operator's records (record_store.py) and the catch-up daemon
(row_catchup.py), against the real Postgres: idempotent, never backwards, one pool of
kept sessions, one backoff."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from records_testlib import event_rows, job_row, lifecycle, new_parsejob, read_events, transitions
from schedgen.models import Event, ParseResult, ScheduleKind
from schedgen.operator.backoff import BackingOff, Unavailable
from schedgen.operator.outcome import Outcome
from schedgen.operator.record_store import RecordStore
from schedgen.operator.row_catchup import RecordBook, RowCatchUp
from schedgen.operator.rows import row_of

BUCKET = "bucket-x"
EXAM = Event(module="COS 284", activity="Exam Written", date="2025-11-12", start_time="07:30",
             venues=("IT Building CBT Labs 1,2,3",), campus="HATFIELD", paper="1",
             status="FINAL", module_campus="HATF", exam_campus="HATFIELD", comments="bring ID")
LECTURE = Event(module="COS 214", activity="L1", group="G01", day="Monday", start_time="08:30",
                end_time="09:20", venues=("Centenary 6", "IT 4-1"), campus="HATFIELD",
                offered="S2", language="E", study_programme="BSc")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def store(postgres, loop):
    s = RecordStore(postgres.dsn)
    yield s
    loop.run_until_complete(s.close())


def rows(*pjs):
    return [row_of(pj, BUCKET) for pj in pjs]


def short(pg_conn, uid):
    r = job_row(pg_conn, uid)
    return r and (r["phase"], r["transition_seq"], r["attempts"], r["kind"], r["event_count"], r["source_bucket"],
                  r["tenant"], r["priority"], r["job_name"])


def errors() -> float:
    return REGISTRY.get_sample_value("schedgen_records_errors_total") or 0.0


# --- rows ---------------------------------------------------------------------------------


def test_catch_up_after_outage_records_every_transition_once(store, pg_conn, loop):
    pj = new_parsejob()
    q, r, done = lifecycle(pj)
    loop.run_until_complete(store.sync(rows(done)))  # the database was down for Queued and Running
    assert short(pg_conn, pj.uid) == ("Succeeded", 3, 1, "lecture", 30, BUCKET, "t", "high", "pj-1")
    assert transitions(pg_conn, pj.uid) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
    loop.run_until_complete(store.sync(rows(done, done)))  # replays change nothing
    loop.run_until_complete(store.sync(rows(q)))  # a stale view never goes backwards
    assert short(pg_conn, pj.uid)[0:2] == ("Succeeded", 3)
    assert len(transitions(pg_conn, pj.uid)) == 3


def test_the_result_columns_of_the_result_object_win(store, pg_conn, loop):
    pj = new_parsejob()
    q, r, done = lifecycle(pj)
    loop.run_until_complete(store.sync(rows(q)))
    assert short(pg_conn, pj.uid)[0:2] == ("Queued", 1)
    loop.run_until_complete(store.write_result(row_of(r, BUCKET),
                                               ParseResult(ScheduleKind.TEST, [LECTURE] * 12, pages=1)))
    loop.run_until_complete(store.sync(rows(done)))  # its status says lecture/30: the object's values stay
    assert short(pg_conn, pj.uid)[0:5] == ("Succeeded", 3, 1, "test", 12)


def test_error_code_has_its_own_column(store, pg_conn, loop):
    pj = new_parsejob()
    failed = lifecycle(pj, Outcome("Failed", "InvalidPDF", "no table on any page", code="NoTables", attempts=1))[-1]
    loop.run_until_complete(store.sync(rows(failed)))
    r = job_row(pg_conn, pj.uid)
    assert (r["error_reason"], r["error_code"], r["error_message"]) == ("InvalidPDF", "NoTables",
                                                                        "no table on any page")


def test_no_row_without_status():
    assert row_of(new_parsejob(), BUCKET) is None


# --- a checked result: row, result columns and events in one transaction --------------------


def test_write_result_round_trip_and_typed_columns(store, pg_conn, loop):
    pj = new_parsejob()
    running = lifecycle(pj)[1]
    loop.run_until_complete(store.write_result(row_of(running, BUCKET),
                                               ParseResult(ScheduleKind.EXAM, [EXAM, LECTURE], pages=1, seconds=0.25)))
    assert read_events(pg_conn, pj.uid) == [EXAM, LECTURE]
    events = event_rows(pg_conn, pj.uid)
    assert events[0][5] == dt.date(2025, 11, 12) and events[0][6] == dt.time(7, 30)
    assert events[1][8] == ["Centenary 6", "IT 4-1"]
    assert events[0][10] == {"paper": "1", "status": "FINAL", "moduleCampus": "HATF",
                             "examCampus": "HATFIELD", "comments": "bring ID"}
    r = job_row(pg_conn, pj.uid)
    assert (r["kind"], r["event_count"], r["pages"], r["parse_seconds"]) == ("exam", 2, 1, 0.25)
    assert (r["namespace"], r["tenant"], r["source_key"], r["phase"], r["transition_seq"]) == \
        ("ns", "t", "k.pdf", "Running", 2)
    assert transitions(pg_conn, pj.uid) == [(1, "Queued"), (2, "Running")]


def test_write_result_again_replaces_the_events(store, pg_conn, loop):
    """A restart re-reads the object; a retried run writes its own: no duplicates."""
    row = row_of(lifecycle(new_parsejob())[1], BUCKET)
    for events in ([LECTURE] * 3, [LECTURE] * 3, [LECTURE]):
        loop.run_until_complete(store.write_result(row, ParseResult(ScheduleKind.LECTURE, events, pages=2)))
    assert [e[0] for e in event_rows(pg_conn, row.uid)] == [0]
    assert job_row(pg_conn, row.uid)["event_count"] == 1


def test_a_failed_write_leaves_the_previous_events(store, pg_conn, loop):
    row = row_of(lifecycle(new_parsejob())[1], BUCKET)
    loop.run_until_complete(store.write_result(row, ParseResult(ScheduleKind.LECTURE, [LECTURE], pages=1)))
    bad = Event(module=None, activity="L1")  # NOT NULL violation inside the transaction
    with pytest.raises(Exception, match="null value"):
        loop.run_until_complete(store.write_result(row, ParseResult(ScheduleKind.LECTURE, [LECTURE, bad], pages=1)))
    assert read_events(pg_conn, row.uid) == [LECTURE]


def test_records_use_kept_sessions_and_a_terminated_one_is_replaced(postgres, pg_conn, loop):
    """Not a connection (a Postgres backend start) per write: the pool keeps its
    sessions. A session Postgres ended fails one call (its backoff window opens) and a
    later call uses a new one. The sessions are Postgres' own view (pg_stat_activity)."""
    app = f"records-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    store = RecordStore(f"{postgres.dsn}?application_name={app}", clock=clock, pool_size=1)

    def sessions() -> list[int]:
        return [pid for (pid,) in pg_conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()]

    async def scenario():
        seen = []
        for _ in range(3):
            await store.write_result(row_of(lifecycle(new_parsejob())[1], BUCKET),
                                     ParseResult(ScheduleKind.LECTURE, [LECTURE], pages=1))
            seen.append(sessions())
        assert len(seen[0]) == 1 and seen == [seen[0]] * 3  # one session, the same each time
        pg_conn.execute("SELECT pg_terminate_backend(%s)", (seen[0][0],))
        await asyncio.sleep(0.2)
        tries = 0
        while True:  # the pool may notice the dead session before handing it out
            tries += 1
            try:
                await store.sync(rows(lifecycle(new_parsejob())[0]))
                break
            except Unavailable:
                assert tries == 1
                clock.now += 1
        assert sessions() and sessions() != seen[0]  # a new one
        await store.close()

    loop.run_until_complete(scenario())
    # closed: every session of the store goes (its backends end a moment after the client)
    deadline = time.monotonic() + 10
    while sessions():
        assert time.monotonic() < deadline, f"sessions left after close: {sessions()}"
        time.sleep(0.05)


def test_postgres_away_opens_the_window_and_one_call_per_window_tries(closed_port, loop):
    clock = Clock()
    store = RecordStore(f"postgresql://schedgen@127.0.0.1:{closed_port}/schedgen", clock=clock)
    windows = []
    for _ in range(6):
        with pytest.raises(Unavailable) as tried:
            loop.run_until_complete(store.sync(rows(lifecycle(new_parsejob())[0])))
        assert not isinstance(tried.value, BackingOff)
        windows.append(store.backoff.until - clock.now)
        with pytest.raises(BackingOff, match="Postgres unavailable"):
            loop.run_until_complete(store.sync(rows(lifecycle(new_parsejob())[0])))
        clock.now = store.backoff.until
    assert windows == [1, 2, 4, 8, 16, 30]
    loop.run_until_complete(store.close())


# --- the catch-up daemon -----------------------------------------------------------------


def test_record_book():
    q, r, done = rows(*lifecycle(new_parsejob()))
    book = RecordBook()
    assert book.behind([q]) == [q]
    book.mark([r])
    assert book.behind([q, r]) == [] and book.behind([done]) == [done]
    book.forget_except(set())
    assert book.behind([q]) == [q]


def test_catch_up_writes_only_what_is_behind(store, pg_conn, loop):
    catchup = RowCatchUp(store, BUCKET, interval=0.5)
    a, b = new_parsejob(), new_parsejob()
    (_, _, done_a), (qb, rb, _) = lifecycle(a), lifecycle(b)
    assert loop.run_until_complete(catchup.step([done_a, qb])) == 0.5
    assert short(pg_conn, a.uid)[0:2] == ("Succeeded", 3) and short(pg_conn, b.uid)[0:2] == ("Queued", 1)
    # What the book knows to be written is not written again ...
    pg_conn.execute("UPDATE parse_jobs SET tenant = 'edited' WHERE uid = %s", (a.uid,))
    loop.run_until_complete(catchup.step([done_a, rb]))
    assert short(pg_conn, a.uid)[6] == "edited" and short(pg_conn, b.uid)[0:2] == ("Running", 2)


def test_catch_up_replays_everything_after_a_failure(postgres, pg_conn, loop):
    """A failed step (the session was terminated) backs off; the next replays every row,
    since nothing is known to be in the database any more."""
    clock = Clock()
    store = RecordStore(postgres.dsn, clock=clock, pool_size=1)
    catchup = RowCatchUp(store, BUCKET, interval=0.5)
    a, b = new_parsejob(), new_parsejob()
    (_, _, done_a), (qb, rb, _) = lifecycle(a), lifecycle(b)
    loop.run_until_complete(catchup.step([done_a, qb]))
    pg_conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                    "'schedgen-operator' AND datname = current_database() AND pid <> pg_backend_pid()")
    deadline = time.monotonic() + 10
    while pg_conn.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'schedgen-operator'"
                          " AND datname = current_database()").fetchone():
        assert time.monotonic() < deadline, "the backend did not go away"
        time.sleep(0.05)
    # meanwhile a's row was lost: only a replay of everything brings it back
    pg_conn.execute("DELETE FROM parse_jobs WHERE uid = %s", (a.uid,))
    before = errors()
    delay = loop.run_until_complete(catchup.step([done_a, rb]))
    if delay == 0.5:  # the pool had already replaced the session: this step wrote b only
        assert short(pg_conn, b.uid)[0] == "Running" and short(pg_conn, a.uid) is None
        pytest.fail("the terminated session was not noticed: the replay cannot be shown")
    assert delay == 1.0 and errors() == before + 1  # failed: back off one window
    clock.now += 1
    assert loop.run_until_complete(catchup.step([done_a, rb])) == 0.5  # a new session, every row again
    assert short(pg_conn, a.uid)[0:2] == ("Succeeded", 3) and short(pg_conn, b.uid)[0:2] == ("Running", 2)
    assert transitions(pg_conn, a.uid) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
    loop.run_until_complete(store.close())


def test_catch_up_backs_off_while_postgres_is_away(closed_port, loop):
    clock = Clock()
    store = RecordStore(f"postgresql://schedgen@127.0.0.1:{closed_port}/schedgen", clock=clock)
    catchup = RowCatchUp(store, BUCKET, interval=0.5)
    q = lifecycle(new_parsejob())[0]
    before = errors()
    delays = []
    for _ in range(4):
        delays.append(loop.run_until_complete(catchup.step([q])))
        clock.now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 8.0] and errors() == before + 4
    loop.run_until_complete(store.close())


def test_record_now_writes_the_final_row_or_says_it_could_not(store, pg_conn, closed_port, loop):
    pj = new_parsejob()
    done = lifecycle(pj)[-1]
    catchup = RowCatchUp(store, BUCKET, interval=1)
    written = loop.run_until_complete(catchup.record_now(done))
    assert (written.phase, written.seq) == ("Succeeded", 3) and short(pg_conn, pj.uid)[0:2] == ("Succeeded", 3)
    assert catchup.book.behind([written]) == []  # the daemon will not write it again
    assert loop.run_until_complete(catchup.record_now(new_parsejob())) is None  # no status yet: no row
    away = RowCatchUp(RecordStore(f"postgresql://schedgen@127.0.0.1:{closed_port}/schedgen"), BUCKET, 1)
    with pytest.raises(Unavailable):
        loop.run_until_complete(away.record_now(done))
    loop.run_until_complete(away.store.close())
