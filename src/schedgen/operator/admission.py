"""Admission: may the first waiting ParseJobs start now?

Given the queue's order (queue_policy.py), admission walks it front to back and
admits while all of these hold:

* fewer than `maxConcurrent` ParseJobs are Running cluster-wide;
* the job's tenant has fewer than `maxPerTenant` Running (a tenant at its cap is
  skipped, the walk goes on: no head-of-line blocking across tenants);
* the token bucket (`admissionsPerSecond`, `admissionBurst`) has a token;
* the runner pods waiting for a node stay within a budget sized from the backlog
  (`pod_room`: while an autoscaler adds nodes it sees enough Pending pods to scale on,
  never a flood), and the capacity guard is not tripped (runner pods Unschedulable for
  longer than an autoscaler would take: stop admitting).

Pure: `decide` is given the number of tokens available, and the caller takes from the
bucket only what it really starts (queue_manager.py).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from schedgen.parsejob import LABEL_TENANT, PRIORITIES, ParseJob

from .config import OperatorConfig, RuntimeConfig
from .job_template import parse_quantity
from .runner_objects import RunnerPod

LABEL_MAX_PRIORITY = "schedgen.io/max-priority"  # on a namespace; absent: normal


class TokenBucket:
    """Classic token bucket; `rate` tokens per second up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = clock()

    def configure(self, rate: float, burst: int) -> None:
        self._refill()
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, float(burst))

    def _refill(self) -> None:
        now = self.clock()
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)

    def available(self) -> int:
        self._refill()
        return int(self.tokens)

    def take(self, n: int) -> None:
        """Spend `n` tokens (at most those available: `decide` asked first)."""
        self._refill()
        self.tokens = max(0.0, self.tokens - n)

    def seconds_until_token(self) -> float:
        self._refill()
        if self.tokens >= 1.0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1.0 - self.tokens) / self.rate


def unschedulable_since(pods: Iterable[RunnerPod]) -> list[float]:
    """When each Pending-Unschedulable runner pod became so (epoch seconds)."""
    return [p.unschedulable_since for p in pods if p.unschedulable_since is not None]


def pod_room(pending: int, waiting: int, cfg: RuntimeConfig) -> int | None:
    """How many more runner pods may start now: a bound on those waiting for a node
    (Pending, not yet placed), sized from the backlog (`pending_runners_per_waiting` of the
    waiting ParseJobs, between `pending_runners_min` and `pending_runners_max`). A cluster
    autoscaler scales on Pending pods: with none it would never add a node, with all of a
    deep backlog at once it would be flooded. None: unbounded."""
    if cfg.pending_runners_max < 0:
        return None
    budget = min(cfg.pending_runners_max,
                 max(cfg.pending_runners_min, math.ceil(waiting * cfg.pending_runners_per_waiting)))
    return max(0, budget - pending)


def capacity_guard_tripped(since: Iterable[float], cfg: RuntimeConfig, now: float) -> bool:
    if cfg.guard_max_unschedulable < 0:
        return False
    stuck = sum(1 for t in since if now - t > cfg.guard_unschedulable_seconds)
    return stuck > cfg.guard_max_unschedulable


@dataclass
class Decision:
    admit: list[ParseJob] = field(default_factory=list)
    # why the rest wait (for metrics and for the log): "concurrency", "rate", "capacity"
    blocked: str | None = None
    tenant_capped: int = 0


def every_slot_taken(running_per_tenant: Mapping[str, int], cfg: RuntimeConfig) -> bool:
    """`maxConcurrent` ParseJobs run: `decide` would admit none, whatever the order."""
    return sum(running_per_tenant.values()) >= cfg.max_concurrent


def every_tenant_capped(tenants: Iterable[str], running_per_tenant: Mapping[str, int], cfg: RuntimeConfig) -> bool:
    """Each of the waiting `tenants` runs its `maxPerTenant`: `decide` would admit none of
    theirs, whatever the order (a backlog's tail, one or two tenants left)."""
    return all(running_per_tenant.get(t, 0) >= cfg.max_per_tenant for t in tenants)


def decide(ordered: Sequence[ParseJob], running_per_tenant: Mapping[str, int], cfg: RuntimeConfig,
           tokens: int, guard_tripped: bool = False) -> Decision:
    """The first ParseJobs of `ordered` that fit the caps, at most `tokens` of them."""
    decision = Decision()
    if not ordered:
        return decision
    if guard_tripped:
        decision.blocked = "capacity"
        return decision
    per_tenant = Counter(running_per_tenant)
    running = sum(per_tenant.values())
    for pj in ordered:
        if running >= cfg.max_concurrent:  # every_slot_taken
            decision.blocked = "concurrency"
            break
        if per_tenant[pj.tenant] >= cfg.max_per_tenant:
            decision.tenant_capped += 1
            continue
        if len(decision.admit) >= tokens:
            decision.blocked = "rate"
            break
        decision.admit.append(pj)
        per_tenant[pj.tenant] += 1
        running += 1
    return decision


def tenant_mismatch(pj: ParseJob, namespace_labels: Mapping[str, str] | None) -> str | None:
    """Why a namespace bound to a tenant may not run this ParseJob, or None: the rule of
    the chart's ValidatingAdmissionPolicy (templates/tenant-binding.yaml), checked again
    at admission. A namespace labelled schedgen.io/tenant=T runs only ParseJobs of tenant
    T (spec.tenant, absent: the namespace's name; a tenant label too, if set) with a
    priority no more urgent than its schedgen.io/max-priority (absent: normal).
    Unlabelled namespaces (and None: labels unknown) are not bound."""
    bound = (namespace_labels or {}).get(LABEL_TENANT)
    if not bound:
        return None
    if pj.tenant != bound:
        return f"spec.tenant {pj.tenant} is not {bound}, the tenant of namespace {pj.namespace}"
    if pj.tenant_label is not None and pj.tenant_label != bound:
        return f"label {LABEL_TENANT} {pj.tenant_label} is not {bound}, the tenant of namespace {pj.namespace}"
    most = (namespace_labels or {}).get(LABEL_MAX_PRIORITY) or "normal"
    if most not in PRIORITIES or pj.priority not in PRIORITIES or \
            PRIORITIES.index(pj.priority) < PRIORITIES.index(most):
        return f"priority {pj.priority} is not allowed in namespace {pj.namespace} ({LABEL_MAX_PRIORITY}: {most})"
    return None


# --- what may not run at all ----------------------------------------------------------------

UPLOADS = "uploads/"
LEGACY_API_UPLOADS = f"{UPLOADS}sha256/"  # the API's uploads before they moved under its namespace


def own_prefix(namespace: str) -> str:
    """Where a ParseJob of `namespace` may take its PDF from (the API's uploads included:
    it stores them under its own namespace's prefix, api/services/uploads.source_key)."""
    return f"{UPLOADS}namespaces/{namespace}/"


def source_refusal(pj: ParseJob, cfg: OperatorConfig) -> str | None:
    """Why the operator will not presign a GET for this ParseJob's source, or None.

    The operator signs with its own credentials and the URL lands in a Job its creator
    can read, so `spec.source` may name only an upload: in the upload bucket (or
    SCHEDGEN_SOURCE_BUCKETS), under `uploads/namespaces/<its namespace>/` in every
    namespace (never another tenant's PDF, a result object, another bucket). The chart's
    ValidatingAdmissionPolicy says the same for every create (the legacy exception below
    is for objects created before it did)."""
    buckets = cfg.source_buckets or (cfg.default_bucket,)
    bucket = pj.source_bucket or cfg.default_bucket
    if bucket not in buckets:
        return f"spec.source.s3.bucket {bucket} is not an upload bucket ({', '.join(buckets)})"
    key = pj.source_key
    prefixes = [own_prefix(pj.namespace)]
    # Legacy: ParseJobs the API queued before an upgrade name uploads/sha256/; still allowed in its namespaces.
    if pj.namespace in cfg.api_namespaces:
        prefixes.append(LEGACY_API_UPLOADS)
    if not key.startswith(tuple(prefixes)) or "/../" in f"/{key}/" or "//" in key:
        return f"spec.source.s3.key must be under {prefixes[0]} in namespace {pj.namespace}"
    return None


def resources_refusal(pj: ParseJob) -> str | None:
    """Quantities <= 0 (a BestEffort pod with no limit at all) or not quantities."""
    for kind, values in (pj.resources or {}).items():
        for name, value in (values or {}).items() if isinstance(values, Mapping) else ():
            try:
                if parse_quantity(value) <= 0:
                    return f"spec.resources.{kind}.{name} must be more than 0, not {value!r}"
            except ValueError:
                return f"spec.resources.{kind}.{name} is not a quantity: {str(value)[:50]!r}"
    return None


def refusal(pj: ParseJob, cfg: OperatorConfig, namespace_labels: Mapping[str, str] | None
            ) -> tuple[str, str] | None:
    """(reason, message) when this ParseJob may never run, else None."""
    for reason, why in (("TenantMismatch", tenant_mismatch(pj, namespace_labels)),
                        ("SourceNotAllowed", source_refusal(pj, cfg)),
                        ("InvalidSpec", resources_refusal(pj))):
        if why:
            return reason, why
    return None
