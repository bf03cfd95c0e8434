"""Prometheus metrics (served on `SCHEDGEN_METRICS_PORT`, path /metrics)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import Iterable

from prometheus_client import Counter, Gauge, Histogram

from schedgen.parsejob import PHASES, PRIORITIES, QUEUED, RUNNING, ParseJob

from .runner_objects import epoch_of

_TIME_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

PARSEJOBS = Gauge("schedgen_parsejobs", "ParseJobs known to the operator, by phase", ["phase"])
WAITING_BY_PRIORITY = Gauge("schedgen_parsejobs_waiting", "Queued ParseJobs by priority", ["priority"])
RUNNING_BY_PRIORITY = Gauge("schedgen_parsejobs_running", "Running ParseJobs by priority", ["priority"])
OLDEST_WAITING = Gauge("schedgen_queue_oldest_waiting_seconds",
                       "Age of the oldest queued ParseJob by priority (0: none waits)", ["priority"])
WAITING_BY_TENANT = Gauge("schedgen_tenant_parsejobs_waiting",
                          "Queued ParseJobs by tenant (the first TENANT_SERIES_MAX tenants seen; the rest: other)",
                          ["tenant"])
RUNNING_BY_TENANT = Gauge("schedgen_tenant_parsejobs_running",
                          "Running ParseJobs by tenant (the first TENANT_SERIES_MAX tenants seen; the rest: other)",
                          ["tenant"])
ADMITTED = Counter("schedgen_parsejobs_admitted_total", "ParseJobs admitted (Job created)", ["priority"])
COMPLETED = Counter("schedgen_parsejobs_completed_total", "ParseJobs finished",
                    ["kind", "outcome", "reason"])
REQUEUED = Counter("schedgen_parsejobs_requeued_total",
                   "ParseJobs put back in the queue (Retrying: a transient failure, an attempt counted; "
                   "BatchEnded: a batch member not reached, Disrupted: a run stopped by an eviction or "
                   "node drain, neither counted)", ["reason"])
OBSERVATION_ERRORS = Counter("schedgen_observation_errors_total",
                             "ParseJobs whose run could not be decided (an unexpected error while observing "
                             "it): each Failed ObservationFailed, the tick going on for the others")
ORPHAN_JOBS_DELETED = Counter("schedgen_orphan_jobs_deleted_total",
                              "Runner Jobs deleted because no Running ParseJob records them (made before an "
                              "operator restart cut admission short, or by someone else)")
BATCHES = Counter("schedgen_batches_started_total", "Batch Jobs created (batch mode)")
BATCH_MEMBERS = Counter("schedgen_batch_members_total", "ParseJobs admitted into batch Jobs")
RECORDS_ABANDONED = Counter("schedgen_records_abandoned_total",
                            "Deleted ParseJobs let go without their last row: Postgres stayed unavailable "
                            "for SCHEDGEN_FINALIZE_RECORD_TIMEOUT_SECONDS")
RATE_LIMITED = Counter("schedgen_admissions_rate_limited_total",
                       "Scheduling ticks in which the token bucket held admissions back")
ADMISSION_BLOCKED = Counter("schedgen_admission_blocked_total",
                            "Ticks with work waiting that could not admit, by reason", ["reason"])
CAPACITY_GUARD = Gauge("schedgen_capacity_guard_tripped",
                       "1 while admission waits for capacity: runner pods waiting for a node fill their "
                       "budget (admission.pod_room), or are Unschedulable past the guard")
QUEUE_WAIT = Histogram("schedgen_parsejob_queue_wait_seconds", "Creation to admission", buckets=_TIME_BUCKETS)
RUN_TIME = Histogram("schedgen_parsejob_run_seconds", "Admission to completion", buckets=_TIME_BUCKETS)
END_TO_END = Histogram("schedgen_parsejob_end_to_end_seconds", "Creation to completion", buckets=_TIME_BUCKETS)
ADMISSION_LATENCY = Histogram(
    "schedgen_admission_latency_seconds",
    "From a running slot freeing (its ParseJob finishing) to the next admission",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
RECORDS_PENDING = Gauge("schedgen_records_pending", "ParseJobs whose Postgres row is behind their status")
RECORDS_ERRORS = Counter("schedgen_records_errors_total", "Failed attempts to write ParseJob rows")
RECORDS_WRITTEN = Counter("schedgen_records_written_total", "ParseJob rows brought up to date")
RESULTS_UNAVAILABLE = Counter("schedgen_results_unavailable_total",
                              "Failed tries to read or record a finished run's result object (S3 or Postgres away)")
RETENTION_DELETED = Counter("schedgen_retention_deleted_total", "Finished ParseJobs deleted by retention",
                            ["phase"])
API_REQUESTS = Counter("schedgen_operator_api_requests_total", "Kubernetes API requests made by the operator",
                       ["client", "method"])
TICK_SECONDS = Histogram("schedgen_scheduler_tick_seconds", "Duration of one scheduling tick",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
TICK_PHASE_SECONDS = Histogram("schedgen_scheduler_tick_phase_seconds",
                               "Time a scheduling tick spends in each of its steps (observe: ended runs decided; "
                               "admit: what starts now decided, orphans cleared; publish: the queue summary; the writes "
                               "decided run after the tick: schedgen_scheduler_in_flight)", ["phase"],
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
IN_FLIGHT = Gauge("schedgen_scheduler_in_flight",
                  "ParseJobs whose start (kind=start: Job and Running status) or end (kind=end: final status) "
                  "a tick decided and no tick has yet seen written", ["kind"])
ACTIVE = Gauge("schedgen_operator_active", "1 while this replica runs the scheduler (holds the peering lead)")

# Counters with known label values start at 0 (exported before the first event): rate()
# then sees the first admissions after a restart, not only the later ones.
for _priority in PRIORITIES:
    ADMITTED.labels(priority=_priority)


# Tenants are free text in spec.tenant (kubectl users write it): a label per tenant must
# not grow without bound. The first TENANT_SERIES_MAX tenants seen by this process get a
# series each (kept, at 0 when idle, so series do not churn); any later one counts as OTHER.
TENANT_SERIES_MAX = 50
OTHER_TENANT = "other"


class TenantLabels:
    """The bounded tenant -> label value mapping of the per-tenant gauges."""

    def __init__(self, limit: int = TENANT_SERIES_MAX):
        self.limit = limit
        self.known: dict[str, None] = {}  # insertion-ordered set

    def label(self, tenant: str) -> str:
        if tenant in self.known:
            return tenant
        if len(self.known) < self.limit and tenant != OTHER_TENANT:
            self.known[tenant] = None
            return tenant
        return OTHER_TENANT

    def labels(self) -> list[str]:
        return [*self.known, OTHER_TENANT]


TENANTS = TenantLabels()


def count_parsejobs(parsejobs: Iterable[ParseJob], now: float | None = None,
                    tenants: TenantLabels = TENANTS) -> None:
    """Set the ParseJob gauges (by phase; waiting/running by priority and by tenant; the
    oldest waiting one's age)."""
    now = time.time() if now is None else now
    phases = [(pj, pj.phase or QUEUED) for pj in parsejobs]
    by_phase = Tally(phase for _, phase in phases)
    for phase in PHASES:
        PARSEJOBS.labels(phase=phase).set(by_phase.get(phase, 0))
    waiting = [pj for pj, phase in phases if phase == QUEUED]
    running = [pj for pj, phase in phases if phase == RUNNING]
    oldest: dict[str, float] = {}
    for pj in waiting:
        created = epoch_of(pj.created)
        if created is not None:
            oldest[pj.priority] = max(oldest.get(pj.priority, 0.0), now - created)
    for gauge, jobs in ((WAITING_BY_PRIORITY, waiting), (RUNNING_BY_PRIORITY, running)):
        by_priority = Tally(pj.priority for pj in jobs)
        for priority in PRIORITIES:
            gauge.labels(priority=priority).set(by_priority.get(priority, 0))
    for priority in PRIORITIES:
        OLDEST_WAITING.labels(priority=priority).set(max(oldest.get(priority, 0.0), 0.0))
    for gauge, jobs in ((WAITING_BY_TENANT, waiting), (RUNNING_BY_TENANT, running)):
        by_tenant = Tally(tenants.label(pj.tenant) for pj in jobs)
        for label in tenants.labels():
            gauge.labels(tenant=label).set(by_tenant.get(label, 0))
