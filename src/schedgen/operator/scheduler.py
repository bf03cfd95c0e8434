"""The scheduler: one tick, three pieces, run by the `scheduler` daemon of the active
replica whenever an index changes (or every `SCHEDGEN_TICK_SECONDS`).

    1. the Job reconciler (job_reconciler.py) decides the Running ParseJobs whose run
       ended, and the status writer (status_writer.py) records those decisions;
    2. the queue manager (queue_manager.py, pure) says what starts now; its runner Jobs
       are created (runner_jobs.py) and the ParseJobs marked Running;
    3. the queue summary is published (one object, at most every few seconds).

Level-based: each tick reads the kopf indexes (with the status writer's overlay of its
own writes), decides from them alone, and writes only what differs. Pipelined: the
writes a tick decides run as tasks after it returns, and the next tick decides around
them (in_flight.py: a start in flight holds its slot, an end in flight is not decided
again); at a deep backlog each write is a round trip to a busy apiserver, and a tick
that waited for them was admission's delay for every slot freed meanwhile. Ends before
starts, in the statuses: a Running status written before a finishing one would show
more than maxConcurrent ParseJobs Running for a moment, so a start's Running writes
wait for the ends in flight when it was decided (its Secret and Job need not).
`cancel` is the other way out (the finalizer).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Callable, Mapping

from schedgen import queue_summary
from schedgen.parsejob import ANN_SIGNATURE, FAILED, ParseJob

from . import admission, metrics, queue_manager
from .config import OperatorConfig, RuntimeConfig
from .in_flight import InFlight
from .job_reconciler import JobReconciler, Snapshot
from .runner_objects import RunnerJob, RunnerPod
from .signing import Signer
from .kube import Kube
from .outcome import Outcome, Requeue
from .record_store import RecordStore
from .result_store import ResultStore
from .runner_jobs import BATCH, SINGLE, kind_for, kind_of
from .status import now_rfc3339
from .status_writer import Bounded, StatusWriter

log = logging.getLogger(__name__)

MIN_TICK_GAP_SECONDS = 0.1
# A tick reads every ParseJob (O(ParseJobs) of the event loop's time); the next one waits
# this many times the loop's CPU time the last one spanned, so that ticks -- which no
# longer wait for their writes -- take at most about a sixth of the loop and leave the
# rest to the writes, watches and reads they started (2 cores, 15,000 ParseJobs).
TICK_GAP_PER_CPU_SECOND = 5.0
STUCK_TICK_SECONDS = 60.0
GAUGES_EVERY_SECONDS = 1.0
STOPPED_JOB_MEMORY_SECONDS = 600.0  # how long a stopped pod's Job is remembered once the Job is gone
NAME_TAKEN_TICKS = 5  # creates refused for a taken name before a ParseJob fails JobNameTaken


class Stuck(Exception):
    """The active scheduler has not ticked for too long (the liveness probe fails)."""


class Scheduler:
    def __init__(self, cfg: OperatorConfig, kube: Kube, results: ResultStore, records: RecordStore | None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 signer: Signer | None = None):
        self.cfg, self.kube, self.results = cfg, kube, results
        self.clock, self.wall = clock, wall
        self.bucket = admission.TokenBucket(20.0, 20, clock=clock)
        self.writer = StatusWriter(kube, clock, wall)
        self.signer = signer or Signer.from_env()
        self._name_taken: dict[tuple[str, str], int] = {}  # (namespace, Job name) -> refused creates
        self.starts = Bounded()  # not the writer's: a start waits for the writer's writes
        self.in_flight = InFlight(on_failed=self.kick)
        self.reconciler = JobReconciler(kube, results, records, cfg.default_bucket, clock, wall,
                                        on_ready=self.kick, image_pull_grace=cfg.image_pull_grace_seconds)
        self.changed = asyncio.Event()
        self.last_tick = 0.0
        self.last_positions_publish = float("-inf")
        self.published: dict[str, str] | None = None  # the queue summary last written
        self.active = False  # while the scheduler daemon runs here (this replica leads)
        self._tick_started = 0.0
        self._tick_ended = 0.0
        self._tick_cpu = 0.0  # the event loop thread's CPU seconds over the last tick
        self._gauges_set = float("-inf")
        # Jobs (uid) a pod of which was stopped from outside, with when it was seen: a pod
        # deleted under a batch may be gone from the index before its Job's end is decided
        self.stopped_jobs: dict[str, float] = {}

    # --- the daemon's loop --------------------------------------------------------------

    def kick(self) -> None:
        self.changed.set()

    def kick_at(self, delay: float) -> None:
        """Tick again in `delay` seconds (a token due, a retry's delay over)."""
        if 0 < delay != float("inf"):
            asyncio.get_running_loop().call_later(delay, self.kick)

    async def wait(self, timeout: float, min_gap: float = MIN_TICK_GAP_SECONDS) -> None:
        """Until something changed (or `timeout`), but not sooner than `min_gap` after the
        last tick started, nor than TICK_GAP_PER_CPU_SECOND times its CPU after it ended: a
        burst of watch events becomes one tick, not hundreds, and a busy loop ticks less."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        gap = max(self._tick_started + min_gap, self._tick_ended + TICK_GAP_PER_CPU_SECOND * self._tick_cpu) - self.clock()
        if gap > 0:
            await asyncio.sleep(gap)
        self.changed.clear()

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
                    await self.tick(runtime(), self.snapshot(pj_index, job_index, pod_index))
                except Exception:  # noqa: BLE001 - level-based: the next tick tries again
                    logger.exception("scheduling tick failed")
                    await asyncio.sleep(1)
                await self.wait(self.cfg.tick_seconds)
        finally:
            await self.settle()
            self.active = False
            metrics.ACTIVE.set(0)

    def health(self) -> dict[str, Any]:
        """For the liveness probe: raises Stuck when the active scheduler stopped ticking."""
        age = self.wall() - self.last_tick if self.last_tick else None
        if self.active and age is not None and age > STUCK_TICK_SECONDS:
            raise Stuck(f"scheduler has not ticked for {age:.0f}s")
        return {"active": self.active, "lastTickAgeSeconds": age}

    def note_pod(self, pod: RunnerPod) -> None:
        """Every runner pod event (the pod index): remember a Job whose pod was stopped from
        outside (RunnerPod.stopped) after the pod is gone."""
        if pod.stopped and pod.owner and pod.owner not in self.stopped_jobs:
            self.stopped_jobs[pod.owner] = self.wall()

    def snapshot(self, pj_index: Mapping, job_index: Mapping, pod_index: Mapping) -> Snapshot:
        """The indexes as plain lists (they may change while a tick awaits), with our own
        writes on top."""
        parsejobs = [self.writer.current(pj) for _, store in list(pj_index.items()) for pj in store]
        uids = {pj.uid for pj in parsejobs}
        self.writer.forget_except(uids)
        self.reconciler.forget_except(uids)
        self.in_flight.forget_except(uids)
        jobs = {key: list(store) for key, store in list(job_index.items())}
        pods = {key: list(store) for key, store in list(pod_index.items())}
        if self.stopped_jobs:
            live = {job.uid for store in jobs.values() for job in store}
            cutoff = self.wall() - STOPPED_JOB_MEMORY_SECONDS
            for uid, seen in list(self.stopped_jobs.items()):
                if uid not in live and seen < cutoff:
                    del self.stopped_jobs[uid]
            jobs = {key: [dataclasses.replace(job, disrupted=True) if job.uid in self.stopped_jobs else job
                          for job in store] for key, store in jobs.items()}
        return Snapshot(parsejobs, jobs, pods)

    # --- the tick -----------------------------------------------------------------------

    async def tick(self, runtime: RuntimeConfig, snap: Snapshot) -> None:
        """Decide from `snap` and start the writes; returns before they are done (`settle`)."""
        started = self._tick_started = self.clock()
        cpu = time.thread_time()
        self.bucket.configure(runtime.admissions_per_second, runtime.admission_burst)
        view = self.in_flight.sort(pj for pj in snap.parsejobs if not pj.deleting)  # before any await
        waiting = [pj for pj in view.settled if pj.status.waiting]
        running = [pj for pj in view.settled if pj.phase == "Running"]
        lap = self._lap(started)
        decided = await self.reconciler.observe(running, snap, runtime.retry_backoff_seconds)
        lap("observe")
        ended = {pj.uid for pj, _ in decided}
        if waiting:
            self.writer.freed_slots.extend(self.clock() for _ in ended)
        if decided:
            at = now_rfc3339(self.wall())  # before any startedAt of this tick's admissions
            self.in_flight.ending((pj for pj, _ in decided), self.writer.bounded(
                self.writer.finished(pj, d, at) if isinstance(d, Outcome) else self._requeue(pj, d, at)
                for pj, d in decided))
        running = [pj for pj in running if pj.uid not in ended] + view.starting
        recent = (queue_manager.recent_starts(snap.parsejobs, self.wall())  # the snapshot's finished,
                  + Counter(pj.tenant for pj in view.ending)  # those ending,
                  + Counter(pj.tenant for pj, _ in decided)) if waiting else Counter()  # and those just ended
        admitted = await self.admit(waiting, running, snap, runtime, recent, unplaced=view.starting_groups)
        lap("admit")
        await self.publish_queue([pj for pj in waiting if pj.uid not in admitted],
                                 running + [pj for pj in waiting if pj.uid in admitted], runtime, recent)
        lap("publish")
        if started - self._gauges_set >= GAUGES_EVERY_SECONDS:  # not every tick: O(ParseJobs)
            self._gauges_set = started
            metrics.count_parsejobs(snap.parsejobs)
        self.last_tick = self.wall()
        self._tick_ended = self.clock()
        self._tick_cpu = time.thread_time() - cpu
        metrics.TICK_SECONDS.observe(self._tick_ended - started)

    async def settle(self) -> None:
        """Until the writes of the ticks so far are done."""
        await self.in_flight.settle()

    def _lap(self, since: float) -> Callable[[str], None]:
        """Observe the time since the last lap under `phase` (TICK_PHASE_SECONDS)."""
        last = [since]

        def lap(phase: str) -> None:
            now = self.clock()
            metrics.TICK_PHASE_SECONDS.labels(phase=phase).observe(now - last[0])
            last[0] = now
        return lap

    async def _requeue(self, pj: ParseJob, requeue: Requeue, at: str | None = None) -> str:
        # This run's failure document must go first: the next run writes the same key,
        # and a stale one would decide that run before it even starts.
        await self.results.discard(pj)
        uid = await self.writer.requeued(pj, requeue, at)
        self.kick_at(requeue.delay)
        return uid

    # --- admission ----------------------------------------------------------------------

    async def admit(self, waiting: list[ParseJob], running: list[ParseJob], snap: Snapshot,
                    runtime: RuntimeConfig, recent: Counter | None = None, unplaced: int = 0) -> set[str]:
        """Decide what starts (the queue manager) and start it (in flight); the uids
        admitted (`running`: with those starting, as Running; `recent`: the tenants'
        recently started, finished ParseJobs, queue_manager.recent_starts; `unplaced`: the
        runner Jobs on their way, not yet on a node). Every Running write waits for the
        end writes in flight now."""
        if not waiting:
            return set()
        after = self.in_flight.ends_landed()
        adopted, replaced = await self.clear_orphans(waiting, running, snap, after)
        running = running + adopted
        waiting = [pj for pj in waiting if pj.uid not in replaced and pj not in adopted]
        guard = admission.capacity_guard_tripped(admission.unschedulable_since(snap.all_pods()), runtime,
                                                 self.wall())
        room = admission.pod_room(self._unplaced(running, snap) + unplaced, len(waiting), runtime)
        plan = queue_manager.plan(waiting, running, runtime, self.bucket.available(), guard, self.wall(), room,
                                  recent=recent)
        metrics.CAPACITY_GUARD.set(1 if guard or plan.blocked == "capacity" else 0)
        self.bucket.take(plan.started)
        self._note_blocked(plan, waiting)
        decided = self.wall()  # startedAt in admission order, a microsecond apart
        at = {pj.uid: now_rfc3339(decided + i * 1e-6)
              for i, pj in enumerate(pj for group in plan.groups for pj in group)}
        if plan.groups:
            self.in_flight.starting(plan.groups, at, self.starts(self._start(group, at, after)
                                                                 for group in plan.groups))
        return {pj.uid for pj in adopted} | set(at)

    async def clear_orphans(self, waiting: list[ParseJob], running: list[ParseJob], snap: Snapshot,
                            after: Awaitable | None = None) -> tuple[list[ParseJob], set[str]]:
        """Live Jobs no Running ParseJob records: the operator stopped between creating one
        and recording Running (its signature proves it: signing.py), or someone else made
        it. The operator's own are adopted (Running, their uid recorded: no run twice); any
        other is deleted, and a ParseJob whose next Job would have its name moves on to a
        new transitionSeq (JobReplaced). (ParseJobs adopted, uids replaced.)"""
        in_use = {(pj.namespace, pj.status.job_name) for pj in running}
        stale: dict[tuple[str, str], RunnerJob] = {}
        adopt: dict[str, tuple[ParseJob, RunnerJob]] = {}
        replaced: dict[str, ParseJob] = {}
        for pj in waiting:
            for job in snap.orphans_of(pj):
                if (pj.namespace, job.name) in in_use:
                    continue
                if kind_of(job).made_for(pj, job) and self._signed(pj, job):
                    adopt[pj.uid] = (pj, job)
                    continue
                stale[(pj.namespace, job.name)] = job
                if kind_of(job).made_for(pj, job):
                    replaced[pj.uid] = pj
        if adopt and after is not None:
            await after
        adopted = [pj for pj, _ in adopt.values() if pj.uid in set(await self.writer.bounded(
            self.writer.running(pj, job.name, job.uid, None, len(job.members) or 1) for pj, job in adopt.values()))]
        if stale:
            log.warning("deleting %d runner Jobs no Running ParseJob records: %s", len(stale),
                        ", ".join(f"{ns}/{name}" for ns, name in sorted(stale))[:500])
            await self.writer.bounded(self.kube.delete_job(ns, name) for ns, name in stale)
            metrics.ORPHAN_JOBS_DELETED.inc(len(stale))
            await self.writer.bounded(self.writer.requeued(pj, Requeue(
                "JobReplaced", "a Job of this name existed before admission; it was deleted", counted=False))
                for pj in replaced.values())
        return adopted, set(replaced)

    def _signed(self, pj: ParseJob, job: RunnerJob) -> bool:
        runs = job.member_seqs.items() if job.is_batch else [(pj.uid, pj.status.seq)]
        return self.signer.valid(job.signature, pj.namespace, job.name, runs)

    @staticmethod
    def _unplaced(running: list[ParseJob], snap: Snapshot) -> int:
        """Runner Jobs of Running ParseJobs not yet on a node (no pod, or a Pending one
        without a node): the demand a cluster autoscaler sees, and provisions for."""
        jobs = {(pj.namespace, job.name): job for pj in running if (job := snap.job_of(pj)) and not job.ended}
        return sum(1 for (ns, _), job in jobs.items() if not any(p.node for p in snap.pods_of(ns, job)))

    def _note_blocked(self, plan: queue_manager.Plan, waiting: list[ParseJob]) -> None:
        if plan.blocked == "rate":
            metrics.RATE_LIMITED.inc()
            self.kick_at(self.bucket.seconds_until_token())  # not the next idle tick
        if plan.blocked and not plan.groups:
            metrics.ADMISSION_BLOCKED.labels(reason=plan.blocked).inc()
        now = self.wall()
        later = [d for d in (queue_manager.retry_wait(pj, now) for pj in waiting) if d > 0]
        if later:
            self.kick_at(min(later))

    async def _start(self, group: list[ParseJob], at: Mapping[str, str], after: Awaitable | None = None
                     ) -> list[str]:
        """Create one runner Job for `group`, then (once `after` is done: the ended runs'
        statuses) mark its ParseJobs Running."""
        group = [pj for pj in group if await self._may_run(pj)]
        if not group:
            return []
        kind = SINGLE if len(group) == 1 else BATCH
        urls = {pj.uid: self.results.urls(pj) for pj in group}
        job = kind.build(group, self.cfg, urls)
        name = job["metadata"]["name"]
        job["metadata"].setdefault("annotations", {})[ANN_SIGNATURE] = self.signer.sign(
            group[0].namespace, name, [(pj.uid, pj.status.seq) for pj in group])
        await self.kube.put_secret(kind.secret(group, self.cfg, urls))  # its runs, before its pods start
        uid = await self.kube.create_job(job)
        if uid is None:  # the name is taken: an orphan this replica's watch has not seen yet
            # (a leader made it just before it stopped), adopted or deleted by clear_orphans
            # once seen; the ParseJobs wait. Still taken after a few ticks: someone else's.
            seen = self._name_taken[(group[0].namespace, name)] = self._name_taken.get((group[0].namespace, name), 0) + 1
            if seen >= NAME_TAKEN_TICKS:
                await self.writer.bounded(self.writer.finished(pj, Outcome(
                    FAILED, "JobNameTaken", f"a Job named {name} exists and is not this ParseJob's")) for pj in group)
            return []
        self._name_taken.pop((group[0].namespace, name), None)
        if kind is BATCH:
            metrics.BATCHES.inc()
            metrics.BATCH_MEMBERS.inc(len(group))
        if after is not None:
            await after
        # a member not marked (None: Bounded logged why) is an orphan's: clear_orphans adopts it
        marked = await self.writer.bounded(self.writer.running(pj, name, uid, at[pj.uid], len(group)) for pj in group)
        return [uid for uid in marked if uid]

    async def _may_run(self, pj: ParseJob) -> bool:
        """The admission policies' rules checked again (tenant binding, source, resources:
        admission.refusal), and no runner where its NetworkPolicy is missing (when
        SCHEDGEN_RUNNER_NETWORK_POLICY names it): False, and the ParseJob Failed, when it
        may not run."""
        refused = admission.refusal(pj, self.cfg, await self.kube.namespace_labels(pj.namespace))
        policy = self.cfg.runner_network_policy
        if not refused and policy and not await self.kube.network_policy_exists(pj.namespace, policy):
            refused = ("NoNetworkPolicy", f"namespace {pj.namespace} has no NetworkPolicy {policy} for runner "
                                          "pods: no runner runs there without one (docs/deploy.md)")
        if refused:
            await self.writer.finished(pj, Outcome(FAILED, *refused, code=refused[0]))
        return not refused

    # --- queue status -------------------------------------------------------------------

    async def publish_queue(self, waiting: list[ParseJob], running: list[ParseJob], runtime: RuntimeConfig,
                            recent: Counter | None = None) -> None:
        """The queue summary (schedgen.queue_summary), at most every
        `queuePositionIntervalSeconds` and only when it changed: one write, whatever the
        backlog. A waiting ParseJob itself is never written (its phase is the CRD's
        default, Queued; its Queued transition is recorded with its Running one)."""
        now = self.clock()
        if now - self.last_positions_publish < runtime.queue_position_interval_seconds:
            return
        self.last_positions_publish = now
        data = queue_summary.summary_data(queue_manager.ordered(waiting, running, runtime, recent) if waiting else [],
                                          running, now_rfc3339(self.wall()))
        if queue_summary.same_queue(self.published, data):
            return
        try:
            await self.kube.patch_configmap(self.cfg.namespace, queue_summary.configmap_name(self.cfg.configmap), data)
            self.published = data
        except Exception as exc:  # noqa: BLE001 - the next interval tries again
            log.warning("could not publish the queue summary: %s", exc)

    # --- cancellation -------------------------------------------------------------------

    async def cancel(self, pj: ParseJob) -> ParseJob:
        """Stop the Job of a ParseJob deleted before it finished and record Cancelled; the
        ParseJob as it ends (unchanged if it had finished). Raises kube.Conflict when the
        status moved on meanwhile: the caller re-reads and tries again."""
        if pj.status.final:
            return pj
        name = kind_for(pj).job_to_stop(pj)
        if name:
            await self.kube.delete_job(pj.namespace, name)
        return await self.writer.cancelled(pj)
