"""The queue manager (pure): from the waiting and running ParseJobs to what starts now,
in one step: the queue's order (turns of a batch for a deep tenant), admission (caps,
tokens, the capacity guard), the grouping into runner Jobs (batch mode), and retries
that wait for their status.retryAfter."""

from __future__ import annotations

from functools import lru_cache

from hypothesis import given, settings
from hypothesis import strategies as st

from parsejobs import EPOCH, at, parsejob, running, waiting
from schedgen.operator import queue_manager as qm
from schedgen.operator.admission import TokenBucket
from schedgen.operator.config import RuntimeConfig
from schedgen.parsejob import ParseJob

RT = RuntimeConfig(batch_threshold=5, batch_size=4, max_concurrent=20, max_per_tenant=20)
NOW = EPOCH + 100.0


def entry(i: int, tenant: str = "a", ns: str = "ns", **kw) -> ParseJob:
    return waiting(f"pj-{tenant}-{i:02d}", tenant, namespace=ns, created=i, **kw)


def plan(waiting_: list[ParseJob], running_: list[ParseJob] = (), rt: RuntimeConfig = RT, tokens: int = 1000,
         guard: bool = False, now: float = NOW) -> qm.Plan:
    return qm.plan(list(waiting_), list(running_), rt, tokens, guard, now)


def singles(pjs: list[ParseJob]) -> list[list[ParseJob]]:
    return [[pj] for pj in pjs]


OTHERS_RUN = [running("b-run", "b", namespace="ns9")]  # another tenant runs a ParseJob


def test_light_load_nothing_changes():
    w = [entry(i) for i in range(3)]  # 3 waiting <= threshold 5
    p = plan(w)
    assert p.groups == singles(w) and p.held == 0 and p.started == 3 and p.blocked is None


def test_a_deep_backlog_goes_in_batches_in_admission_order():
    w = [entry(i) for i in range(12)]
    p = plan(w, tokens=10)
    assert [len(g) for g in p.groups] == [4, 4, 2] and p.held == 0  # nothing running: even the rest starts
    assert [pj for g in p.groups for pj in g] == w[:10]
    assert p.started == 10 and p.blocked == "rate"


def test_a_small_remainder_waits_while_the_tenant_runs_others():
    w = [entry(i) for i in range(12)]
    p = plan(w, [running("a-run", "a")], tokens=6)
    assert p.groups == [w[:4]] and p.held == 2 and p.started == 4


def test_a_full_batch_is_half_the_slots_one_tenant_may_hold_and_smaller_groups_wait_while_anything_runs():
    """maxPerTenant 20 (or maxConcurrent 20): batches of at most 10, so two overlap. A
    smaller group waits while ParseJobs run anywhere (slots free one by one); with
    nothing running it starts as it is."""
    rt = RuntimeConfig(batch_threshold=5, batch_size=25, max_concurrent=40, max_per_tenant=20)
    assert qm.full_batch(rt) == 10
    assert qm.full_batch(RuntimeConfig(batch_size=25, max_concurrent=7, max_per_tenant=20)) == 4
    assert qm.full_batch(RuntimeConfig(batch_size=3, max_concurrent=40, max_per_tenant=20)) == 3
    assert qm.full_batch(RuntimeConfig(batch_size=10, max_concurrent=0, max_per_tenant=0)) == 1
    deep = [entry(i, "a") for i in range(30)]
    p = plan(deep, OTHERS_RUN, rt, tokens=9)
    assert p.groups == [] and p.held == 9 and p.started == 0  # 9 < 10: waits for one more slot
    p = plan(deep, OTHERS_RUN, rt, tokens=14)
    assert p.groups == [deep[:10]] and p.held == 4
    p = plan(deep, [], rt, tokens=9)
    assert p.groups == [deep[:9]] and p.held == 0
    tail = deep[:7]  # a backlog of 7 (> threshold 5): a full batch is all of it
    p = plan(tail, OTHERS_RUN, rt)
    assert p.groups == [tail] and p.held == 0
    p = plan(deep, [], rt)  # the tenant cap: 20 of 30, as two full batches
    assert p.groups == [deep[:10], deep[10:20]] and p.blocked is None


def test_held_groups_spend_no_tokens():
    """Was: admission took a token per admitted ParseJob and the scheduler refunded those
    of held groups. Now `plan` is given the token count and says what starts; the
    scheduler takes only `started` from the bucket."""
    clock = [0.0]
    bucket = TokenBucket(rate=1.0, burst=10, clock=lambda: clock[0])
    rt = RuntimeConfig(batch_threshold=5, batch_size=25, max_concurrent=12, max_per_tenant=20)
    deep = [entry(i, "a") for i in range(30)]
    others = [running(f"b-run{i}", "b", namespace="ns9") for i in range(4)]  # 8 slots free
    p = plan(deep, others, rt, tokens=bucket.available())
    assert qm.full_batch(rt) == 6 and p.groups == [deep[:6]] and p.held == 2 and p.started == 6
    bucket.take(p.started)
    assert bucket.available() == 4
    p = plan(deep[6:], others + [running(f"a-run{i}", "a") for i in range(6)], rt, tokens=bucket.available())
    assert p.groups == [] and p.held == 2
    bucket.take(p.started)
    assert bucket.available() == 4


def test_the_rest_of_a_burst_goes_in_batches_while_the_tenant_runs_one():
    """A tenant with 3 left (<= threshold 5) would get 3 single pods; while a batch of
    that tenant and namespace runs, they go together instead. Other tenants, other
    namespaces and a tenant running only single Jobs are unchanged."""
    tail = [entry(i) for i in range(3)]
    assert plan(tail, [running("a-single", "a")]).groups == singles(tail)
    batch_runs = [running("a-batch", "a", batch_size=4)]
    p = plan(tail, batch_runs)
    assert p.groups == [tail] and p.held == 0
    p = plan(tail, batch_runs, tokens=2)
    assert p.groups == [] and p.held == 2  # a third slot frees soon: gather
    elsewhere = [running("x", "a", batch_size=4, namespace="ns2"), running("y", "b", batch_size=4)]
    assert plan(tail, elsewhere).groups == singles(tail)
    assert qm.turn_sizes(tail, RT, {("ns", "a")}) == {"a": 4} and qm.turn_sizes(tail, RT) == {}
    mixed = [running("x", "a", batch_size=4), running("y", "b", namespace="ns"),
             parsejob("z", namespace="ns2", tenant="c")]
    assert qm.batching(mixed) == {("ns", "a")}
    off = RuntimeConfig(batch_size=1, max_concurrent=20, max_per_tenant=20)
    assert plan(tail, batch_runs, off).groups == singles(tail)
    assert qm.turn_sizes(tail, off, {("ns", "a")}) == {}


def test_deep_tenants_take_their_turns_a_batch_at_a_time():
    """Uploads of two deep tenants arrive interleaved, a shallow one's later: the queue
    holds each deep tenant's next batch together, tenants alternating batch by batch,
    and the shallow tenant's one ParseJob goes first: a batch of 10 takes the turn of its
    10th job, so it waits behind tenants with fewer ParseJobs placed."""
    rt = RuntimeConfig(batch_threshold=5, batch_size=10, max_concurrent=30, max_per_tenant=20)
    a = [waiting(f"a{i:02d}", "a", created=2 * i) for i in range(25)]
    b = [waiting(f"b{i:02d}", "b", created=2 * i + 1) for i in range(25)]
    c = [waiting("c00", "c", created=30)]
    w = a + b + c
    assert qm.turn_sizes(w, rt) == {"a": 10, "b": 10}
    queue = qm.ordered(w, [], rt)
    assert queue[:21] == c + a[:10] + b[:10]
    assert queue[21:41] == a[10:20] + b[10:20]
    # b runs a batch already: a's next batch comes before b's (c's one first)
    b_runs = [running(f"b-run{i}", "b", batch_size=10) for i in range(10)]
    assert qm.ordered(w, b_runs, rt)[:21] == c + a[:10] + b[:10]
    # batch mode off: one ParseJob per turn, as before
    assert qm.ordered(w, [], RuntimeConfig(batch_size=1))[:4] == [a[0], b[0], c[0], a[1]]
    # and what starts: two batches and the shallow tenant's single Job
    p = plan(w, [], RuntimeConfig(batch_threshold=5, batch_size=10, max_concurrent=30, max_per_tenant=20), tokens=21)
    assert sorted(p.groups, key=len) == [c, a[:10], b[:10]] and p.held == 0


def test_tenants_and_namespaces_never_share_a_batch_and_shallow_tenants_stay_single():
    deep = [entry(i, "a") for i in range(8)]
    other_ns = [entry(i, "a", "ns2") for i in range(8)]
    shallow = [entry(i, "b") for i in range(2)]
    p = plan(deep + other_ns + shallow)
    assert sorted(map(len, p.groups)) == [1, 1, 4, 4, 4, 4] and p.held == 0
    for g in p.groups:
        assert len({(pj.namespace, pj.tenant) for pj in g}) == 1
    assert [shallow[0]] in p.groups and [shallow[1]] in p.groups


def test_own_resources_or_batch_size_one_mean_one_job_each():
    own = {"limits": {"memory": "1Gi"}}
    w = [entry(i, resources=own) for i in range(10)]
    assert all(len(g) == 1 for g in plan(w).groups) and plan(w).started == 10
    assert not qm.batchable(w[0]) and qm.batchable(entry(0))
    mixed = [entry(i) for i in range(8)] + [entry(8 + i, resources=own) for i in range(2)]
    p = plan(mixed)
    assert sorted(map(len, p.groups)) == [1, 1, 4, 4]
    assert [mixed[8]] in p.groups and [mixed[9]] in p.groups
    off = RuntimeConfig(batch_size=1, batch_threshold=0)
    w = [entry(i) for i in range(10)]
    assert all(len(g) == 1 for g in plan(w, rt=off).groups)


def test_a_retry_waits_for_its_retry_after():
    later = entry(0, retry_after=150)
    assert qm.retry_wait(later, NOW) == 50.0 and not qm.due(later, NOW)
    assert qm.retry_wait(later, EPOCH + 150) == 0.0 and qm.due(later, EPOCH + 150)
    assert qm.retry_wait(later, EPOCH + 900) == 0.0
    assert qm.retry_wait(entry(1), NOW) == 0.0 and qm.due(entry(1), NOW)
    p = plan([later])
    assert p.groups == [] and p.blocked is None
    assert plan([later], now=EPOCH + 150).groups == [[later]]
    # it keeps its place in the queue, but holds nobody back while it waits
    behind = entry(1)
    assert plan([later, behind]).groups == [[behind]]
    assert qm.ordered([behind, later], [], RT) == [later, behind]


def test_every_slot_taken_or_the_capacity_guard_start_nothing():
    w = [entry(i, "b") for i in range(3)]
    full = [running(f"r{i}", "a") for i in range(RT.max_concurrent)]
    p = plan(w, full)
    assert p.groups == [] and p.blocked == "concurrency"
    p = plan(w, guard=True)
    assert p.groups == [] and p.blocked == "capacity"
    assert plan([], guard=True) == qm.Plan()


# --- properties ---------------------------------------------------------------------------

RETRY = {"none": None, "past": 50.0, "future": 500.0}  # retryAfter, seconds after EPOCH (NOW: 100)


@lru_cache(maxsize=None)
def waiting_pj(i: int, tenant: str, ns: str, priority: str, created: int, own: bool, retry: str) -> ParseJob:
    return waiting(f"w{i:02d}", tenant, namespace=ns, priority=priority, created=created,
                   retry_after=RETRY[retry], **({"resources": {"limits": {"memory": "1Gi"}}} if own else {}))


@lru_cache(maxsize=None)
def running_pj(i: int, tenant: str, ns: str, batch_size: int) -> ParseJob:
    return running(f"r{i:02d}", tenant, namespace=ns, batch_size=batch_size)


tenants, namespaces = st.sampled_from("abc"), st.sampled_from(["ns1", "ns2"])
waiting_lists = st.lists(st.tuples(tenants, namespaces, st.sampled_from(["high", "normal", "low"]),
                                   st.integers(0, 40), st.sampled_from([False, False, False, True]),
                                   st.sampled_from(sorted(RETRY))), max_size=30).map(
    lambda rows: [waiting_pj(i, *row) for i, row in enumerate(rows)])
running_lists = st.lists(st.tuples(tenants, namespaces, st.sampled_from([1, 1, 3])), max_size=10).map(
    lambda rows: [running_pj(i, *row) for i, row in enumerate(rows)])
runtimes = st.builds(RuntimeConfig, max_concurrent=st.integers(0, 12), max_per_tenant=st.integers(0, 8),
                     batch_threshold=st.integers(0, 6), batch_size=st.integers(1, 6))


def due(pj: ParseJob) -> bool:
    return pj.status.retry_after != at(RETRY["future"])


scenarios = st.tuples(waiting_lists, running_lists, runtimes, st.integers(0, 15),
                      st.sampled_from([False, False, False, True]))


@given(scenarios)
def test_plan_keeps_the_caps_and_the_tokens(scenario):
    """`plan` never starts more than `tokens` ParseJobs (nor admits more, held ones
    included), nor more than the caps allow; the capacity guard starts nothing."""
    w, r, rt, tokens, guard = scenario
    p = plan(w, r, rt, tokens, guard)
    assert p.started == sum(len(g) for g in p.groups)
    assert p.started + p.held <= tokens  # held ones spend nothing, but they were admitted
    started = [pj for g in p.groups for pj in g]
    if started:
        assert len(r) + len(started) <= rt.max_concurrent
        for t in "abc":
            mine = sum(1 for pj in started if pj.tenant == t)
            assert mine == 0 or sum(1 for pj in r if pj.tenant == t) + mine <= rt.max_per_tenant
    if guard:
        assert p.groups == [] and p.held == 0
        assert p.blocked == ("capacity" if any(due(pj) for pj in w) else None)


@given(scenarios)
def test_a_parsejob_waiting_for_its_retry_is_never_started(scenario):
    """Nor any ParseJob twice, nor one that does not wait."""
    w, r, rt, tokens, guard = scenario
    started = [pj for g in plan(w, r, rt, tokens, guard).groups for pj in g]
    assert all(due(pj) for pj in started)
    keys = [pj.key for pj in started]
    assert len(keys) == len(set(keys)) and set(keys) <= {pj.key for pj in w}


@given(waiting_lists, st.integers(1, 6))
def test_with_room_for_all_exactly_the_due_ones_start(w, batch_size):
    """No cap, tokens for all, nothing running: every ParseJob whose retryAfter has
    passed (or that has none) starts, and none that still waits for it."""
    roomy = RuntimeConfig(max_concurrent=100, max_per_tenant=100, batch_threshold=2, batch_size=batch_size)
    p = plan(w, [], roomy, tokens=100)
    started = sorted(pj.key for g in p.groups for pj in g)
    assert started == sorted(pj.key for pj in w if due(pj))
    assert p.held == 0 and p.blocked is None


@settings(max_examples=150)
@given(scenarios)
def test_batches_are_one_namespace_and_tenant_of_default_resources_and_at_most_full(scenario):
    w, r, rt, tokens, guard = scenario
    p = plan(w, r, rt, tokens, guard)
    for g in p.groups:
        assert g and len({(pj.namespace, pj.tenant) for pj in g}) == 1
        assert len(g) <= qm.full_batch(rt)
        if len(g) > 1:
            assert rt.batch_size > 1 and all(qm.batchable(pj) for pj in g)
    if p.held:
        assert r and rt.batch_size > 1  # only while something runs (its slots will free)


@given(scenarios)
def test_more_tokens_never_start_fewer(scenario):
    """Admission with one more token admits what it did and perhaps one more: a batch
    can only fill up, so no group that started stops starting."""
    w, r, rt, tokens, guard = scenario
    assert plan(w, r, rt, tokens + 1, guard).started >= plan(w, r, rt, tokens, guard).started


def test_a_full_batch_grows_with_the_backlog_up_to_batch_max_size():
    """A deep backlog pays pod start-up less often: a quarter of the tenant's backlog in the
    namespace, never below batchSize, never above batchMaxSize, never more than half the
    slots one tenant may hold."""
    rt = RuntimeConfig(batch_size=10, batch_max_size=50, max_concurrent=1000, max_per_tenant=200)
    assert [qm.full_batch(rt, depth) for depth in (0, 20, 40, 80, 200, 10_000)] == [10, 10, 10, 20, 50, 50]
    capped = RuntimeConfig(batch_size=10, batch_max_size=50, max_concurrent=1000, max_per_tenant=40)
    assert qm.full_batch(capped, 10_000) == 20
    assert qm.full_batch(RuntimeConfig(batch_size=10, batch_max_size=5), 10_000) == min(10, qm.full_batch(
        RuntimeConfig(batch_size=10), 0))  # batchMaxSize below batchSize: batchSize


def test_a_batch_is_at_most_a_fair_share_of_the_slots_among_waiting_tenants():
    """12 deep tenants on 30 slots: a batch of 5 (half of maxPerTenant 10) would hold twice
    a tenant's share; batches are 2 (30 // 12), and grow back as tenants drain."""
    rt = RuntimeConfig(batch_threshold=4, batch_size=10, max_concurrent=30, max_per_tenant=10)
    w = [waiting(f"{t}{i:02d}", t, created=i) for t in "abcdefghijkl" for i in range(40)]
    assert set(qm.turn_sizes(w, rt).values()) == {2}
    assert set(qm.turn_sizes([pj for pj in w if pj.tenant in "ab"], rt).values()) == {5}
    p = plan(w, [], rt, tokens=30)
    assert max(len(g) for g in p.groups) == 2 and sum(len(g) for g in p.groups) == 30


def finished(name: str, tenant: str, started: float, phase: str = "Succeeded") -> ParseJob:
    return parsejob(name, tenant=tenant, status={"phase": phase, "transitionSeq": 3, "startedAt": at(started),
                                                 "completedAt": at(started + 1)})


def test_recent_starts_count_the_finished_that_started_within_the_window():
    jobs = [finished("a1", "a", 90), finished("a2", "a", 50), finished("a3", "a", 10),  # 10 s, 50 s, 90 s ago
            finished("b1", "b", 95, phase="Failed"), running("b2", "b"),  # Running: counted as running, not here
            parsejob("c1", tenant="c", status={"phase": "Failed", "transitionSeq": 2})]  # never started
    assert qm.recent_starts(jobs, NOW) == {"a": 2, "b": 1}
    assert qm.recent_starts(jobs, NOW, window=5) == {"b": 1}


def test_a_tenant_that_used_the_slots_lately_waits_behind_one_that_did_not():
    """Nothing runs (short jobs, admission the bottleneck): without the recent use both
    tenants' first jobs tie on turn 0 and arrival decides, so the older backlog would
    take every token, minute after minute."""
    w = [entry(i, "a") for i in range(5)] + [entry(10 + i, "b") for i in range(5)]
    recent = qm.recent_starts([finished(f"a-done-{i}", "a", 80) for i in range(3)], NOW)
    assert [pj.tenant for g in plan(w, tokens=4).groups for pj in g] == ["a", "b", "a", "b"]  # no history: a first
    p = qm.plan(w, [], RT, 4, False, NOW, recent=recent)
    assert [pj.tenant for g in p.groups for pj in g] == ["b", "b", "b", "a"]  # b catches up: turns 0, 1, 2, then 3 ties


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=8, max_size=40), st.integers(1, 4))
def test_under_a_rate_cap_backlogged_tenants_get_equal_admissions(arrivals, per_tick):
    """Every tenant waits throughout, the k-th arrived k+1 times slower (by arrival order
    alone the first would get most admissions); jobs end within the tick they start;
    `per_tick` tokens a tick. Admissions per tenant over the ticks differ by at most one."""
    tenants = sorted(set(arrivals))
    backlog = {t: [waiting(f"pj-{t}-{i:03d}", t, created=i * (k + 1)) for i in range(100)]
               for k, t in enumerate(tenants)}
    done: list[ParseJob] = []
    admitted = {t: 0 for t in tenants}
    for tick in range(30):
        now = NOW + tick
        queue = [pj for t in tenants for pj in backlog[t]]
        p = qm.plan(queue, [], RuntimeConfig(batch_size=1, max_concurrent=20, max_per_tenant=20), per_tick, False,
                    now, recent=qm.recent_starts(done, now))
        for pj in (pj for g in p.groups for pj in g):
            backlog[pj.tenant].remove(pj)
            admitted[pj.tenant] += 1
            done.append(finished(f"done-{pj.name}", pj.tenant, now))
    assert max(admitted.values()) - min(admitted.values()) <= 1, admitted
