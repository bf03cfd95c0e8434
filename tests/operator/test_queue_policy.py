"""Queue order: priority, then tenants take turns, then arrival."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from schedgen.operator.queue_policy import PRIORITY_RANK, QueueEntry, order

TENANTS = ["a", "b", "c", "d"]


def entry(i: int, tenant: str, priority: str = "normal", arrival: int | None = None) -> QueueEntry:
    t = i if arrival is None else arrival
    return QueueEntry(key=("ns", f"pj-{i:04d}"), tenant=tenant, priority=priority,
                      arrival=f"2026-01-01T00:{t // 60:02d}:{t % 60:02d}Z", uid=f"u{i}")


entries = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(list(PRIORITY_RANK)), st.integers(0, 3000)),
    max_size=80,
).map(lambda rows: [entry(i, t, p, a) for i, (t, p, a) in enumerate(rows)])
running = st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 5))


def test_priority_then_round_robin_then_arrival():
    waiting = [entry(i, "big") for i in range(5)] + [entry(10, "small", arrival=100)] + [entry(20, "x", "high", 200)]
    names = [e.key[1] for e in order(waiting)]
    assert names[0] == "pj-0020"  # high first even though it arrived last
    assert names[1:4] == ["pj-0000", "pj-0010", "pj-0001"]  # small tenant gets the 2nd normal turn
    assert names[4:] == ["pj-0002", "pj-0003", "pj-0004"]


def test_running_jobs_count_against_the_tenants_turn():
    waiting = [entry(0, "busy"), entry(1, "idle", arrival=50)]
    assert [e.tenant for e in order(waiting, {"busy": 3})] == ["idle", "busy"]


@given(entries, running)
def test_order_is_a_permutation(waiting, running_now):
    out = order(waiting, running_now)
    assert sorted(e.key for e in out) == sorted(e.key for e in waiting)


@given(entries, running)
def test_higher_priority_always_first(waiting, running_now):
    ranks = [PRIORITY_RANK[e.priority] for e in order(waiting, running_now)]
    assert ranks == sorted(ranks)


@given(entries, running)
def test_arrival_order_kept_within_a_tenant_and_priority(waiting, running_now):
    out = order(waiting, running_now)
    for tenant in TENANTS:
        for prio in PRIORITY_RANK:
            mine = [e for e in out if e.tenant == tenant and e.priority == prio]
            assert [(e.arrival, e.key) for e in mine] == sorted((e.arrival, e.key) for e in mine)


@settings(max_examples=200)
@given(entries)
def test_tenants_take_turns(waiting):
    """With nothing running, in every prefix of one priority's order the tenants that
    still have work waiting differ by at most one admitted job."""
    out = order(waiting)
    for prio in PRIORITY_RANK:
        mine = [e for e in out if e.priority == prio]
        total = Counter(e.tenant for e in mine)
        seen: Counter = Counter()
        for e in mine:
            seen[e.tenant] += 1
            still_waiting = [t for t in total if total[t] > seen[t]]
            for t in still_waiting:
                assert seen[e.tenant] - seen[t] <= 1


@given(st.integers(0, 5), st.integers(0, 5))
def test_one_tenants_flood_does_not_starve_another(running_flood, running_lone):
    """500 uploads of one tenant, then one of another: the lone one waits only behind
    the flood's jobs whose turn comes no later than its own."""
    flood = [entry(1000 + i, "flood", "normal", 0) for i in range(500)]
    lone = entry(2000, "lone", "normal", 3000)
    out = order(flood + [lone], {"flood": running_flood, "lone": running_lone})
    assert out.index(lone) == max(0, running_lone - running_flood + 1)


def test_order_is_deterministic_for_a_rebuilt_queue():
    waiting = [entry(i, TENANTS[i % 3], ["high", "normal", "low"][i % 2]) for i in range(30)]
    assert order(waiting, {"a": 1}) == order(list(reversed(waiting)), {"a": 1})
