"""Autoscaling simulation: one small node, 20 ParseJobs, pods Pending; a node is added."""

from __future__ import annotations

import time
import uuid

import pytest

from operator_e2e import FIXTURES, summary, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_capacity_guard_waits_for_the_autoscaler(operator_cluster, start_operator):
    c = operator_cluster
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    c.cluster.add_node(f"small-{pool}", cpu="1", memory="2Gi", pods=20, labels={"schedgen.test/pool": pool})
    # two runner pods fit on the small node; admission 2/s; the guard trips when more than
    # 3 pods have been unschedulable for over 2 seconds
    c.set_runtime(maxConcurrent=20, maxPerTenant=20, admissionsPerSecond=2, admissionBurst=2,
                  guardMaxUnschedulable=3, guardUnschedulableSeconds=2)
    op = start_operator(SCHEDGEN_NODE_SELECTOR=f"schedgen.test/pool={pool}", SCHEDGEN_CPU_REQUEST="400m")
    ns = c.tenant_namespace("autoscale")
    key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
    for i in range(20):
        c.submit(ns, f"pj{i:02d}", key, scheduleType="exam", maxRetries=1, deadlineSeconds=900)

    def pending_unschedulable():
        pods = c.core.list_namespaced_pod(ns).items
        return [p for p in pods if p.status.phase == "Pending" and any(
            cond.type == "PodScheduled" and cond.reason == "Unschedulable" for cond in (p.status.conditions or []))]

    wait_for(lambda: len(pending_unschedulable()) >= 4, 120, what="pods Pending-Unschedulable")
    wait_for(lambda: op.metric("schedgen_capacity_guard_tripped") == 1.0, 60, what="the capacity guard")
    time.sleep(3)
    admitted = [pj for pj in c.parsejobs(ns) if (pj.get("status") or {}).get("phase") != "Queued"]
    assert len(admitted) < 20, "the guard should hold admissions back while pods cannot be scheduled"
    assert any((pj.get("status") or {}).get("phase") == "Queued" for pj in c.parsejobs(ns))

    c.cluster.add_node(f"big-{pool}", cpu="4", memory="8Gi", pods=40, labels={"schedgen.test/pool": pool})
    items = c.wait_all_finished([ns], timeout=600)
    assert all(pj["status"]["phase"] == "Succeeded" for pj in items), summary(items)
    assert op.metric("schedgen_capacity_guard_tripped") == 0.0
