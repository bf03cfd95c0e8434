"""Status transitions, conditions and history."""

from __future__ import annotations

from schedgen.operator import status as st
from schedgen.operator.outcome import Outcome


def body(status=None) -> dict:
    return {"metadata": {"name": "a", "namespace": "n", "uid": "u", "generation": 1}, "spec": {},
            "status": status or {}}


def conditions(s) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in s["conditions"]}


def test_lifecycle_success():
    b = st.merged(body(), st.queued(body(), at="2026-01-01T00:00:00.000000Z"))
    assert b["status"]["phase"] == "Queued" and b["status"]["transitionSeq"] == 1
    assert conditions(b["status"])["Admitted"] == ("False", "Queued")
    b = st.merged(b, st.running(b, "a-1234", at="2026-01-01T00:00:01.000000Z"))
    assert b["status"]["phase"] == "Running" and b["status"]["jobName"] == "a-1234"
    assert conditions(b["status"])["Admitted"] == ("True", "Admitted")
    assert "queuePosition" not in b["status"]
    out = Outcome("Succeeded", "Completed", "parsed", result={"kind": "exam", "events": 5}, attempts=1)
    b = st.merged(b, st.finished(b, out, at="2026-01-01T00:00:02.000000Z"))
    s = b["status"]
    assert s["phase"] == "Succeeded" and s["transitionSeq"] == 3 and s["result"]["events"] == 5
    assert conditions(s)["Complete"] == ("True", "Completed") and conditions(s)["Failed"][0] == "False"
    assert [h["phase"] for h in s["history"]] == ["Queued", "Running", "Succeeded"]
    assert [h["seq"] for h in s["history"]] == [1, 2, 3]
    assert s["observedGeneration"] == 1 and "error" not in s


def test_failure_and_cancel():
    b = st.merged(body(), st.queued(body()))
    out = Outcome("Failed", "InvalidPDF", "not a PDF", code="NotAPDF", attempts=1)
    f = st.merged(b, st.finished(b, out))
    assert f["status"]["error"] == {"reason": "InvalidPDF", "message": "not a PDF", "code": "NotAPDF"}
    assert conditions(f["status"])["Failed"] == ("True", "InvalidPDF")
    c = st.merged(b, st.cancelled(b))
    assert c["status"]["phase"] == "Cancelled" and c["status"]["transitionSeq"] == 2


def test_condition_transition_time_kept_when_status_unchanged():
    conds = [{"type": "Admitted", "status": "True", "reason": "A", "message": "", "lastTransitionTime": "t0"}]
    new = {"type": "Admitted", "status": "True", "reason": "B", "message": "", "lastTransitionTime": "t1"}
    assert st.set_condition(conds, new)[0]["lastTransitionTime"] == "t0"
