"""Status transitions, conditions, history and attempts: pure functions of a typed
ParseJob, each returning the whole new status."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parsejobs import at, parsejob
from schedgen.operator import status as ps
from schedgen.operator.outcome import Outcome, Requeue
from schedgen.operator.runner_objects import epoch_of
from schedgen.parsejob import PHASES, ParseJob

T0, T1, T2, T3 = (f"2026-01-01T00:00:0{i}.000000Z" for i in range(4))


def fresh(**kw) -> ParseJob:
    return parsejob("a", namespace="n", **kw)


def conditions(s) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def times(s) -> dict:
    return {c["type"]: c["lastTransitionTime"] for c in s["conditions"]}


def then(pj: ParseJob, status: dict) -> ParseJob:
    return pj.with_status(status)


def test_lifecycle_success():
    pj = fresh()
    s = ps.queued(pj, at=T0)
    assert s["phase"] == "Queued" and s["transitionSeq"] == 1 and s["enqueuedAt"] == T0 and s["attempts"] == 0
    assert conditions(s)["Admitted"] == ("False", "Queued")
    pj = then(pj, {**s, "queuePosition": 3})
    s = ps.running(pj, "a-1234", at=T1)
    assert s["phase"] == "Running" and s["jobName"] == "a-1234" and s["startedAt"] == T1
    assert s["attempts"] == 1 and s["priorAttempts"] == 0
    assert conditions(s)["Admitted"] == ("True", "Admitted")
    assert "queuePosition" not in s and "batchSize" not in s
    assert s["enqueuedAt"] == T0  # kept
    pj = then(pj, s)
    out = Outcome("Succeeded", "Completed", "parsed", result={"kind": "exam", "events": 5}, attempts=1)
    s = ps.finished(pj, out, at=T2)
    assert s["phase"] == "Succeeded" and s["transitionSeq"] == 3 and s["result"]["events"] == 5
    assert s["completedAt"] == T2 and s["attempts"] == 1
    assert conditions(s)["Complete"] == ("True", "Completed") and conditions(s)["Failed"][0] == "False"
    assert [h["phase"] for h in s["history"]] == ["Queued", "Running", "Succeeded"]
    assert [h["seq"] for h in s["history"]] == [1, 2, 3]
    assert [h["at"] for h in s["history"]] == [T0, T1, T2]
    assert s["observedGeneration"] == 1 and "error" not in s


def test_failure_and_cancel():
    pj = fresh()
    pj = then(pj, ps.queued(pj))
    out = Outcome("Failed", "InvalidPDF", "not a PDF", code="NotAPDF", attempts=1)
    f = ps.finished(pj, out)
    assert f["phase"] == "Failed" and f["attempts"] == 1
    assert f["error"] == {"reason": "InvalidPDF", "message": "not a PDF", "code": "NotAPDF"}
    assert conditions(f)["Failed"] == ("True", "InvalidPDF")
    assert "error" in ps.finished(pj, Outcome("Failed", "JobLost", "gone")) and \
        "code" not in ps.finished(pj, Outcome("Failed", "JobLost", "gone"))["error"]
    c = ps.cancelled(pj)
    assert c["phase"] == "Cancelled" and c["transitionSeq"] == 2 and c["error"]["reason"] == "Cancelled"
    assert conditions(c)["Failed"] == ("True", "Cancelled")


def test_a_transition_of_a_parsejob_never_queued_queues_it_first():
    """A waiting ParseJob is never written (the CRD defaults its phase to Queued, which is
    also how the operator reads it): its first write records Queued, as of its creation,
    and the next phase together, so its history still starts with Queued."""
    defaulted = fresh().with_status({"phase": "Queued"})  # as the API server returns a new one
    for pj in (fresh(), defaulted):
        assert pj.status.waiting
        for s in (ps.running(pj, "j", at=T1), ps.cancelled(pj, at=T1),
                  ps.finished(pj, Outcome("Failed", "TenantMismatch", "no"), at=T1)):
            assert s["transitionSeq"] == 2 and [h["phase"] for h in s["history"]][0] == "Queued", s
            assert s["enqueuedAt"] == s["history"][0]["at"] == pj.created
        assert ps.running(pj, "j")["attempts"] == 1


def test_a_batch_member_records_its_batch():
    pj = fresh()
    pj = then(pj, ps.queued(pj))
    s = ps.running(pj, "batch-x", at=T1, batch_size=4)
    assert s["batchSize"] == 4 and "batch of 4" in s["history"][-1]["message"]
    assert "batchSize" not in ps.running(pj, "single", at=T1, batch_size=1)


def test_requeued_goes_back_to_its_place_and_forgets_the_run():
    pj = fresh(generation=2)
    pj = then(pj, ps.queued(pj, at=T0))
    pj = then(pj, ps.running(pj, "batch-x", at=T1, batch_size=3))
    s = ps.requeued(pj, Requeue("BatchEnded", "Job batch-x ended before this ParseJob's turn", counted=False),
                    at=T2)
    assert s["phase"] == "Queued" and s["transitionSeq"] == 3 and s["enqueuedAt"] == T0
    assert s["attempts"] == 0
    for gone in ("jobName", "startedAt", "batchSize", "priorAttempts", "queuePosition", "retryAfter"):
        assert gone not in s, gone
    assert conditions(s)["Admitted"] == ("False", "BatchEnded") and times(s)["Admitted"] == T2
    assert times(s)["Complete"] == T0  # unchanged status: its time kept
    assert [(h["phase"], h["seq"]) for h in s["history"]] == [("Running", 2), ("Queued", 3)]
    assert s["observedGeneration"] == 2 and {c["observedGeneration"] for c in s["conditions"]} == {2}


def test_a_counted_retry_waits_its_delay_and_the_next_run_clears_it():
    pj = fresh()
    pj = then(pj, ps.queued(pj, at=T0))
    pj = then(pj, ps.running(pj, "a-1", at=T1))
    s = ps.requeued(pj, Requeue("Retrying", "StorageUnavailable: s3 down", counted=True, delay=20.0), at=T2)
    assert s["attempts"] == 1 and epoch_of(s["retryAfter"]) - epoch_of(T2) == 20.0
    pj = then(pj, s)
    assert pj.status.retry_after == s["retryAfter"]
    s = ps.running(pj, "a-2", at=T3)
    assert "retryAfter" not in s and s["attempts"] == 2 and s["priorAttempts"] == 1


def test_a_final_transition_clears_a_pending_retry():
    waiting = fresh(status={"phase": "Queued", "transitionSeq": 3, "attempts": 1, "retryAfter": at(60)})
    assert "retryAfter" not in ps.cancelled(waiting)
    assert "retryAfter" not in ps.finished(waiting, Outcome("Failed", "TenantMismatch", "no", attempts=1))


def test_condition_transition_time_kept_when_status_unchanged():
    conds = [{"type": "Admitted", "status": "True", "reason": "A", "message": "", "lastTransitionTime": "t0"}]
    new = {"type": "Admitted", "status": "True", "reason": "B", "message": "", "lastTransitionTime": "t1"}
    assert ps.set_condition(conds, new)[0]["lastTransitionTime"] == "t0"
    flipped = {**new, "status": "False"}
    assert ps.set_condition(conds, flipped)[0]["lastTransitionTime"] == "t1"


@given(st.lists(st.booleans(), max_size=12), st.integers(0, 3))
def test_attempts_count_exactly_the_counted_runs(counted_runs, start_attempts):
    """Run after run: `running` counts the run on its way (attempts + 1, priorAttempts the
    ones before); `requeued(counted=False)` leaves attempts where they were before the
    run, `counted=True` raises them by exactly one. The history keeps one entry per
    phase (the CRD allows 8), in transition order."""
    pj = fresh(status={"phase": "Queued", "transitionSeq": 1, "attempts": start_attempts, "enqueuedAt": T0})
    for counted in counted_runs:
        before = pj.status.attempts
        pj = then(pj, ps.running(pj, "j", at=T1))
        assert (pj.status.attempts, pj.status.prior_attempts) == (before + 1, before)
        pj = then(pj, ps.requeued(pj, Requeue("Retrying" if counted else "Disrupted", "m", counted=counted),
                                  at=T2))
        assert pj.status.attempts == before + (1 if counted else 0)
        assert pj.status.enqueued_at == T0
        history = pj.status.raw["history"]
        assert len(history) <= len(PHASES)
        assert len({h["phase"] for h in history}) == len(history)
        assert [h["seq"] for h in history] == sorted(h["seq"] for h in history)
        assert history[-1]["seq"] == pj.status.seq
    assert pj.status.attempts == start_attempts + sum(counted_runs)
    assert pj.status.seq == 1 + 2 * len(counted_runs)
