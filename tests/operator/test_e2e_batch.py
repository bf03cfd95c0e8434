"""Batch mode on the real cluster (real kubelet node, the project's runner image): a
hostile PDF in the middle of a batch, a batch pod deleted midway, the operator killed
while a batch runs. Afterwards every ParseJob has ended exactly once, and its Postgres
record agrees with its status."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from operator_e2e import FIXTURES, summary, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parser"))
import hostile  # noqa: E402  (tests/parser/hostile.py)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FINAL = ("Succeeded", "Failed", "Cancelled")


def closed_then_batched(c, size: int) -> None:
    """Admission closed while we submit, batch mode for any backlog (a full batch is at
    most half the slots a tenant may hold: `size` of 2 * `size`)."""
    c.set_runtime(maxConcurrent=0, maxPerTenant=2 * size, batchThreshold=0, batchSize=size)


def open_admission(c, size: int) -> None:
    c.set_runtime(maxConcurrent=2 * size)


def ended_exactly_once(c, items: list[dict]) -> None:
    """One final transition per ParseJob, in the status and in Postgres, and they agree."""
    for pj in items:
        s, uid = pj["status"], pj["metadata"]["uid"]
        assert [h["phase"] for h in s["history"]][-1] == s["phase"] and s["phase"] in FINAL, s
        assert sum(h["phase"] in FINAL for h in s["history"]) == 1, s["history"]
    def rows_agree() -> bool:
        for pj in items:
            row, s = c.row(pj["metadata"]["uid"]), pj["status"]
            if row is None or (row[0], row[1], row[2]) != (s["phase"], s["transitionSeq"], s["attempts"]):
                return False
        return True
    wait_for(rows_agree, 60, what="Postgres rows to agree with the statuses")
    for pj in items:
        phases = [p for _, p in c.transitions(pj["metadata"]["uid"])]
        assert sum(p in FINAL for p in phases) == 1 and phases[-1] == pj["status"]["phase"], phases


def test_a_hostile_pdf_in_the_middle_fails_only_itself(operator_cluster, start_operator, tmp_path):
    c = operator_cluster
    closed_then_batched(c, 6)
    op = start_operator()
    ns = c.tenant_namespace("batch-hostile")
    bomb = tmp_path / "bomb.pdf"
    hostile.inflate_bomb(bomb)
    good, bad = c.s3.put(FIXTURES / "up" / "UP_TST_PDF.pdf"), c.s3.put(bomb)
    for i in range(6):
        c.submit(ns, f"m{i}", bad if i == 2 else good, scheduleType="test" if i != 2 else "auto")
        time.sleep(0.02)  # distinct creation order
    wait_for(lambda: all((pj.get("status") or {}).get("phase") == "Queued" for pj in c.parsejobs(ns))
             and len(c.parsejobs(ns)) == 6, 60, what="six Queued")
    open_admission(c, 6)
    items = c.wait_all_finished([ns], timeout=300)
    by_name = {pj["metadata"]["name"]: pj["status"] for pj in items}
    assert by_name["m2"]["phase"] == "Failed", summary(items)
    assert (by_name["m2"]["error"]["reason"], by_name["m2"]["error"]["code"]) == ("InvalidPDF", "TooLarge")
    for name in ("m0", "m1", "m3", "m4", "m5"):
        s = by_name[name]
        assert s["phase"] == "Succeeded" and s["result"]["events"] == 12 and s["attempts"] == 1, (name, s)
    jobs = {s["jobName"] for s in by_name.values()}
    assert len(jobs) == 1 and all(s["batchSize"] == 6 for s in by_name.values()), by_name
    (job,) = jobs
    assert len(c.pods_of(ns, job)) == 1  # six PDFs, one pod
    for pj in items:
        if pj["status"]["phase"] == "Succeeded":
            assert c.event_rows(pj["metadata"]["uid"]) == 12
        reasons = {e.reason for e in c.events_for(ns, pj["metadata"]["name"])}
        assert {"Succeeded", "InvalidPDF"} & reasons and "Admitted" not in reasons, reasons  # one Event: the end
    ended_exactly_once(c, items)
    assert op.metric("schedgen_batches_started_total") == 1.0
    assert op.metric("schedgen_batch_members_total") == 6.0


def batch_of_twelve(c, start_operator, prefix: str, tmp_path):
    """Twelve members of a generated 40-page lecture schedule (about a second each), so
    that the batch is still running when the test acts; (operator, ns, Job, events each)."""
    import schedule_pdfs

    closed_then_batched(c, 12)
    op = start_operator()
    ns = c.tenant_namespace(prefix)
    pdf = tmp_path / "lectures.pdf"
    events = len(schedule_pdfs.lecture_pdf(pdf, pages=40, rows_per_page=8))
    key = c.s3.put(pdf)
    for i in range(12):
        c.submit(ns, f"m{i:02d}", key, scheduleType="lecture")
        time.sleep(0.02)
    wait_for(lambda: len(c.parsejobs(ns)) == 12 and all(
        (pj.get("status") or {}).get("phase") == "Queued" for pj in c.parsejobs(ns)), 60, what="twelve Queued")
    open_admission(c, 12)
    running = wait_for(lambda: [pj for pj in c.parsejobs(ns) if (pj.get("status") or {}).get("jobName")],
                       60, interval=0.1, what="the batch admitted")
    job = running[0]["status"]["jobName"]
    wait_for(lambda: any(p.status.phase == "Running" for p in c.pods_of(ns, job)), 120, interval=0.1,
             what="the batch pod running")
    return op, ns, job, events


def test_a_batch_pod_deleted_midway(operator_cluster, start_operator, tmp_path):
    """The batch pod deleted mid-run (as Karpenter's forced node termination deletes a
    do-not-disrupt pod): the member being parsed goes back to the queue as Disrupted, the
    ones not reached as BatchEnded, none with an attempt counted; every member still
    succeeds, exactly once."""
    c = operator_cluster
    _, ns, job, events = batch_of_twelve(c, start_operator, "batch-podkill", tmp_path)
    wait_for(lambda: any((pj.get("status") or {}).get("phase") == "Succeeded" for pj in c.parsejobs(ns)),
             120, interval=0.1, what="the batch's first member parsed (midway)")
    (pod,) = c.pods_of(ns, job)
    c.core.delete_namespaced_pod(pod.metadata.name, ns)
    items = c.wait_all_finished([ns], timeout=400)
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    requeued = [pj for pj in items if pj["status"]["jobName"] != job]
    assert requeued, ("the deleted pod's batch reached every member: the deletion came too late",
                      [(pj["metadata"]["name"], pj["status"]["history"]) for pj in items])
    for pj in requeued:
        s = pj["status"]
        queued = next(h for h in s["history"] if h["phase"] == "Queued")
        assert queued["reason"] in ("BatchEnded", "Disrupted"), s["history"]
        # One pod was deleted once: a disruption, not an attempt, for the member it was
        # parsing (Disrupted) and for the ones it never reached (BatchEnded): attempts 1.
        # (A stale failure document once made a member retry until BackoffLimitExceeded; a
        # stale results listing once put a member of a running batch back as BatchEnded;
        # a requeue once counted twice: attempts 2, priorAttempts 1.)
        assert s["attempts"] == 1, json.dumps(s)
        assert c.event_rows(pj["metadata"]["uid"]) == events
    ended_exactly_once(c, items)


def test_the_operator_killed_while_a_batch_runs(operator_cluster, start_operator, tmp_path):
    c = operator_cluster
    op, ns, job, events = batch_of_twelve(c, start_operator, "batch-opkill", tmp_path)
    op.kill()
    time.sleep(3)  # the batch goes on without an operator
    start_operator()
    items = c.wait_all_finished([ns], timeout=400)
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    assert {pj["status"]["jobName"] for pj in items} == {job}  # nobody ran twice or elsewhere
    assert all(pj["status"]["attempts"] == 1 for pj in items)
    assert len(c.pods_of(ns, job)) == 1
    for pj in items:
        assert c.event_rows(pj["metadata"]["uid"]) == events
    ended_exactly_once(c, items)
