"""The operator's ParseJob gauges: waiting/running per priority, the oldest waiting
ParseJob's age, and per-tenant gauges whose label set stays bounded."""

from __future__ import annotations

from prometheus_client import REGISTRY

from parsejobs import parsejob
from schedgen.operator import metrics
from schedgen.parsejob import ParseJob


def pj(name, tenant, phase=None, priority="normal", created="2026-01-01T00:00:00Z") -> ParseJob:
    return parsejob(name, tenant=tenant, priority=priority, created=created,
                    status={"phase": phase} if phase else None)


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def tenant_series(name):
    return {s.labels["tenant"]: s.value for fam in REGISTRY.collect() for s in fam.samples if s.name == name}


def test_priority_gauges_and_oldest_waiting_age():
    epoch = 1767225600  # 2026-01-01T00:00:00Z
    jobs = [pj("a", "t", created="2026-01-01T00:00:00Z"), pj("b", "t", priority="high", created="2026-01-01T00:01:00Z"),
            pj("c", "t", phase="Running", priority="low"), pj("d", "t", phase="Succeeded")]
    metrics.count_parsejobs(jobs, now=epoch + 300, tenants=metrics.TenantLabels(5))
    assert sample("schedgen_parsejobs_waiting", priority="normal") == 1
    assert sample("schedgen_parsejobs_waiting", priority="high") == 1
    assert sample("schedgen_parsejobs_running", priority="low") == 1
    assert sample("schedgen_parsejobs_running", priority="normal") == 0
    assert sample("schedgen_queue_oldest_waiting_seconds", priority="normal") == 300
    assert sample("schedgen_queue_oldest_waiting_seconds", priority="high") == 240
    assert sample("schedgen_queue_oldest_waiting_seconds", priority="low") == 0
    phases = {p: sample("schedgen_parsejobs", phase=p) for p in ("Queued", "Running", "Succeeded", "Failed")}
    assert phases == {"Queued": 2, "Running": 1, "Succeeded": 1, "Failed": 0}  # no phase yet: Queued
    metrics.count_parsejobs([], now=epoch + 600, tenants=metrics.TenantLabels(5))
    assert sample("schedgen_queue_oldest_waiting_seconds", priority="normal") == 0


def test_tenant_series_are_capped_with_an_other_bucket():
    tenants = metrics.TenantLabels(limit=3)
    jobs = [pj(f"w{i}", f"cap-tenant-{i}") for i in range(10)] + [pj("r", "cap-tenant-0", phase="Running")]
    metrics.count_parsejobs(jobs, tenants=tenants)
    waiting = {k: v for k, v in tenant_series("schedgen_tenant_parsejobs_waiting").items() if k.startswith("cap-")}
    assert waiting == {"cap-tenant-0": 1, "cap-tenant-1": 1, "cap-tenant-2": 1}
    assert sample("schedgen_tenant_parsejobs_waiting", tenant="other") == 7
    assert sample("schedgen_tenant_parsejobs_running", tenant="cap-tenant-0") == 1
    # A thousand new tenants later, still 3 named series plus "other"; known ones keep theirs.
    metrics.count_parsejobs([pj(f"n{i}", f"cap-new-{i}") for i in range(1000)] + [pj("x", "cap-tenant-1")],
                            tenants=tenants)
    series = {k for k in tenant_series("schedgen_tenant_parsejobs_waiting") if k.startswith("cap-")}
    assert series == {"cap-tenant-0", "cap-tenant-1", "cap-tenant-2"}
    assert sample("schedgen_tenant_parsejobs_waiting", tenant="other") == 1000
    assert sample("schedgen_tenant_parsejobs_waiting", tenant="cap-tenant-1") == 1
    assert sample("schedgen_tenant_parsejobs_waiting", tenant="cap-tenant-0") == 0  # kept at 0, no churn


def test_a_tenant_named_other_cannot_take_a_named_slot():
    tenants = metrics.TenantLabels(limit=2)
    assert tenants.label("other") == "other"
    assert tenants.label("a") == "a" and tenants.label("b") == "b" and tenants.label("c") == "other"
    assert tenants.labels() == ["a", "b", "other"]


def test_a_parsejob_without_spec_tenant_counts_for_its_namespace():
    tenants = metrics.TenantLabels(limit=5)
    jobs = [parsejob("a", namespace="ns-team-x"), parsejob("b", namespace="ns-team-x", status={"phase": "Queued"}),
            parsejob("c", namespace="ns-team-x", tenant="ns-team-y", status={"phase": "Running"})]
    metrics.count_parsejobs(jobs, tenants=tenants)
    assert sample("schedgen_tenant_parsejobs_waiting", tenant="ns-team-x") == 2
    assert sample("schedgen_tenant_parsejobs_running", tenant="ns-team-y") == 1
    assert sample("schedgen_tenant_parsejobs_running", tenant="ns-team-x") == 0
