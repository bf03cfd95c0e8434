"""The pure parts of bench/scale.py (unit-tested in tests/bench/test_scale_units.py): the
workload (arrivals, tenants, priorities), and what is computed from what was observed --
admission delay after a slot frees, Jain's fairness index per minute, caps, the audit log by
component, loss and duplicates.

Times are seconds (floats) on one clock; a job's life is ``created <= started <= done``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

PRIORITIES = ("high", "normal", "low")
PRIORITY_SHARES = {"high": 0.10, "normal": 0.20, "low": 0.70}  # Kueue's scheduler baseline: 50/100/350 of 500
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


# ------------------------------------------------------------------------------ the workload
@dataclass(frozen=True)
class Upload:
    index: int
    tenant: str
    priority: str
    at: float  # seconds after the start of the burst
    pdf: int  # which fixture


def tenant_names(count: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(count)]


def arrival_times(count: int, tau: float, window: float) -> list[float]:
    """Semester start: arrivals at a rate decaying as exp(-t/tau), all within [0, window).

    The i-th arrival is at the (i + 0.5)/count quantile of the exponential distribution with
    mean ``tau`` truncated to ``window``: deterministic, sorted, 1 - exp(-t/tau) of the
    uploads (renormalised to the window) have arrived by t. With tau = 120 s and a 600 s
    window: 40 % in the first minute, 64 % in two, 87 % in four, all by ten."""
    if count < 0 or tau <= 0 or window <= 0:
        raise ValueError("count >= 0, tau > 0, window > 0")
    mass = 1.0 - math.exp(-window / tau)
    return [-tau * math.log(1.0 - (i + 0.5) / count * mass) for i in range(count)]


def tenant_weights(count: int, skew: float) -> list[float]:
    """Zipf-like tenant sizes: the k-th tenant (0-based) gets a share proportional to
    1/(k+1)**skew (skew 0: all equal)."""
    raw = [1.0 / (k + 1) ** skew for k in range(count)]
    total = sum(raw)
    return [w / total for w in raw]


def workload(count: int, tenants: list[str], tau: float, window: float, skew: float = 1.0, pdfs: int = 3,
             seed: int = 1) -> list[Upload]:
    """``count`` uploads: arrival times (:func:`arrival_times`), each upload's tenant drawn by
    :func:`tenant_weights` and its priority by :data:`PRIORITY_SHARES` (seeded: the same
    plan every run), the fixture PDFs in turn. Every tenant gets at least one upload."""
    rng = random.Random(seed)
    times = arrival_times(count, tau, window)
    weights = tenant_weights(len(tenants), skew)
    who = rng.choices(range(len(tenants)), weights=weights, k=count)
    for k in range(min(len(tenants), count)):  # each tenant at least once, at random places
        if k not in who:
            who[rng.randrange(count)] = k
    prio = rng.choices(PRIORITIES, weights=[PRIORITY_SHARES[p] for p in PRIORITIES], k=count)
    return [Upload(i, tenants[who[i]], prio[i], times[i], i % pdfs) for i in range(count)]


def arrivals_by_minute(plan: list[Upload]) -> list[int]:
    if not plan:
        return []
    out = [0] * (int(max(u.at for u in plan) // 60) + 1)
    for u in plan:
        out[int(u.at // 60)] += 1
    return out


# ------------------------------------------------------------------------------ statistics
def percentile(values: Iterable[float], q: float) -> float:
    """Nearest rank on the sorted values; nan when empty (as bench/spike_lib.py)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def jain(xs: list[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one has it
    all; 1.0 for no one or nothing allocated (nobody was treated worse than another)."""
    n = len(xs)
    sq = sum(x * x for x in xs)
    if n == 0 or sq == 0:
        return 1.0
    return sum(xs) ** 2 / (n * sq)


@dataclass
class Life:
    """One job as observed: tenant, priority, created/started/done (seconds, one clock)."""

    name: str
    tenant: str
    priority: str
    created: float
    started: float | None = None
    done: float | None = None


def admission_delays(lives: list[Life], cap: int, tenant_cap: int | None = None) -> dict[str, list[float]]:
    """Admission delay after a slot frees, per priority (and ``all``).

    Admissions in start order: the k-th admission with k >= ``cap`` took the slot freed by
    the (k - cap)-th completion (completions in time order; with ``cap`` slots all busy, a
    start needs a completion). Its delay is start - max(that completion, its creation): a job
    created after the slot freed waits from its creation. Negative values (a start seen
    before the completion, i.e. clock or observation noise) count as 0. Jobs that never
    started are left out. As bench/operator_throughput.py, plus the creation bound.

    With ``tenant_cap`` (a cap per tenant, schedgen's maxPerTenant) the slot must be one the
    job may take: the m-th start of a tenant with m >= ``tenant_cap`` also needed its
    tenant's (m - tenant_cap)-th completion, and counts from the later of the two. Without
    it, a cluster slot left free while every waiting tenant holds its own cap counts as
    delay, which is the cap at work, not admission."""
    started = sorted((j for j in lives if j.started is not None), key=lambda j: j.started)
    completions = sorted(j.done for j in lives if j.done is not None and j.started is not None)
    tenant_done: dict[str, list[float]] = defaultdict(list)
    for j in lives:
        if j.done is not None and j.started is not None:
            tenant_done[j.tenant].append(j.done)
    for done in tenant_done.values():
        done.sort()
    nth: Counter = Counter()
    out: dict[str, list[float]] = defaultdict(list)
    for k, job in enumerate(started):
        m = nth[job.tenant]
        nth[job.tenant] += 1
        if k < cap or k - cap >= len(completions):
            continue
        freed = completions[k - cap]
        if tenant_cap is not None and m >= tenant_cap and m - tenant_cap < len(tenant_done[job.tenant]):
            freed = max(freed, tenant_done[job.tenant][m - tenant_cap])
        delay = max(0.0, job.started - max(freed, job.created))
        out[job.priority].append(delay)
        out["all"].append(delay)
    return dict(out)


def delay_summary(delays: Mapping[str, list[float]]) -> dict:
    return {p: {"n": len(v), "p50_s": round(percentile(v, 0.5), 3), "p99_s": round(percentile(v, 0.99), 3),
                "max_s": round(max(v), 3) if v else None}
            for p, v in sorted(delays.items())}


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def fairness_per_minute(lives: list[Life], start: float, end: float, step: float = 1.0,
                        minute: float = 60.0) -> list[dict]:
    """Jain's index per minute among the tenants that waited the whole minute.

    For each minute [m, m + 60) from ``start`` until ``end``: the *waiting tenants* are those
    with at least one job waiting (created, not yet started) at every sample (every ``step``
    s) of that minute -- continuously backlogged, so each could have used any slot it was
    given. Each one's allocation x_i is the slot-seconds its jobs held in the minute (the
    overlap of [started, done) with the minute; the caps count running jobs, so this is its
    share of the capacity). The index is Jain's over those x_i. Minutes with fewer than two
    waiting tenants have no index (None). Also per minute: how many tenants waited, the
    lowest and highest x_i."""
    by_tenant: dict[str, list[Life]] = defaultdict(list)
    for j in lives:
        by_tenant[j.tenant].append(j)
    waits = {t: merged([(j.created, j.started if j.started is not None else math.inf) for j in jobs])
             for t, jobs in by_tenant.items()}
    out = []
    m = start
    while m < end:
        m1 = min(m + minute, end)
        first, last = m, m + (max(1, int((m1 - m) / step)) - 1) * step  # the minute's samples
        waiting = [t for t, spans in waits.items() if any(a <= first and b > last for a, b in spans)]
        xs = []
        for tenant in waiting:
            xs.append(sum(_overlap(j.started, j.done if j.done is not None else end, m, m1)
                          for j in by_tenant[tenant] if j.started is not None))
        out.append({"minute": round((m - start) / 60.0, 2), "waiting_tenants": len(waiting),
                    "jain": round(jain(xs), 4) if len(waiting) >= 2 else None,
                    "min_slot_s": round(min(xs), 1) if xs else None,
                    "max_slot_s": round(max(xs), 1) if xs else None})
        m = m1
    return out


def fairness_within_priority(lives: list[Life], start: float, end: float, step: float = 1.0,
                             minute: float = 60.0) -> list[dict]:
    """Jain's index per minute within each priority: both products order by priority first
    (schedgen: priority, then the tenant's turn; Kueue: the WorkloadPriorityClass), so a
    tenant whose waiting jobs are all low while others' are high is served later by design.
    Per minute and priority p: the tenants with a job of priority p waiting the whole minute,
    x_i = slot-seconds held by their priority-p jobs in the minute (as
    :func:`fairness_per_minute`); a class counts only when its waiting tenants got any slot
    at all that minute (a class held back whole by a higher one is treated alike: no
    index). ``jain``: the lowest index over the classes that count (None when none does)."""
    per_class = {p: fairness_per_minute([j for j in lives if j.priority == p], start, end, step, minute)
                 for p in PRIORITIES}
    out = []
    for i, m in enumerate(per_class[PRIORITIES[0]]):
        classes = {}
        for p in PRIORITIES:
            row = per_class[p][i]
            if row["jain"] is not None and (row["max_slot_s"] or 0) > 0:
                classes[p] = {"waiting_tenants": row["waiting_tenants"], "jain": row["jain"]}
        out.append({"minute": m["minute"], "classes": classes,
                    "jain": min((c["jain"] for c in classes.values()), default=None)})
    return out


def fairness_summary(minutes: list[dict]) -> dict:
    xs = [m["jain"] for m in minutes if m["jain"] is not None]
    return {"minutes": minutes, "minutes_with_index": len(xs), "min": min(xs, default=None),
            "mean": round(sum(xs) / len(xs), 4) if xs else None,
            "minutes_below_0.95": sum(1 for x in xs if x < 0.95)}


def merged(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals [a, b) as disjoint sorted intervals (touching ones joined)."""
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """Most intervals [a, b) open at once (an end at t closes before a start at t opens)."""
    points = []
    for a, b in intervals:
        points.append((a, 1))
        points.append((b, -1))
    points.sort(key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def cap_check(lives: list[Life], max_concurrent: int, max_per_tenant: int, end: float) -> dict:
    """The caps over the jobs' own [started, done) intervals (exact, from the statuses)."""
    spans = [(j.started, j.done if j.done is not None else end) for j in lives if j.started is not None]
    per = defaultdict(list)
    for j in lives:
        if j.started is not None:
            per[j.tenant].append((j.started, j.done if j.done is not None else end))
    worst_tenant = max(((t, max_overlap(v)) for t, v in per.items()), key=lambda x: x[1], default=(None, 0))
    total = max_overlap(spans)
    return {"max_running": total, "max_running_tenant": worst_tenant[1], "tenant": worst_tenant[0],
            "maxConcurrent": max_concurrent, "maxPerTenant": max_per_tenant,
            "exceeded": total > max_concurrent or worst_tenant[1] > max_per_tenant}


@dataclass
class CapSamples:
    """Running jobs sampled every second (from a watch): the worst seen, and seconds over a cap."""

    samples: int = 0
    max_total: int = 0
    max_tenant: int = 0
    over_total: int = 0
    over_tenant: int = 0
    series: list = field(default_factory=list)  # (t, running, waiting)

    def add(self, t: float, running_by_tenant: Mapping[str, int], waiting: int, max_concurrent: int,
            max_per_tenant: int) -> None:
        total = sum(running_by_tenant.values())
        worst = max(running_by_tenant.values(), default=0)
        self.samples += 1
        self.max_total = max(self.max_total, total)
        self.max_tenant = max(self.max_tenant, worst)
        self.over_total += total > max_concurrent
        self.over_tenant += worst > max_per_tenant
        self.series.append((round(t, 2), total, waiting))

    def summary(self) -> dict:
        return {"samples": self.samples, "max_running": self.max_total, "max_running_tenant": self.max_tenant,
                "samples_over_maxConcurrent": self.over_total, "samples_over_maxPerTenant": self.over_tenant}


# ------------------------------------------------------------------------------ the audit log
def component(username: str, user_agent: str = "") -> str:
    """Which component made a request, from the audit event's user (and agent)."""
    u = username or ""
    if u.startswith("system:serviceaccount:kube-system:"):
        return "kube-controller-manager/" + u.rsplit(":", 1)[-1]
    if u == "system:kube-controller-manager":
        return "kube-controller-manager"
    if u == "system:kube-scheduler":
        return "kube-scheduler"
    if u.startswith("system:node:"):
        return "kubelet"
    if u.startswith("system:serviceaccount:"):
        return u.rsplit(":", 1)[-1]  # ours: schedgen-operator, schedgen-api, executor, harness, kueue
    if u.startswith("system:apiserver") or u == "system:apiserver":
        return "kube-apiserver"
    if u == "schedgen-admin":
        return "kwok" if user_agent.startswith("kwok") else "admin"
    return u or "unknown"


def audit_events(lines: Iterable[str]) -> Iterator[dict]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            continue


def audit_counts(events: Iterable[dict], since: float | None = None, until: float | None = None) -> dict:
    """Writes by component, by component and verb/resource, and Events written, from audit
    events (one per request: ResponseComplete) whose requestReceivedTimestamp is in
    [since, until]. A write is create/update/patch/delete/deletecollection."""
    from datetime import datetime

    by_comp: Counter = Counter()
    by_comp_res: Counter = Counter()
    events_by_comp: Counter = Counter()
    codes: Counter = Counter()
    for ev in events:
        verb = ev.get("verb")
        if verb not in WRITE_VERBS or ev.get("stage") not in (None, "ResponseComplete"):
            continue
        if since is not None or until is not None:
            at = ev.get("requestReceivedTimestamp") or ev.get("stageTimestamp")
            if not at:
                continue
            t = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
            if (since is not None and t < since) or (until is not None and t > until):
                continue
        comp = component((ev.get("user") or {}).get("username", ""), ev.get("userAgent") or "")
        ref = ev.get("objectRef") or {}
        res = ref.get("resource") or "?"
        if ref.get("subresource"):
            res += "/" + ref["subresource"]
        by_comp[comp] += 1
        by_comp_res[f"{comp} {verb} {res}"] += 1
        if ref.get("resource") == "events":
            events_by_comp[comp] += 1
        code = (ev.get("responseStatus") or {}).get("code")
        if code and code >= 400:
            codes[f"{comp} {verb} {res} {code}"] += 1
    return {"writes_by_component": dict(by_comp.most_common()),
            "writes_by_component_verb_resource": dict(by_comp_res.most_common()),
            "events_by_component": dict(events_by_comp.most_common()),
            "failed_writes": dict(codes.most_common(30))}


def per_job(counts: Mapping[str, int], jobs: int, digits: int = 2) -> dict[str, float]:
    return {k: round(v / jobs, digits) for k, v in counts.items()} if jobs else {}


# ------------------------------------------------------------------------------ loss and duplicates
@dataclass(frozen=True)
class Observed:
    """A ParseJob's last status as seen, and what its Postgres records say."""

    uid: str
    phase: str | None
    events: int | None  # status.result.events
    finals: int  # final phases reached (status.history), 1 when it ended exactly once


def consistency(statuses: Mapping[str, Observed], rows: Mapping[str, tuple[str, int | None]],
                event_rows: Mapping[str, int], final_transitions: Mapping[str, int],
                final_phases: Iterable[str] = ("Succeeded", "Failed", "Cancelled")) -> dict:
    """Every ParseJob ends exactly once and its row and events agree:

    * unfinished: no final phase in its status (yet: a run stopped at its deadline);
    * lost: a final phase in its status, and no row or the row not in that phase;
    * duplicated: more than one final phase in its history, or more than one final
      transition in Postgres;
    * events_mismatch: events rows != status.result.events (a Succeeded job), or the row's
      event_count differs;
    * rows_without_parsejob: rows of uids the run never saw (another run's, or invented)."""
    finals = set(final_phases)
    lost, dup, mismatch, unfinished = [], [], [], []
    for uid, s in statuses.items():
        row = rows.get(uid)
        if s.phase not in finals:
            unfinished.append(uid)  # a run stopped at its deadline: not final yet
        elif row is None or row[0] != s.phase:
            lost.append(uid)
        if s.finals > 1 or final_transitions.get(uid, 0) > 1:
            dup.append(uid)
        if s.phase == "Succeeded":
            want = s.events or 0
            if event_rows.get(uid, 0) != want or (row is not None and row[1] is not None and row[1] != want):
                mismatch.append(uid)
    extra = sorted(set(rows) - set(statuses))
    return {"parsejobs": len(statuses), "unfinished": len(unfinished), "lost": len(lost), "duplicated": len(dup), "events_mismatch": len(mismatch),
            "rows_without_parsejob": len(extra), "examples": {"lost": lost[:5], "duplicated": dup[:5],
                                                               "events_mismatch": mismatch[:5]}}
