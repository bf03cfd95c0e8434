"""The Job reconciler: what runner Jobs, their pods and the result objects say about the
Running ParseJobs (compare Kueue's pkg/controller/jobframework).

For each Running ParseJob it finds its Job (by ownerReference and the name its status
records, never by label), asks the Job's kind how the run ended (runner_jobs.py), reads
and records the result object when the run says it parsed, and returns the decisions
(outcome.conclude: Succeeded/Failed, or back to the queue). It writes no status: the
scheduler hands the decisions to the status writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Collection, Mapping

from schedgen.parsejob import FAILED, ParseJob

from . import metrics
from . import result_document as documents
from .backoff import Unavailable, report_unavailable
from .config import IMAGE_PULL_GRACE_SECONDS
from .kube import Kube
from .outcome import Outcome, Parsed, Requeue, RunFailed, conclude, invalid_result, short, succeeded
from .record_store import RecordStore
from .result_store import ResultStore
from .rows import row_of
from .runner_jobs import kind_for, kind_of
from .runner_objects import RunnerJob, RunnerPod, epoch_of

log = logging.getLogger(__name__)

JOB_LOST_GRACE_SECONDS = 15.0
POD_VIEW_GRACE_SECONDS = 5.0
DEADLINE_GRACE_SECONDS = 60.0
READ_CONCURRENCY = 16
READ_WAIT_SECONDS = 0.5

Decision = Outcome | Requeue


@dataclass
class Snapshot:
    """What the indexes say right now (ParseJobs with the status writer's overlay)."""

    parsejobs: list[ParseJob]
    jobs: Mapping[tuple[str, str], list[RunnerJob]] = field(default_factory=dict)  # (ns, ParseJob uid)
    pods: Mapping[tuple[str, str], list[RunnerPod]] = field(default_factory=dict)  # (ns, Job name)

    def job_of(self, pj: ParseJob) -> RunnerJob | None:
        """The Job of the ParseJob's run: the one its status records (name, and uid when
        recorded: a Job replaced under the same name is not this run's)."""
        for job in self.jobs.get((pj.namespace, pj.uid), ()):
            if job.name == pj.status.job_name and job.runs(pj.uid) and pj.status.job_uid in (None, job.uid):
                return job
        return None

    def orphans_of(self, pj: ParseJob) -> list[RunnerJob]:
        """Jobs of a waiting ParseJob no status records: made for it before the operator
        stopped short of recording Running, or by someone else. Live ones, and an ended one
        made for its run now (it ran while no operator watched: its name is the one the
        next Job would take). Ended Jobs of earlier runs are history, not orphans.
        The scheduler decides (signature) which are adopted and which go."""
        return [job for job in self.jobs.get((pj.namespace, pj.uid), ())
                if not job.ended or kind_of(job).made_for(pj, job)]

    def pods_of(self, namespace: str, job: RunnerJob) -> list[RunnerPod]:
        return [p for p in self.pods.get((namespace, job.name), ()) if p.owner == job.uid]

    def all_pods(self) -> list[RunnerPod]:
        return [p for pods in list(self.pods.values()) for p in pods]


class JobReconciler:
    """Decides ended runs. Reading a result object (S3) and recording its events
    (Postgres) run as tasks, a few at a time: the tick waits for them a moment
    (`READ_WAIT_SECONDS`, most finish within it) and never longer; one still going is
    collected by a later tick (its end kicks the scheduler), so a slow or absent store
    never holds admission up. With more reads going than run at once (a burst's ends),
    the tick does not wait at all: they queue behind each other, and it would wait out
    the whole moment every tick while admission could go on."""

    def __init__(self, kube: Kube, results: ResultStore, records: RecordStore | None, default_bucket: str,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 on_ready: Callable[[], None] = lambda: None, image_pull_grace: float = IMAGE_PULL_GRACE_SECONDS):
        self.kube, self.results, self.records = kube, results, records
        self.image_pull_grace = image_pull_grace
        self.default_bucket = default_bucket
        self.clock, self.wall, self.on_ready = clock, wall, on_ready
        self.finish_seen: dict[str, float] = {}  # by uid: clock() when its Job was first seen over
        self.stop_seen: dict[tuple[str, str], float] = {}  # (uid, Job uid): a batch's end, as finish_seen
        self.reads: dict[str, asyncio.Task] = {}  # by uid: a result being read and recorded
        self._sem = asyncio.Semaphore(READ_CONCURRENCY)

    def forget_except(self, uids: set[str]) -> None:
        for uid in self.finish_seen.keys() - uids:
            del self.finish_seen[uid]
        for key in [key for key in self.stop_seen if key[0] not in uids]:
            del self.stop_seen[key]
        for uid in self.reads.keys() - uids:
            self.reads.pop(uid).cancel()

    async def observe(self, running: list[ParseJob], snap: Snapshot, retry_base: float
                      ) -> list[tuple[ParseJob, Decision]]:
        """The decisions about Running ParseJobs whose run has ended."""
        namespaces = {pj.namespace for pj in running if (job := snap.job_of(pj)) is not None and job.is_batch}
        listings = await asyncio.gather(*(self.results.present(ns) for ns in namespaces))
        listed = dict(zip(namespaces, listings))
        decided: list[tuple[ParseJob, Decision]] = []
        started = []
        for pj in running:
            if pj.uid in self.reads:
                continue
            try:
                step = self._step(pj, snap, listed.get(pj.namespace, set()), retry_base)
            except Exception as exc:  # noqa: BLE001 - one ParseJob never stops the tick
                step = observation_failed(pj, exc)
            if isinstance(step, (Outcome, Requeue)):
                decided.append((pj, step))
            elif step is not None:
                started.append(self._start(pj, step))
        if started and len(self.reads) <= READ_CONCURRENCY:  # more queue behind each other: no wait
            await asyncio.wait(started, timeout=READ_WAIT_SECONDS)
        running_uids = {pj.uid for pj in running}
        for pj in running:
            task = self.reads.get(pj.uid)
            if task is not None and task.done():
                del self.reads[pj.uid]
                decision = _result_of(task, pj)
                if decision is not None:
                    decided.append((pj, decision))
        for uid in self.reads.keys() - running_uids:  # no longer Running (cancelled, decided)
            self.reads.pop(uid).cancel()
        return decided

    def _start(self, pj: ParseJob, read: Callable[[], Awaitable[Decision | None]]) -> asyncio.Task:
        async def bounded() -> Decision | None:
            async with self._sem:
                return await read()

        task = self.reads[pj.uid] = asyncio.create_task(bounded(), name=f"result-{pj.uid}")
        task.add_done_callback(lambda _: self.on_ready())
        return task

    def _step(self, pj: ParseJob, snap: Snapshot, listed: Collection[str], retry_base: float
              ) -> Decision | Callable[[], Awaitable[Decision | None]] | None:
        """A decision, a read to start (the result object decides), or None (goes on)."""
        job = snap.job_of(pj)
        if job is None:
            return lambda: self._without_job(pj, retry_base)
        if not job.ended and self._overdue(pj, job):
            return lambda: self._stop_overdue(pj, job)
        pods = snap.pods_of(pj.namespace, job)
        if not job.ended and (stuck := self._image_unavailable(pods)) is not None:
            return lambda: self._stop_image_unavailable(pj, stuck)
        end = kind_of(job).run_end(pj, job, pods, listed)
        if end is None or (kind_of(job).waits_for_pod_states and not job.disrupted and not self._pods_seen(pj, pods)):
            return None
        if isinstance(end, Parsed):
            return lambda: self._read(pj, retry_base, job=job, pods=pods)
        return conclude(pj, end, retry_base)

    def _overdue(self, pj: ParseJob, job: RunnerJob | None) -> bool:
        """The operator's own deadline: the run's deadline (its Job's, a batch's being the
        sum of its members') plus a grace. The Job controller's activeDeadlineSeconds
        ends a run first; this ends one whose Job never will (suspended, replaced, pods
        that never start), so no run holds its slot for ever."""
        started = epoch_of(pj.status.started_at)
        if started is None:
            return False
        deadline = (job.deadline_seconds if job is not None and job.deadline_seconds else None) or \
            pj.deadline_seconds * pj.status.batch_size
        return self.wall() - started > deadline + DEADLINE_GRACE_SECONDS

    async def _stop_overdue(self, pj: ParseJob, job: RunnerJob | None) -> Decision:
        name = pj.status.job_name
        if name:
            await self.kube.delete_job(pj.namespace, name)
        return conclude(pj, RunFailed("DeadlineExceeded", f"the run did not end within its deadline "
                                      f"({pj.deadline_seconds} s) and {DEADLINE_GRACE_SECONDS:.0f} s more: "
                                      f"Job {name} stopped by the operator"))

    def _image_unavailable(self, pods: list[RunnerPod]) -> RunnerPod | None:
        """A pod whose runner image the kubelet has not got for `image_pull_grace` seconds
        (SCHEDGEN_IMAGE_PULL_GRACE_SECONDS; it retries meanwhile: a registry's hiccup passes)."""
        now = self.wall()
        for pod in pods:
            created = epoch_of(pod.created)
            if pod.image_unavailable and created is not None and now - created > self.image_pull_grace:
                return pod
        return None

    async def _stop_image_unavailable(self, pj: ParseJob, pod: RunnerPod) -> Decision:
        """Stop the Job and fail the run with the kubelet's words, not at the Job's
        deadline as DeadlineExceeded: the cause is the cluster's set-up (image, tag, pull
        Secret), which a retry does not mend (docs/troubleshooting.md)."""
        name = pj.status.job_name
        if name:
            await self.kube.delete_job(pj.namespace, name)
        reason, message = pod.waiting or ("", "")
        return conclude(pj, RunFailed("ImagePullFailed", short(
            f"the runner image could not be pulled for {self.image_pull_grace:.0f} s (pod {pod.name}"
            f"{' on ' + pod.node if pod.node else ''}: {reason}: {message}); check runner.image and "
            f"runner.imagePullSecrets"), code="RunnerImageUnavailable"))

    def _pods_seen(self, pj: ParseJob, pods: list[RunnerPod]) -> bool:
        """A Job over before its pods' final states came through the watch: wait for
        them a moment (they carry the runner's exit code and summary)."""
        if any(p.terminated for p in pods):
            return True
        seen = self.finish_seen.setdefault(pj.uid, self.clock())
        return self.clock() - seen >= POD_VIEW_GRACE_SECONDS

    def _stop_seen(self, pj: ParseJob, job: RunnerJob) -> bool:
        """A batch member's transient failure once its Job ended: wait a moment for the pod
        events that tell whether the pod was stopped from outside (they may trail the Job's)."""
        seen = self.stop_seen.setdefault((pj.uid, job.uid), self.clock())
        return self.clock() - seen >= POD_VIEW_GRACE_SECONDS

    async def _without_job(self, pj: ParseJob, retry_base: float) -> Decision | None:
        """Its Job is not in the index: lagging (a moment), or gone. Gone, the result
        object still tells a finished parse; a batch member without one goes back."""
        started = epoch_of(pj.status.started_at)
        if started is not None and self.wall() - started < JOB_LOST_GRACE_SECONDS:
            return None
        name = pj.status.job_name or ""
        uid = await self.kube.job_uid(pj.namespace, name) if name else None
        if uid is not None and pj.status.job_uid in (None, uid):  # it exists: the index is lagging
            return await self._stop_overdue(pj, None) if self._overdue(pj, None) else None
        return await self._read(pj, retry_base, lost=f"Job {name} disappeared before it finished")
    async def _read(self, pj: ParseJob, retry_base: float, job: RunnerJob | None = None,
                    pods: list[RunnerPod] | None = None, lost: str | None = None) -> Decision | None:
        """The result object decides; None while S3 or Postgres are away (next tick)."""
        kind = kind_of(job) if job is not None else kind_for(pj)
        try:
            found = await self.results.fetch(pj)
        except documents.InvalidResult as exc:
            return conclude(pj, invalid_result(str(exc)))
        except Unavailable as exc:
            report_unavailable(exc, f"result of {pj.namespace}/{pj.name} not readable yet: ")
            return None
        if found is None:
            end = kind.without_result(pj, job, lost)
            return conclude(pj, end, retry_base) if end is not None else None
        if isinstance(found, documents.RunnerFailure):
            end = kind.failed(found.doc, pods or [], job)
            if end is not None and end.transient and end.counted and job is not None and job.is_batch \
                    and not self._stop_seen(pj, job):
                return None  # its Job ended: the pod's last state (stopped from outside?) a moment behind
            return conclude(pj, end, retry_base) if end is not None else None
        if self.records is not None:
            try:
                await self.records.write_result(row_of(pj, self.default_bucket), found)  # type: ignore[arg-type]
            except Unavailable as exc:
                report_unavailable(exc, f"events of {pj.namespace}/{pj.name} not recorded yet: ")
                return None
        return succeeded(pj, documents.status_result(found))


def _result_of(task: asyncio.Task, pj: ParseJob) -> Decision | None:
    if task.cancelled():
        return None
    exc = task.exception()
    if exc is not None:  # not the store's absence (that is None): this ParseJob's own trouble
        return observation_failed(pj, exc)
    return task.result()


def observation_failed(pj: ParseJob, exc: BaseException) -> Outcome:
    """Something about this ParseJob made deciding it fail (a bug, or input nothing else
    caught): it fails alone, typed and counted, and the tick goes on for every other."""
    log.error("deciding %s/%s failed", pj.namespace, pj.name, exc_info=exc, extra={"fields": pj.log_context()})
    metrics.OBSERVATION_ERRORS.inc()
    return Outcome(FAILED, "ObservationFailed", short(f"{type(exc).__name__}: {exc}"), code="InternalError",
                   attempts=pj.status.attempts)
