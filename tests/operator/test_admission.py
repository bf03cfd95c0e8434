"""Admission: concurrency, per-tenant caps, token bucket (injected clock), capacity guard."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schedgen.operator.admission import PendingPod, TokenBucket, capacity_guard_tripped, decide, every_slot_taken
from schedgen.operator.config import RuntimeConfig
from schedgen.operator.queue_policy import QueueEntry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entries(tenants: str) -> list[QueueEntry]:
    return [QueueEntry(("ns", f"pj-{i}"), t, "normal", f"2026-01-01T00:00:{i:02d}Z", uid=f"u{i}")
            for i, t in enumerate(tenants)]


def cfg(**kw) -> RuntimeConfig:
    base = dict(max_concurrent=4, max_per_tenant=10, admissions_per_second=1000.0, admission_burst=1000)
    base.update(kw)
    return RuntimeConfig(**base)


def test_token_bucket_refills_with_the_clock():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_token() == 0.5
    clock.now = 0.5
    assert bucket.try_take() and not bucket.try_take()
    clock.now = 100
    assert bucket.available() == 3  # capped at burst


def test_concurrency_cap_counts_running():
    d = decide(entries("abcdef"), {"x": 3}, cfg(), TokenBucket(1000, 1000, Clock()))
    assert [e.tenant for e in d.admit] == ["a"] and d.blocked == "concurrency"


def test_tenant_cap_skips_without_blocking_others():
    d = decide(entries("aaab"), {"a": 2}, cfg(max_per_tenant=2), TokenBucket(1000, 1000, Clock()))
    assert [e.tenant for e in d.admit] == ["b"] and d.tenant_capped == 3


def test_rate_limit_blocks_and_reports():
    clock = Clock()
    bucket = TokenBucket(1.0, 2, clock)
    d = decide(entries("abcd"), {}, cfg(), bucket)
    assert len(d.admit) == 2 and d.blocked == "rate"
    clock.now = 1.0
    assert len(decide(entries("cd"), {}, cfg(), bucket).admit) == 1


def test_capacity_guard():
    c = cfg(guard_max_unschedulable=2, guard_unschedulable_seconds=30)
    pods = [PendingPod(f"p{i}", 100.0) for i in range(3)]
    assert not capacity_guard_tripped(pods, c, now=120)  # not long enough yet
    assert capacity_guard_tripped(pods, c, now=131)
    assert not capacity_guard_tripped(pods[:2], c, now=500)  # not more than N
    assert not capacity_guard_tripped(pods, cfg(guard_max_unschedulable=-1), now=10_000)
    d = decide(entries("ab"), {}, c, TokenBucket(10, 10, Clock()), guard_tripped=True)
    assert d.admit == [] and d.blocked == "capacity"


@given(st.text(alphabet="abc", max_size=40), st.dictionaries(st.sampled_from("abc"), st.integers(0, 4)),
       st.integers(0, 6), st.integers(0, 4))
def test_never_exceeds_the_caps(tenants, running, max_concurrent, max_per_tenant):
    c = cfg(max_concurrent=max_concurrent, max_per_tenant=max_per_tenant)
    d = decide(entries(tenants), running, c, TokenBucket(1000, 1000, Clock()))
    total = sum(running.values()) + len(d.admit)
    assert len(d.admit) == 0 or total <= max_concurrent
    for t in "abc":
        admitted = sum(1 for e in d.admit if e.tenant == t)
        assert admitted == 0 or running.get(t, 0) + admitted <= max_per_tenant


@given(st.text(alphabet="abc", min_size=1, max_size=20), st.dictionaries(st.sampled_from("abc"), st.integers(0, 4)),
       st.integers(0, 6))
def test_every_slot_taken_means_decide_admits_none(tenants, running, max_concurrent):
    """The scheduler skips ordering the queue when every slot is taken: only sound if
    decide would admit nothing then, whatever the order."""
    c = cfg(max_concurrent=max_concurrent)
    d = decide(entries(tenants), running, c, TokenBucket(1000, 1000, Clock()))
    assert every_slot_taken(running, c) == (sum(running.values()) >= max_concurrent)
    if every_slot_taken(running, c):
        assert d.admit == [] and d.blocked == "concurrency"


def test_runtime_config_from_configmap_overrides_env():
    env = {"SCHEDGEN_MAX_CONCURRENT": "7", "SCHEDGEN_ADMISSIONS_PER_SECOND": "2.5"}
    c = RuntimeConfig.from_sources(env, {"maxConcurrent": "4", "maxPerTenant": "bogus"})
    assert c.max_concurrent == 4 and c.admissions_per_second == 2.5 and c.max_per_tenant == 5
