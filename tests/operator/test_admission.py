"""Admission: concurrency, per-tenant caps, the token count (and the bucket it comes
from, with an injected clock), the capacity guard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsejobs import EPOCH, at, waiting
from schedgen.operator.admission import (
    TokenBucket,
    capacity_guard_tripped,
    decide,
    every_slot_taken,
    every_tenant_capped,
    pod_room,
    source_refusal,
    unschedulable_since,
)
from schedgen.operator.config import OperatorConfig, RuntimeConfig
from schedgen.operator.runner_objects import RunnerPod
from schedgen.parsejob import ParseJob

PLENTY = 1000  # tokens


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pjs(tenants: str) -> list[ParseJob]:
    """One waiting ParseJob per letter (its tenant), in this order of arrival."""
    return [waiting(f"pj-{i:02d}", t, created=i) for i, t in enumerate(tenants)]


def cfg(**kw) -> RuntimeConfig:
    base = dict(max_concurrent=4, max_per_tenant=10, admissions_per_second=1000.0, admission_burst=1000)
    base.update(kw)
    return RuntimeConfig(**base)


def test_token_bucket_refills_with_the_clock():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert bucket.available() == 3
    bucket.take(3)
    assert bucket.available() == 0 and bucket.seconds_until_token() == 0.5
    clock.now = 0.5
    assert bucket.available() == 1
    bucket.take(1)
    assert bucket.available() == 0
    clock.now = 100
    assert bucket.available() == 3  # capped at burst
    assert bucket.seconds_until_token() == 0.0


def test_take_spends_only_what_is_there_and_taking_nothing_costs_nothing():
    """`take` follows `decide`, which never admits more than `available()`: taking more
    leaves an empty bucket, not a debt that would hold later admissions back."""
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    bucket.take(0)
    assert bucket.available() == 3
    bucket.take(5)
    assert bucket.available() == 0
    clock.now = 0.5
    assert bucket.available() == 1


def test_no_rate_means_no_token_ever():
    clock = Clock()
    bucket = TokenBucket(rate=0.0, burst=1, clock=clock)
    bucket.take(1)
    clock.now = 1e6
    assert bucket.available() == 0 and bucket.seconds_until_token() == float("inf")


def test_configure_refills_at_the_old_rate_and_caps_at_the_new_burst():
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=10, clock=clock)
    bucket.take(10)
    clock.now = 3.0
    bucket.configure(rate=100.0, burst=10)
    assert bucket.available() == 3  # the 3 s before the change at 1/s
    clock.now = 3.045
    assert bucket.available() == 7  # then at 100/s (3 + 4.5)
    bucket.configure(rate=100.0, burst=2)
    assert bucket.available() == 2


def test_concurrency_cap_counts_running():
    d = decide(pjs("abcdef"), {"x": 3}, cfg(), PLENTY)
    assert [pj.tenant for pj in d.admit] == ["a"] and d.blocked == "concurrency"


def test_tenant_cap_skips_without_blocking_others():
    d = decide(pjs("aaab"), {"a": 2}, cfg(max_per_tenant=2), PLENTY)
    assert [pj.tenant for pj in d.admit] == ["b"] and d.tenant_capped == 3 and d.blocked is None


def test_rate_limit_blocks_and_reports():
    d = decide(pjs("abcd"), {}, cfg(), tokens=2)
    assert [pj.name for pj in d.admit] == ["pj-00", "pj-01"] and d.blocked == "rate"
    none = decide(pjs("abcd"), {}, cfg(), tokens=0)
    assert none.admit == [] and none.blocked == "rate"


def test_the_token_count_comes_from_the_bucket_and_only_admissions_spend_it():
    """What the scheduler does each tick: ask the bucket, decide, take what started."""
    clock = Clock()
    bucket = TokenBucket(1.0, 2, clock)
    d = decide(pjs("abcd"), {}, cfg(), bucket.available())
    bucket.take(len(d.admit))
    assert len(d.admit) == 2 and d.blocked == "rate"
    assert decide(pjs("cd"), {}, cfg(), bucket.available()).admit == []
    clock.now = 1.0
    assert len(decide(pjs("cd"), {}, cfg(), bucket.available()).admit) == 1


def test_a_capped_tenant_spends_no_token():
    d = decide(pjs("aab"), {"a": 1}, cfg(max_per_tenant=1), tokens=1)
    assert [pj.tenant for pj in d.admit] == ["b"] and d.tenant_capped == 2


def pod(name: str, phase: str = "Pending", unschedulable_at: str | None = None) -> RunnerPod:
    status: dict = {"phase": phase}
    if unschedulable_at:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "lastTransitionTime": unschedulable_at}]
    return RunnerPod.of({"metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": "j"}},
                         "status": status})


def test_unschedulable_since_reads_the_pending_pods_condition():
    pods = [pod("stuck", unschedulable_at=at(10)), pod("pending"), pod("running", "Running", at(20)),
            pod("stuck2", unschedulable_at=at(12.5))]
    assert unschedulable_since(pods) == [EPOCH + 10, EPOCH + 12.5]


def test_capacity_guard():
    c = cfg(guard_max_unschedulable=2, guard_unschedulable_seconds=30)
    since = [100.0] * 3
    assert not capacity_guard_tripped(since, c, now=120)  # not long enough yet
    assert not capacity_guard_tripped(since, c, now=130)  # longer than, not as long as
    assert capacity_guard_tripped(since, c, now=131)
    assert not capacity_guard_tripped(since[:2], c, now=500)  # not more than N
    assert not capacity_guard_tripped(since, cfg(guard_max_unschedulable=-1), now=10_000)
    # the default: any one, once it has waited longer than an autoscaler would take (5 min)
    assert not capacity_guard_tripped([100.0], cfg(guard_max_unschedulable=0), now=131)
    assert capacity_guard_tripped([100.0], cfg(guard_max_unschedulable=0), now=401)
    d = decide(pjs("ab"), {}, c, 10, guard_tripped=True)
    assert d.admit == [] and d.blocked == "capacity"
    assert decide([], {}, c, 10, guard_tripped=True).blocked is None  # nothing waits: nothing blocked


running_counts = st.dictionaries(st.sampled_from("abc"), st.integers(0, 4))


@given(st.text(alphabet="abc", max_size=40), running_counts, st.integers(0, 6), st.integers(0, 4),
       st.integers(0, 50))
def test_never_exceeds_the_caps(tenants, running, max_concurrent, max_per_tenant, tokens):
    c = cfg(max_concurrent=max_concurrent, max_per_tenant=max_per_tenant)
    d = decide(pjs(tenants), running, c, tokens)
    assert len(d.admit) <= tokens
    total = sum(running.values()) + len(d.admit)
    assert len(d.admit) == 0 or total <= max_concurrent
    for t in "abc":
        admitted = sum(1 for pj in d.admit if pj.tenant == t)
        assert admitted == 0 or running.get(t, 0) + admitted <= max_per_tenant


@given(st.text(alphabet="abc", max_size=30), running_counts, st.integers(0, 6), st.integers(0, 4),
       st.integers(0, 50))
def test_admission_walks_the_queue_in_order_and_skips_only_capped_tenants(tenants, running, max_concurrent,
                                                                          max_per_tenant, tokens):
    """The admitted ParseJobs keep the queue's order, and one the walk passed over on its
    way to a later admission belongs to a tenant at its cap (no head-of-line blocking,
    no queue-jumping either)."""
    c = cfg(max_concurrent=max_concurrent, max_per_tenant=max_per_tenant)
    queue = pjs(tenants)
    d = decide(queue, running, c, tokens)
    positions = [queue.index(pj) for pj in d.admit]
    assert positions == sorted(positions)
    if positions:
        admitted_so_far: dict[str, int] = {}
        for i, pj in enumerate(queue[: positions[-1] + 1]):
            if i in positions:
                admitted_so_far[pj.tenant] = admitted_so_far.get(pj.tenant, 0) + 1
            else:
                assert running.get(pj.tenant, 0) + admitted_so_far.get(pj.tenant, 0) >= max_per_tenant


@given(st.text(alphabet="abc", min_size=1, max_size=20), running_counts, st.integers(0, 6))
def test_every_slot_taken_means_decide_admits_none(tenants, running, max_concurrent):
    """The queue manager skips ordering the queue when every slot is taken: only sound if
    decide would admit nothing then, whatever the order."""
    c = cfg(max_concurrent=max_concurrent)
    d = decide(pjs(tenants), running, c, PLENTY)
    assert every_slot_taken(running, c) == (sum(running.values()) >= max_concurrent)
    if every_slot_taken(running, c):
        assert d.admit == [] and d.blocked == "concurrency"


@given(st.text(alphabet="abc", min_size=1, max_size=20), running_counts, st.integers(0, 6), st.integers(0, 6))
def test_every_tenant_capped_means_decide_admits_none(tenants, running, max_concurrent, max_per_tenant):
    """The queue manager skips ordering the queue when each waiting tenant holds its cap:
    only sound if decide would admit nothing then, whatever the order."""
    c = cfg(max_concurrent=max_concurrent, max_per_tenant=max_per_tenant)
    queue = pjs(tenants)
    capped = every_tenant_capped({pj.tenant for pj in queue}, running, c)
    assert capped == all(running.get(t, 0) >= max_per_tenant for t in set(tenants))
    if capped:
        assert decide(queue, running, c, PLENTY).admit == []


def test_runtime_config_from_configmap_overrides_env():
    env = {"SCHEDGEN_MAX_CONCURRENT": "7", "SCHEDGEN_ADMISSIONS_PER_SECOND": "2.5",
           "SCHEDGEN_RETRY_BACKOFF_SECONDS": "4"}
    c = RuntimeConfig.from_sources(env, {"maxConcurrent": "4", "maxPerTenant": "bogus"})
    assert c.max_concurrent == 4 and c.admissions_per_second == 2.5 and c.max_per_tenant == 5
    assert c.retry_backoff_seconds == 4.0
    assert RuntimeConfig.from_sources({}, {"retryBackoffSeconds": "-3"}).retry_backoff_seconds == 0.0


def test_the_pending_pod_budget_is_sized_from_the_backlog():
    """While nodes are provisioned, runner pods waiting for one are bounded: a share of the
    backlog (10 %), at least 10, at most 100 (the defaults); negative max: no bound."""
    c = cfg()
    assert pod_room(0, 0, c) == 10 and pod_room(0, 50, c) == 10  # light load: the floor
    assert pod_room(0, 500, c) == 50 and pod_room(0, 5000, c) == 100  # a share, capped
    assert pod_room(30, 500, c) == 20 and pod_room(80, 500, c) == 0  # what already waits counts
    assert pod_room(0, 10_000, cfg(pending_runners_max=-1)) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), st.integers(0, 20_000), st.integers(0, 50), st.integers(-1, 500),
       st.floats(0, 1))
def test_pod_room_never_lets_more_wait_than_the_budget(pending, waiting, low, high, share):
    """Whatever already waits, room plus it never exceeds the bound (the max), and a
    deeper backlog never gets less room."""
    c = cfg(pending_runners_min=low, pending_runners_max=high, pending_runners_per_waiting=share)
    room = pod_room(pending, waiting, c)
    if high < 0:
        assert room is None
        return
    assert room >= 0 and (room == 0 or pending + room <= high)
    assert pod_room(pending, waiting + 100, c) >= room


# --- where a ParseJob's PDF may come from ---------------------------------------------------

SHA = "ab" * 32


def sourced(namespace: str, key: str, bucket: str | None = None) -> ParseJob:
    s3 = {"key": key, **({"bucket": bucket} if bucket else {})}
    return ParseJob.of({"metadata": {"namespace": namespace, "name": "pj", "uid": "u"},
                        "spec": {"source": {"s3": s3}}})


SOURCES = OperatorConfig(default_bucket="uploads", api_namespaces=("the-api",))


@pytest.mark.parametrize("namespace", ["team-a", "the-api", "another-api"])
def test_every_namespace_takes_its_pdf_from_its_own_prefix(namespace):
    """One rule for all, the API's namespace included (its uploads are under its own prefix)."""
    for key in (f"uploads/namespaces/{namespace}/x.pdf", f"uploads/namespaces/{namespace}/sha256/{SHA}.pdf"):
        for bucket in (None, "uploads"):
            assert source_refusal(sourced(namespace, key, bucket), SOURCES) is None, (key, bucket)
    other = "team-b"
    for key, bucket in ((f"uploads/namespaces/{other}/x.pdf", None),
                        (f"uploads/namespaces/{other}/sha256/{SHA}.pdf", None),
                        ("results/team-b/uid.json", None),
                        (f"uploads/namespaces/{namespace}/../{other}/x.pdf", None),
                        (f"uploads/namespaces/{namespace}/..", None),
                        (f"uploads/namespaces/{namespace}//x.pdf", None),
                        (f"uploads/namespaces/{namespace}", None),
                        (f"uploads/namespaces/{namespace}/x.pdf", "elsewhere")):
        assert source_refusal(sourced(namespace, key, bucket), SOURCES), (key, bucket)


def test_the_legacy_api_prefix_only_in_the_api_namespaces():
    """ParseJobs an older API queued (uploads/sha256/) still run in the API's namespaces,
    nowhere else."""
    legacy = f"uploads/sha256/{SHA}.pdf"
    assert source_refusal(sourced("the-api", legacy), SOURCES) is None
    assert source_refusal(sourced("the-api", "uploads/sha256/../namespaces/team-b/x.pdf"), SOURCES)
    for namespace in ("team-a", "another-api"):
        why = source_refusal(sourced(namespace, legacy), SOURCES)
        assert why == f"spec.source.s3.key must be under uploads/namespaces/{namespace}/ in namespace {namespace}"
    assert source_refusal(sourced("the-api", legacy), OperatorConfig(default_bucket="uploads"))  # none configured
