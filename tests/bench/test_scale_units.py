"""bench/scale_lib.py: the workload and what bench/scale.py computes from what it observed."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale_lib as sl  # noqa: E402


def test_arrivals_are_sorted_within_the_window_and_front_loaded():
    t = sl.arrival_times(15000, 120.0, 600.0)
    assert t == sorted(t) and 0 <= t[0] and t[-1] < 600
    first_minute = sum(1 for x in t if x < 60) / len(t)
    assert first_minute == pytest.approx((1 - math.exp(-0.5)) / (1 - math.exp(-5)), abs=0.01)  # ~0.40
    assert sum(1 for x in t if x < 240) / len(t) > 0.85


def test_workload_priorities_tenants_and_determinism():
    tenants = sl.tenant_names(120)
    plan = sl.workload(15000, tenants, 120, 600, skew=1.0, seed=7)
    assert plan == sl.workload(15000, tenants, 120, 600, skew=1.0, seed=7)
    shares = Counter(u.priority for u in plan)
    assert shares["high"] / 15000 == pytest.approx(0.10, abs=0.01)
    assert shares["normal"] / 15000 == pytest.approx(0.20, abs=0.01)
    assert shares["low"] / 15000 == pytest.approx(0.70, abs=0.015)
    per = Counter(u.tenant for u in plan)
    assert set(per) == set(tenants)  # every tenant uploads
    assert per["t-000"] > 10 * per["t-119"]  # Zipf-like sizes
    assert [u.pdf for u in plan[:4]] == [0, 1, 2, 0]


def test_jain():
    assert sl.jain([3, 3, 3]) == pytest.approx(1.0)
    assert sl.jain([1, 0, 0, 0]) == pytest.approx(0.25)
    assert sl.jain([]) == 1.0 and sl.jain([0, 0]) == 1.0


def L(name, tenant, created, started, done, priority="low"):
    return sl.Life(name, tenant, priority, created, started, done)


def test_admission_delay_counts_from_the_freed_slot_or_the_creation():
    # cap 1: b takes a's slot 0.2 s after a finished; c was created after b finished
    lives = [L("a", "x", 0, 0, 1), L("b", "x", 0, 1.2, 2, "high"), L("c", "y", 5, 5.5, 6)]
    d = sl.admission_delays(lives, 1)
    assert d["high"] == [pytest.approx(0.2)] and d["low"] == [pytest.approx(0.5)]
    assert sorted(d["all"]) == [pytest.approx(0.2), pytest.approx(0.5)]
    # a start seen before its slot's completion counts 0, never negative
    assert sl.admission_delays([L("a", "x", 0, 0, 1), L("b", "x", 0, 0.9, 2)], 1)["low"] == [0.0]


def test_admission_delay_with_a_tenant_cap_counts_from_a_slot_the_tenant_may_take():
    # cap 2, 1 per tenant: y's slot frees at 1 while x holds its one; x2 may start only
    # once x1 ends (at 4), and starts at 4.5
    lives = [L("x1", "x", 0, 0, 4), L("y1", "y", 0, 0, 1), L("x2", "x", 0, 4.5, 6)]
    assert sl.admission_delays(lives, 2)["all"] == [pytest.approx(3.5)]  # from the cluster's slot
    assert sl.admission_delays(lives, 2, 1)["all"] == [pytest.approx(0.5)]  # from its tenant's
    # a tenant below its cap: the cluster's slot decides
    lives = [L("x1", "x", 0, 0, 4), L("y1", "y", 0, 0, 1), L("z1", "z", 0, 1.5, 6)]
    assert sl.admission_delays(lives, 2, 1)["all"] == [pytest.approx(0.5)]


def test_fairness_counts_only_tenants_waiting_the_whole_minute():
    # x and y both backlogged all minute; x holds 60 slot-s, y 30: Jain = 90^2 / (2 (3600 + 900)) = 0.9
    lives = [L("x1", "x", 0, 0, 60), L("x2", "x", 0, None, None),
             L("y1", "y", 0, 30, 60), L("y2", "y", 0, None, None),
             L("z1", "z", 10, 10, 20)]  # z never waits: not counted
    [m] = sl.fairness_per_minute(lives, 0, 60)
    assert m["waiting_tenants"] == 2 and m["jain"] == pytest.approx(0.9)
    # one waiting tenant: no index
    [m] = sl.fairness_per_minute([L("x1", "x", 0, None, None)], 0, 60)
    assert m["jain"] is None and m["waiting_tenants"] == 1


def test_caps_exact_and_sampled():
    lives = [L("a", "x", 0, 0, 2), L("b", "x", 0, 1, 3), L("c", "y", 0, 2, 4)]
    c = sl.cap_check(lives, 2, 1, 10)
    assert c["max_running"] == 2 and c["max_running_tenant"] == 2 and c["exceeded"]
    assert not sl.cap_check(lives, 2, 2, 10)["exceeded"]
    s = sl.CapSamples()
    s.add(0, {"x": 2, "y": 1}, 5, 3, 1)
    s.add(1, {"x": 1}, 5, 3, 1)
    assert s.summary() == {"samples": 2, "max_running": 3, "max_running_tenant": 2,
                           "samples_over_maxConcurrent": 0, "samples_over_maxPerTenant": 1}
    assert sl.max_overlap([(0, 1), (1, 2)]) == 1  # an end closes before a start at the same time


def test_audit_counts_by_component_verb_and_window():
    def ev(user, verb, res, sub=None, at="2026-01-01T00:00:10.000000Z", agent="", code=201):
        ref = {"resource": res, **({"subresource": sub} if sub else {})}
        return json.dumps({"stage": "ResponseComplete", "verb": verb, "user": {"username": user}, "userAgent": agent,
                           "objectRef": ref, "requestReceivedTimestamp": at, "responseStatus": {"code": code}})

    lines = [ev("system:serviceaccount:schedgen-system:schedgen-operator", "patch", "parsejobs", "status"),
             ev("system:serviceaccount:schedgen-system:schedgen-operator", "create", "events"),
             ev("system:serviceaccount:kube-system:job-controller", "update", "jobs", "status"),
             ev("system:kube-scheduler", "create", "pods", "binding"),
             ev("schedgen-admin", "patch", "pods", "status", agent="kwok/v0.8.0"),
             ev("system:serviceaccount:schedgen-system:schedgen-operator", "patch", "parsejobs", "status", code=422),
             ev("system:serviceaccount:schedgen-system:harness", "get", "parsejobs"),  # a read
             ev("system:kube-scheduler", "create", "pods", "binding", at="2026-01-01T00:01:00Z")]  # outside
    from datetime import datetime, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    c = sl.audit_counts(sl.audit_events(lines + ["not json", ""]), t0, t0 + 30)
    assert c["writes_by_component"] == {"schedgen-operator": 3, "kube-controller-manager/job-controller": 1,
                                        "kube-scheduler": 1, "kwok": 1}
    assert c["events_by_component"] == {"schedgen-operator": 1}
    assert c["writes_by_component_verb_resource"]["schedgen-operator patch parsejobs/status"] == 2
    assert list(c["failed_writes"]) == ["schedgen-operator patch parsejobs/status 422"]
    assert sl.per_job({"a": 3}, 2) == {"a": 1.5}


def test_consistency_finds_lost_duplicated_and_mismatched():
    st = {"u1": sl.Observed("u1", "Succeeded", 5, 1), "u2": sl.Observed("u2", "Succeeded", 3, 1),
          "u3": sl.Observed("u3", "Running", None, 0), "u4": sl.Observed("u4", "Failed", None, 2)}
    rows = {"u1": ("Succeeded", 5), "u2": ("Succeeded", 3), "u3": ("Running", None), "u4": ("Failed", None),
            "u9": ("Succeeded", 1)}
    c = sl.consistency(st, rows, {"u1": 5, "u2": 2}, {"u1": 1, "u2": 1, "u4": 1})
    assert (c["lost"], c["duplicated"], c["events_mismatch"], c["rows_without_parsejob"]) == (0, 1, 1, 1)
    assert c["unfinished"] == 1 and c["examples"]["duplicated"] == ["u4"]
    rows["u2"] = ("Running", None)  # the row behind a final status: lost
    assert sl.consistency(st, rows, {"u1": 5, "u2": 3}, {})["examples"]["lost"] == ["u2"]
    ok = sl.consistency({"u1": st["u1"]}, {"u1": ("Succeeded", 5)}, {"u1": 5}, {"u1": 1})
    assert (ok["lost"], ok["duplicated"], ok["events_mismatch"]) == (0, 0, 0)


def test_fairness_within_priority_leaves_out_classes_held_back_by_a_higher_one():
    # high: x and y both wait all minute and share equally; low: z waits but gets nothing (held back)
    lives = [L("x1", "x", 0, 0, 60, "high"), L("x2", "x", 0, None, None, "high"),
             L("y1", "y", 0, 0, 60, "high"), L("y2", "y", 0, None, None, "high"),
             L("z1", "z", 0, None, None, "low"), L("w1", "w", 0, None, None, "low")]
    [m] = sl.fairness_within_priority(lives, 0, 60)
    assert m["jain"] == pytest.approx(1.0) and set(m["classes"]) == {"high"}
    # all waiting tenants alike: z and w got nothing -> (60+60)^2 / (4 * 7200) = 0.5
    [m] = sl.fairness_per_minute(lives, 0, 60)
    assert m["jain"] == pytest.approx(0.5)
    summary = sl.fairness_summary(sl.fairness_within_priority(lives, 0, 60))
    assert summary["min"] == pytest.approx(1.0) and summary["minutes_with_index"] == 1


def test_the_warm_up_does_not_count_once_forgotten():
    """Retention deleting the warm-up ParseJob mid-run sends an event with its final phase:
    counted, it ended the drain one job early (a 15,000 run measured with one still Running)."""
    import scale

    tracker = scale.Tracker()
    tracker.update("warm", "t1", {"phase": "Succeeded", "_final": True}, 1.0)
    assert tracker.restart(ignore="warm")["phase"] == "Succeeded"
    tracker.update("pj-1", "t1", {"phase": "Running", "_running": True}, 2.0)
    tracker.update("warm", "t1", {"phase": "Succeeded", "_final": True}, 3.0)  # its deletion, later
    assert tracker.snapshot() == ({"t1": 1}, 0, 0) and "warm" not in tracker.jobs
    tracker.update("pj-1", "t1", {"phase": "Succeeded", "_final": True}, 4.0)
    assert tracker.snapshot() == ({}, 0, 1)
