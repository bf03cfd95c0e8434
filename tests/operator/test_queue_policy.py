"""Queue order: priority, then tenants take turns (a turn may be a batch), then arrival."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from hypothesis import given, settings
from hypothesis import strategies as st

from parsejobs import at, parsejob
from schedgen.operator.queue_policy import PRIORITY_RANK, order
from schedgen.parsejob import ParseJob

TENANTS = ["a", "b", "c", "d"]


@lru_cache(maxsize=None)  # ParseJobs are immutable: hypothesis' examples share them
def entry(i: int, tenant: str, priority: str = "normal", arrival: int | None = None) -> ParseJob:
    t = i if arrival is None else arrival
    return parsejob(f"pj-{i:04d}", tenant=tenant, priority=priority, created=t,
                    status={"phase": "Queued", "transitionSeq": 1, "enqueuedAt": at(t)})


def arrival(pj: ParseJob) -> tuple:
    return (pj.created, pj.status.enqueued_at, pj.key)


entries = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from(list(PRIORITY_RANK)), st.integers(0, 3000)),
    max_size=80,
).map(lambda rows: [entry(i, t, p, a) for i, (t, p, a) in enumerate(rows)])
running = st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 5))
sizes = st.dictionaries(st.sampled_from(TENANTS), st.integers(1, 6))


def test_priority_then_round_robin_then_arrival():
    waiting = [entry(i, "big") for i in range(5)] + [entry(10, "small", arrival=100)] + [entry(20, "x", "high", 200)]
    names = [pj.name for pj in order(waiting)]
    assert names[0] == "pj-0020"  # high first even though it arrived last
    assert names[1:4] == ["pj-0000", "pj-0010", "pj-0001"]  # small tenant gets the 2nd normal turn
    assert names[4:] == ["pj-0002", "pj-0003", "pj-0004"]


def test_running_jobs_count_against_the_tenants_turn():
    waiting = [entry(0, "busy"), entry(1, "idle", arrival=50)]
    assert [pj.tenant for pj in order(waiting, {"busy": 3})] == ["idle", "busy"]


def test_the_tenant_defaults_to_the_namespace():
    """Two namespaces without spec.tenant are two tenants; one with spec.tenant of the
    other's name shares its turns."""
    a = [parsejob(f"a{i}", namespace="team-a", created=i) for i in range(3)]
    b = parsejob("b0", namespace="team-b", created=10)
    shared = parsejob("s0", namespace="team-c", tenant="team-a", created=5)
    assert [pj.name for pj in order(a + [b])] == ["a0", "b0", "a1", "a2"]
    assert [pj.name for pj in order(a + [b, shared])] == ["a0", "b0", "a1", "a2", "s0"]


def test_enqueued_at_then_the_name_break_ties_of_creation():
    same = dict(tenant="t", created=0)
    late = parsejob("a-late", **same, status={"phase": "Queued", "enqueuedAt": at(9)})
    early = parsejob("z-early", **same, status={"phase": "Queued", "enqueuedAt": at(1)})
    twin = parsejob("b-twin", **same, status={"phase": "Queued", "enqueuedAt": at(9)})
    assert [pj.name for pj in order([late, twin, early], {}, {"t": 3})] == ["z-early", "a-late", "b-twin"]


@given(entries, running, sizes)
def test_order_is_a_permutation(waiting, running_now, turn_sizes):
    out = order(waiting, running_now, turn_sizes)
    assert sorted(pj.key for pj in out) == sorted(pj.key for pj in waiting)


@given(entries, running, sizes)
def test_higher_priority_always_first(waiting, running_now, turn_sizes):
    ranks = [PRIORITY_RANK[pj.priority] for pj in order(waiting, running_now, turn_sizes)]
    assert ranks == sorted(ranks)


@given(entries, running, sizes)
def test_arrival_order_kept_within_a_tenant_and_priority(waiting, running_now, turn_sizes):
    out = order(waiting, running_now, turn_sizes)
    for tenant in TENANTS:
        for prio in PRIORITY_RANK:
            mine = [arrival(pj) for pj in out if pj.tenant == tenant and pj.priority == prio]
            assert mine == sorted(mine)


@settings(max_examples=200)
@given(entries)
def test_tenants_take_turns(waiting):
    """With nothing running, in every prefix of one priority's order the tenants that
    still have work waiting differ by at most one admitted job."""
    out = order(waiting)
    for prio in PRIORITY_RANK:
        mine = [pj for pj in out if pj.priority == prio]
        total = Counter(pj.tenant for pj in mine)
        seen: Counter = Counter()
        for pj in mine:
            seen[pj.tenant] += 1
            still_waiting = [t for t in total if total[t] > seen[t]]
            for t in still_waiting:
                assert seen[pj.tenant] - seen[t] <= 1


@given(entries, sizes)
def test_a_turn_of_several_stands_together(waiting, turn_sizes):
    """With nothing running, a tenant whose turn is `size` jobs has its jobs of one
    priority in the order in blocks: its first `size`, then its next `size`, ... each
    block without another tenant's job inside it (they start as one batch Job)."""
    out = order(waiting, {}, turn_sizes)
    for prio in PRIORITY_RANK:
        mine = [pj for pj in out if pj.priority == prio]
        for tenant in TENANTS:
            size = turn_sizes.get(tenant, 1)
            places = [i for i, pj in enumerate(mine) if pj.tenant == tenant]
            for start in range(0, len(places), size):
                block = places[start:start + size]
                assert block == list(range(block[0], block[0] + len(block))), (tenant, size, places)


@given(entries, sizes)
def test_tenants_take_turns_counted_in_jobs(waiting, turn_sizes):
    """Turns count jobs, a block's turn being its last job's (a finish tag): when a
    tenant's block of jobs s .. s+n-1 comes up, every other tenant of that priority still
    waiting has had so many placed that its own next block ends no earlier. So a tenant
    that batches gets no larger share of the order than one that does not."""
    out = order(waiting, {}, turn_sizes)
    for prio in PRIORITY_RANK:
        mine = [pj for pj in out if pj.priority == prio]
        total = Counter(pj.tenant for pj in mine)
        seen: Counter = Counter()
        for pj in mine:
            size = max(1, turn_sizes.get(pj.tenant, 1))
            start = (seen[pj.tenant] // size) * size
            finish = start + min(size, total[pj.tenant] - start) - 1
            seen[pj.tenant] += 1
            for t in total:
                if total[t] > seen[t] and t != pj.tenant:
                    assert seen[t] + max(1, turn_sizes.get(t, 1)) - 1 >= finish, (pj.tenant, finish, t, seen[t])


def test_a_running_batch_counts_its_jobs_in_the_tenants_turn():
    """Running jobs count in the turns, job by job: a tenant running 3 whose next batch is
    4 stands where its 7th job would (turn 6): behind another tenant's first 5 jobs."""
    mine = [entry(i, "a") for i in range(6)]
    other = [entry(100 + i, "b", arrival=50 + i) for i in range(8)]
    out = [pj.name for pj in order(mine + other, {"a": 3}, {"a": 4})]
    assert out == ["pj-0100", "pj-0101", "pj-0102", "pj-0103", "pj-0104", "pj-0105",
                   "pj-0000", "pj-0001", "pj-0002", "pj-0003", "pj-0106",
                   "pj-0107", "pj-0004", "pj-0005"]


FLOOD = [entry(1000 + i, "flood", "normal", 0) for i in range(500)]


@given(st.integers(0, 5), st.integers(0, 5))
def test_one_tenants_flood_does_not_starve_another(running_flood, running_lone):
    """500 uploads of one tenant, then one of another: the lone one waits only behind
    the flood's jobs whose turn comes no later than its own."""
    lone = entry(2000, "lone", "normal", 3000)
    out = order(FLOOD + [lone], {"flood": running_flood, "lone": running_lone})
    assert out.index(lone) == max(0, running_lone - running_flood + 1)


def test_order_is_deterministic_for_a_rebuilt_queue():
    waiting = [entry(i, TENANTS[i % 3], ["high", "normal", "low"][i % 2]) for i in range(30)]
    assert order(waiting, {"a": 1}) == order(list(reversed(waiting)), {"a": 1})
    assert order(waiting, {"a": 1}, {"b": 3}) == order(list(reversed(waiting)), {"a": 1}, {"b": 3})
