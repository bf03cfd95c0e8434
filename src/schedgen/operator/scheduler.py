"""The scheduler: follow Running ParseJobs, admit waiting ones, publish the queue.

One `Scheduler` lives in the active replica; the `scheduler` daemon calls `tick()`
whenever an index changes (or every `SCHEDGEN_TICK_SECONDS`). A tick is level-based:
it reads the kopf indexes (ParseJobs, runner Jobs, runner pods), decides from them
alone, and writes only what differs. Each step is one concern:

    follow_running  the Job reconciler: Job and pods -> Succeeded/Failed/JobLost
    admit           queue_policy.order + admission.decide -> create Job, mark Running
    publish_queue   mark new ParseJobs Queued, refresh status.queuePosition (budgeted)

`cancel` is the other way out: the finalizer calls it for a ParseJob deleted before
it finished.

Status writes are conditional on status.transitionSeq (a JSON-patch `test`), so a
stale view or a second replica can never record a transition twice. Until the watch
delivers our own write back, the written body is kept as an overlay on the index.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable, Mapping

from . import admission, batches, metrics, queue_policy
from . import status as st
from .config import OperatorConfig, RuntimeConfig
from .job_template import build_batch_job, build_job, job_name, priority_of, tenant_of
from .kube import Conflict, Kube, NotFound
from .outcome import Outcome
from .reconciler import JobReconciler, Requeue, Snapshot, Tracked, _deleting, _ended, _seq, _uid
from .results import ResultStore
from .views import epoch_of

log = logging.getLogger(__name__)

WRITE_CONCURRENCY = 16
MARK_QUEUED_PER_TICK = 100
MIN_TICK_GAP_SECONDS = 0.1
STUCK_TICK_SECONDS = 60.0
GAUGES_EVERY_SECONDS = 1.0


class Stuck(Exception):
    """The active scheduler has not ticked for too long (the liveness probe fails)."""


def _better(view: Mapping[str, Any], kept: Mapping[str, Any], named: str | None) -> bool:
    """Of two Jobs claiming one ParseJob: the one its status names, else a live one."""
    if named:
        return view["name"] == named
    return _ended(kept) and not _ended(view)


def _adoptable(job: Mapping[str, Any] | None) -> bool:
    """A waiting ParseJob's Job exists (the operator stopped between creating it and
    recording Running): adopt it. Not an ended batch Job: its members that wait were put
    back in the queue (or it never reached them)."""
    if job is None:
        return False
    return not (job.get("members") and _ended(job))


class Scheduler(JobReconciler):
    def __init__(self, cfg: OperatorConfig, kube: Kube, clock=time.monotonic, wall=time.time, results=None):
        self.cfg = cfg
        self.kube = kube
        self.results: ResultStore = results or ResultStore(cfg)  # presigns; reads the runners' results
        self.clock = clock
        self.wall = wall
        self.bucket = admission.TokenBucket(20.0, 20, clock=clock)
        self.tracked: dict[str, Tracked] = {}  # by ParseJob uid
        self.last_positions_publish = 0.0
        self.freed_slots: deque[float] = deque(maxlen=10000)
        self.changed = asyncio.Event()
        self.last_tick = 0.0
        self._tick_started = 0.0
        self._gauges_set = float("-inf")
        self.active = False  # while the scheduler daemon runs here (this replica leads)
        self._sem = asyncio.Semaphore(WRITE_CONCURRENCY)
        self._listings: dict[str, tuple[float, set[str]]] = {}  # result objects per namespace (batches)

    # --- plumbing -------------------------------------------------------------------

    def track(self, uid: str) -> Tracked:
        """The record to write to (created on first use)."""
        return self.tracked.setdefault(uid, Tracked())

    def recall(self, uid: str) -> Tracked:
        """The record to read (an empty one if there is none: reading creates nothing)."""
        return self.tracked.get(uid) or Tracked()

    def kick(self) -> None:
        self.changed.set()

    async def wait(self, timeout: float, min_gap: float = MIN_TICK_GAP_SECONDS) -> None:
        """Until something changed (or `timeout`), but not sooner than `min_gap` after the
        last tick: a burst of watch events becomes one tick, not hundreds."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        gap = min_gap - (self.clock() - self._tick_started)
        if gap > 0:
            await asyncio.sleep(gap)
        self.changed.clear()

    def snapshot(self, pj_index: Mapping, job_index: Mapping, pod_index: Mapping) -> Snapshot:
        parsejobs = []
        live_uids = set()
        for _, store in list(pj_index.items()):
            for body in store:
                uid = _uid(body)
                live_uids.add(uid)
                mine = self.tracked.get(uid)
                if mine is not None and mine.overlay is not None:
                    if _seq(mine.overlay) > _seq(body):
                        body = {**body, "status": mine.overlay["status"]}
                    else:
                        mine.overlay = None
                parsejobs.append(body)
        for uid in self.tracked.keys() - live_uids:
            del self.tracked[uid]
        # A Job counts only if its controller ownerReference names the ParseJob whose
        # uid its labels claim (the index key): labels alone are anyone's to set.
        # A batch member back in the queue may be found under its uid in two Jobs, the
        # ended one and its new one: the one its status names (or, waiting, the live one).
        named = {_uid(b): (b.get("status") or {}).get("jobName") for b in parsejobs}
        jobs: dict[tuple[str, str], dict[str, Any]] = {}
        for key, store in list(job_index.items()):
            for view in store:
                if view.get("owner") != key[1] and key[1] not in view.get("members", ()):
                    continue
                if key in jobs and not _better(view, jobs[key], named.get(key[1])):
                    continue
                jobs[key] = view
        pods = {key: list(store) for key, store in list(pod_index.items())}
        return Snapshot(parsejobs, jobs, pods)

    async def _bounded(self, coros: Iterable) -> list:
        async def run(c):
            async with self._sem:
                try:
                    return await c
                except (Conflict, NotFound) as exc:
                    log.debug("write skipped: %s", exc)
                except Exception:  # noqa: BLE001 - next tick retries, level-based
                    log.exception("write failed")
                return None

        return await asyncio.gather(*(run(c) for c in coros))

    async def _write_status(self, body: Mapping[str, Any], new_status: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        await self.kube.replace_status(meta["namespace"], meta["name"], new_status, _seq(body))
        written = {**body, "status": dict(new_status)}
        self.track(_uid(body)).overlay = written
        return written

    # --- the daemon's loop ------------------------------------------------------------

    async def run(self, stopped: Any, runtime: Callable[[], RuntimeConfig], pj_index: Mapping,
                  job_index: Mapping, pod_index: Mapping, logger: logging.Logger | logging.LoggerAdapter = log) -> None:
        """Tick on every index change (at least every `tick_seconds`) until `stopped` (a
        kopf.DaemonStopped); `runtime()` re-reads the ConfigMap's settings each time."""
        self.active = True
        metrics.ACTIVE.set(1)
        logger.info("scheduler active")
        try:
            while not stopped:
                try:
                    await self.tick(runtime(), pj_index, job_index, pod_index)
                except Exception:  # noqa: BLE001 - level-based: the next tick tries again
                    logger.exception("scheduling tick failed")
                    await asyncio.sleep(1)
                await self.wait(self.cfg.tick_seconds)
        finally:
            self.active = False
            metrics.ACTIVE.set(0)

    def health(self) -> dict[str, Any]:
        """For the liveness probe: raises Stuck when the active scheduler stopped ticking."""
        age = self.wall() - self.last_tick if self.last_tick else None
        if self.active and age is not None and age > STUCK_TICK_SECONDS:
            raise Stuck(f"scheduler has not ticked for {age:.0f}s")
        return {"active": self.active, "lastTickAgeSeconds": age}

    # --- the tick -------------------------------------------------------------------

    async def tick(self, runtime: RuntimeConfig, pj_index: Mapping, job_index: Mapping, pod_index: Mapping) -> None:
        started = self._tick_started = self.clock()
        self.bucket.configure(runtime.admissions_per_second, runtime.admission_burst)
        snap = self.snapshot(pj_index, job_index, pod_index)
        waiting = [b for b in snap.parsejobs if (st.phase_of(b) in (None, st.QUEUED)) and not _deleting(b)]
        running = [b for b in snap.parsejobs if st.phase_of(b) == st.RUNNING and not _deleting(b)]
        observed = await self.observe_running(running, snap)
        finishing = {_uid(b) for b, o in observed if isinstance(o, (Outcome, Requeue))}
        if waiting:
            now = self.clock()
            self.freed_slots.extend(now for _ in finishing)
        running = [b for b in running if _uid(b) not in finishing]
        # A finished Job no longer holds its slot: record the outcomes, then fill the slots.
        # Not at the same time: a new Running status written before a finishing one would
        # show more than maxConcurrent ParseJobs Running for a moment.
        await self.follow_running(observed)
        admitted = await self.admit(waiting, running, snap, runtime)
        waiting = [b for b in waiting if _uid(b) not in admitted]
        await self.publish_queue(waiting, running, snap, runtime)
        if started - self._gauges_set >= GAUGES_EVERY_SECONDS:  # not every tick: O(ParseJobs)
            self._gauges_set = started
            metrics.count_parsejobs(snap.parsejobs)
        self.last_tick = self.wall()
        metrics.TICK_SECONDS.observe(self.clock() - started)

    # --- admission ------------------------------------------------------------------

    def running_per_tenant(self, running: list[dict[str, Any]], waiting: list[dict[str, Any]],
                           snap: Snapshot) -> Counter:
        counts: Counter = Counter(tenant_of(b) for b in running)
        # A waiting ParseJob whose Job already runs (the operator stopped between creating
        # the Job and recording Running) occupies a slot all the same.
        for b in waiting:
            job = snap.jobs.get((b["metadata"]["namespace"], _uid(b)))
            if job and not any(c.get("status") == "True" for t, c in job["conditions"].items()
                               if t in ("Complete", "Failed")):
                counts[tenant_of(b)] += 1
        return counts

    @staticmethod
    def order(waiting: list[dict[str, Any]], per_tenant: Counter, runtime: RuntimeConfig,
              batching: Iterable[tuple[str, str]] = ()) -> list:
        """The queue (queue_policy), deep tenants taking their turns a batch at a time."""
        entries = [queue_policy.entry_of(b) for b in waiting]
        return queue_policy.order(entries, per_tenant, batches.turn_sizes(entries, runtime, set(batching)))

    async def admit(self, waiting: list[dict[str, Any]], running: list[dict[str, Any]], snap: Snapshot,
                    runtime: RuntimeConfig) -> set[str]:
        if not waiting:
            return set()
        # A waiting ParseJob whose Job exists already (the operator stopped between
        # creating the Job and recording Running) is adopted as Running, no admission.
        orphans = [b for b in waiting if _adoptable(snap.jobs.get((b["metadata"]["namespace"], _uid(b))))]
        adopted = {uid for uid in await self._bounded(
            self._admit_one(b, adopted=snap.jobs[(b["metadata"]["namespace"], _uid(b))]) for b in orphans)
            if isinstance(uid, str)}
        running = running + [b for b in orphans if _uid(b) in adopted]
        waiting = [b for b in waiting if _uid(b) not in adopted]
        per_tenant = self.running_per_tenant(running, waiting, snap)
        by_uid = {_uid(b): b for b in waiting}
        batching = batches.batching(running, tenant_of)
        pods = (p for views in snap.pods.values() for p in views)
        guard_tripped = admission.capacity_guard_tripped(admission.unschedulable(pods), runtime, self.wall())
        metrics.CAPACITY_GUARD.set(1 if guard_tripped else 0)
        if admission.every_slot_taken(per_tenant, runtime) and not guard_tripped:
            # most ticks at a deep backlog: the queue's order (a sort of 1000s) cannot matter
            ordered, decision = [], admission.Decision(blocked="concurrency")
        else:
            ordered = self.order(waiting, per_tenant, runtime, batching)
            decision = admission.decide(ordered, per_tenant, runtime, self.bucket, guard_tripped)
        if decision.blocked == "rate":
            metrics.RATE_LIMITED.inc()
            # wake up when the next token is due rather than at the next idle tick
            delay = self.bucket.seconds_until_token()
            if delay != float("inf"):
                asyncio.get_running_loop().call_later(delay, self.kick)
        if decision.blocked and not decision.admit:
            metrics.ADMISSION_BLOCKED.labels(reason=decision.blocked).inc()
        # Stamp startedAt at the decision, in admission order (a microsecond apart), not
        # when each concurrent Job create returns: status then shows the queue's order.
        decided = self.wall()
        at = {e.uid: st.now_rfc3339(decided + i * 1e-6) for i, e in enumerate(decision.admit)}
        groups, held = batches.plan(decision.admit, by_uid, ordered, bool(running), runtime, batching)
        self.bucket.refund(len(held))  # not started: their admissions are not spent
        results = await self._bounded(
            self._admit_one(by_uid[g[0].uid], at=at[g[0].uid]) if len(g) == 1 else
            self._admit_batch([by_uid[e.uid] for e in g], [at[e.uid] for e in g]) for g in groups)
        flat = [u for r in results for u in (r if isinstance(r, list) else [r])]
        return adopted | {uid for uid in flat if isinstance(uid, str)}

    async def _admit_one(self, body: Mapping[str, Any], adopted: Mapping[str, Any] | None = None,
                         at: str | None = None) -> str | None:
        """Create the ParseJob's Job and mark it Running; `adopted`: its Job (a view)
        exists already, only the status is missing."""
        meta = body["metadata"]
        if adopted is not None:
            return await self._mark_running(body, adopted["name"], at, len(adopted.get("members") or ()) or 1,
                                            adopted=True)
        if not await self._tenant_bound(body):
            return None
        job = build_job(body, self.cfg, self.results.urls(body))
        name = job["metadata"]["name"]
        if not await self.kube.create_job(job) and await self.kube.job_owner(meta["namespace"], name) \
                not in (meta["uid"], None):  # it exists: ours (a retry) is fine, an impostor is not
            await self._finish(body, Outcome(st.FAILED, "JobNameTaken",
                                             f"a Job named {name} exists and is not this ParseJob's"))
            return None
        return await self._mark_running(body, name, at)

    async def _admit_batch(self, bodies: list[Mapping[str, Any]], ats: list[str]) -> list[str | None]:
        """One Job for several ParseJobs (batches.py), then each marked Running."""
        bound = [await self._tenant_bound(b) for b in bodies]
        members = [(b, at) for b, at, ok in zip(bodies, ats, bound) if ok]
        if len(members) < 2:
            return [await self._admit_one(b, at=at) for b, at in members]
        job = build_batch_job([b for b, _ in members], self.cfg, {_uid(b): self.results.urls(b) for b, _ in members})
        await self.kube.create_job(job)  # False: a retry (its name is a hash of the members' uids)
        metrics.BATCHES.inc()
        metrics.BATCH_MEMBERS.inc(len(members))
        name = job["metadata"]["name"]
        return list(await asyncio.gather(*(self._mark_running(b, name, at, len(members)) for b, at in members)))

    async def _tenant_bound(self, body: Mapping[str, Any]) -> bool:
        """The namespace's tenant binding (chart templates/tenant-binding.yaml), checked
        again: False (and the ParseJob Failed) when it may not run there."""
        why = admission.tenant_mismatch(body, await self.kube.namespace_labels(body["metadata"]["namespace"]))
        if why:
            await self._finish(body, Outcome(st.FAILED, "TenantMismatch", why))
        return not why

    async def _mark_running(self, body: Mapping[str, Any], name: str, at: str | None, batch_size: int = 1,
                            adopted: bool = False) -> str:
        meta = body["metadata"]
        if not adopted:
            self.track(meta["uid"]).job_created = self.clock()
        base = body if st.phase_of(body) else st.merged(body, st.queued(body))
        new_status = st.merged(base, st.running(base, name, at, batch_size))["status"]
        written = await self._write_status(body, new_status)
        if not adopted:
            if self.freed_slots:
                metrics.ADMISSION_LATENCY.observe(max(0.0, self.clock() - self.freed_slots.popleft()))
            metrics.ADMITTED.labels(priority=priority_of(body)).inc()
            created = epoch_of(meta.get("creationTimestamp"))
            if created is not None:
                metrics.QUEUE_WAIT.observe(max(0.0, self.wall() - created))
        self.track(meta["uid"]).position = None
        self.kube.emit(written, "Normal", "Admitted", f"Job {name} {'adopted' if adopted else 'created'}"
                       + (f" (a batch of {batch_size})" if batch_size > 1 else ""))
        return meta["uid"]

    # --- queue status ---------------------------------------------------------------

    async def publish_queue(self, waiting: list[dict[str, Any]], running: list[dict[str, Any]],
                            snap: Snapshot, runtime: RuntimeConfig) -> None:
        now = self.clock()
        refresh = now - self.last_positions_publish >= runtime.queue_position_interval_seconds
        if not waiting or not (refresh or any(not st.phase_of(b) for b in waiting)):
            return  # nothing to write: most ticks at a deep backlog (ordering 1000s is not free)
        per_tenant = self.running_per_tenant(running, waiting, snap)
        ordered = self.order(waiting, per_tenant, runtime, batches.batching(running, tenant_of))
        position = {e.uid: i + 1 for i, e in enumerate(ordered)}
        by_uid = {_uid(b): b for b in waiting}
        fresh = [by_uid[e.uid] for e in ordered if not st.phase_of(by_uid[e.uid])][:MARK_QUEUED_PER_TICK]
        writes = [self._mark_queued(b, position[_uid(b)]) for b in fresh]
        if refresh:
            self.last_positions_publish = now
            budget = runtime.queue_position_max_writes
            for e in ordered:
                if budget <= 0:
                    break
                b = by_uid[e.uid]
                if not st.phase_of(b):
                    continue
                mine = self.recall(e.uid).position
                current = mine if mine is not None else (b.get("status") or {}).get("queuePosition")
                if current != position[e.uid]:
                    writes.append(self._set_position(b, position[e.uid]))
                    budget -= 1
        await self._bounded(writes)

    async def _mark_queued(self, body: Mapping[str, Any], position: int) -> None:
        new_status = st.merged(body, st.queued(body))["status"]
        new_status["queuePosition"] = position
        await self._write_status(body, new_status)
        self.track(_uid(body)).position = position

    async def _set_position(self, body: Mapping[str, Any], position: int) -> None:
        meta = body["metadata"]
        await self.kube.set_status_field(meta["namespace"], meta["name"], _seq(body), "queuePosition", position)
        self.track(meta["uid"]).position = position

    # --- cancellation ---------------------------------------------------------------

    async def cancel(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Stop the Job of a ParseJob deleted before it finished and record Cancelled; the
        body as it ends (unchanged if it had finished). Raises Conflict when the status
        moved on meanwhile: the caller re-reads and tries again."""
        if st.phase_of(body) in st.FINAL_PHASES:
            return dict(body)
        meta, status = body["metadata"], body.get("status") or {}
        if int(status.get("batchSize") or 1) == 1:  # a batch Job goes on for its other members
            await self.kube.delete_job(meta["namespace"], status.get("jobName") or job_name(meta["name"], meta["uid"]))
        base = body if st.phase_of(body) else st.merged(body, st.queued(body))
        final = st.merged(base, st.cancelled(base))
        try:
            await self.kube.replace_status(meta["namespace"], meta["name"], final["status"], _seq(body))
        except NotFound:
            pass
        self.kube.emit(final, "Normal", "Cancelled", "deleted before it finished; its Job is stopped")
        metrics.COMPLETED.labels(kind="unknown", outcome=st.CANCELLED, reason="Cancelled").inc()
        return final
