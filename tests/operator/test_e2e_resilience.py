"""Operator SIGKILL mid-run, Postgres down mid-run, two replicas with peering."""

from __future__ import annotations

import time

import pytest

from operator_e2e import FIXTURES, summary, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def finished_count(c, namespaces) -> int:
    return sum(1 for ns in namespaces for pj in c.parsejobs(ns)
               if (pj.get("status") or {}).get("phase") in ("Succeeded", "Failed"))


def rows_agree(c, items) -> bool:
    for pj in items:
        row = c.row(pj["metadata"]["uid"])
        s = pj["status"]
        if row is None or (row[0], row[1], row[2]) != (s["phase"], s["transitionSeq"], s["attempts"]):
            return False
    return True


def submit_batch(c, namespaces, per_ns: int, **spec) -> None:
    key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
    for ns in namespaces:
        for i in range(per_ns):
            c.submit(ns, f"pj{i:02d}", key, scheduleType="exam", **spec)


def test_operator_sigkill_mid_run_loses_nothing_and_runs_nothing_twice(operator_cluster, start_operator):
    c = operator_cluster
    c.set_runtime(maxConcurrent=4, maxPerTenant=4)
    op = start_operator()
    namespaces = [c.tenant_namespace("kill-a"), c.tenant_namespace("kill-b")]
    submit_batch(c, namespaces, 15)
    wait_for(lambda: finished_count(c, namespaces) >= 8, 300, what="8 finished")
    op.kill()
    time.sleep(3)  # Jobs keep running and finishing without an operator
    start_operator()
    items = c.wait_all_finished(namespaces, timeout=600)
    assert len(items) == 30
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    for pj in items:
        ns, s = pj["metadata"]["namespace"], pj["status"]
        assert s["attempts"] == 1, (pj["metadata"]["name"], s)
        assert len(c.pods_of(ns, s["jobName"])) == 1  # one Job, one pod: never run twice
        assert [h["phase"] for h in s["history"]] == ["Queued", "Running", "Succeeded"]
    wait_for(lambda: rows_agree(c, items), 60, what="Postgres rows to agree with the statuses")
    for pj in items:
        assert [p for _, p in c.transitions(pj["metadata"]["uid"])] == ["Queued", "Running", "Succeeded"]
        assert c.event_rows(pj["metadata"]["uid"]) == 5


def test_postgres_down_for_20s_mid_run(operator_cluster, start_operator):
    c = operator_cluster
    dsn = c.postgres.dsn
    c.set_runtime(maxConcurrent=4, maxPerTenant=4)
    op = start_operator()
    namespaces = [c.tenant_namespace("pgdown-a"), c.tenant_namespace("pgdown-b")]
    submit_batch(c, namespaces, 12, maxRetries=6)
    wait_for(lambda: finished_count(c, namespaces) >= 4, 300, what="4 finished")
    c.postgres.stop()
    try:
        time.sleep(20)
        # noticed: Jobs finishing now cannot have their events recorded (the operator keeps
        # them Running and retries), and any row behind its status fails to write
        noticed = [op.metric(m) or 0 for m in ("schedgen_results_unavailable_total", "schedgen_records_errors_total")]
        assert sum(noticed) >= 1, noticed
    finally:
        c.postgres.start()
    assert c.postgres.dsn == dsn, "Postgres came back on another port"
    items = c.wait_all_finished(namespaces, timeout=900)
    assert len(items) == 24
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    wait_for(lambda: rows_agree(c, items), 90, what="Postgres rows to agree with the statuses")
    for pj in items:
        seqs = c.transitions(pj["metadata"]["uid"])
        assert [p for _, p in seqs] == ["Queued", "Running", "Succeeded"] and [s for s, _ in seqs] == [1, 2, 3]


def test_two_replicas_one_leads_and_failover_loses_nothing(operator_cluster, start_operator):
    c = operator_cluster
    c.set_runtime(maxConcurrent=4, maxPerTenant=4)
    first = start_operator(SCHEDGEN_STANDALONE="0", SCHEDGEN_PEERING_LIFETIME="10")
    second = start_operator(wait=False, SCHEDGEN_STANDALONE="0", SCHEDGEN_PEERING_LIFETIME="10")
    wait_for(lambda: second.metric("schedgen_operator_active") is not None, 60, what="second replica up")
    time.sleep(3)
    assert first.metric("schedgen_operator_active") == 1.0
    assert not second.metric("schedgen_operator_active")  # paused: the older replica leads
    namespaces = [c.tenant_namespace("ha")]
    submit_batch(c, namespaces, 12)
    wait_for(lambda: finished_count(c, namespaces) >= 3, 300, what="3 finished")
    first.kill()
    wait_for(lambda: second.metric("schedgen_operator_active") == 1.0, 90, what="the standby to take over")
    items = c.wait_all_finished(namespaces, timeout=600)
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    for pj in items:
        assert pj["status"]["attempts"] == 1
        assert len(c.pods_of(pj["metadata"]["namespace"], pj["status"]["jobName"])) == 1
