"""The Job reconciler: what the runner Jobs (and their pods, and result objects) say
about Running ParseJobs -> Succeeded / Failed / JobLost, or back to the queue.

A mixin of Scheduler (it uses its plumbing: kube, results, clock, tracked records,
bounded writes). An ordinary Job decides its one ParseJob (outcome.classify, then the
result object). A batch Job (batches.py) runs several: each member is decided by its
own result object as soon as it appears (one listing per namespace and tick), and
members its Job never reached go back to the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from . import metrics
from . import status as st
from .batches import Requeue
from .job_template import job_name
from .outcome import Outcome, attempts, classify
from .results import ResultUnavailable, report_unavailable
from .views import epoch_of

log = logging.getLogger(__name__)

JOB_LOST_GRACE_SECONDS = 15.0
POD_VIEW_GRACE_SECONDS = 5.0
RESULT_LISTING_SECONDS = 1.0  # per namespace with batches running


def _seq(body: Mapping[str, Any]) -> int:
    return int((body.get("status") or {}).get("transitionSeq") or 0)


def _ended(job: Mapping[str, Any]) -> bool:
    """A Job view that is over: Complete, Failed, or being deleted."""
    return job["deleting"] or any(c.get("status") == "True" for t, c in job["conditions"].items()
                                  if t in ("Complete", "Failed"))


def _uid(body: Mapping[str, Any]) -> str:
    return body["metadata"]["uid"]


def _deleting(body: Mapping[str, Any]) -> bool:
    return bool(body["metadata"].get("deletionTimestamp"))


@dataclass
class Tracked:
    """What the scheduler remembers about one ParseJob between ticks (dropped with it)."""

    overlay: dict[str, Any] | None = None  # our last status write, until the watch brings it
    job_created: float | None = None  # clock() when we created its Job
    finish_seen: float | None = None  # clock() when its Job was first seen finished
    attempts_written: int = 0
    position: int | None = None  # the queuePosition we last wrote


@dataclass
class Snapshot:
    """What the indexes say right now, with our own not-yet-watched writes on top."""

    parsejobs: list[dict[str, Any]]
    jobs: dict[tuple[str, str], dict[str, Any]]  # (namespace, parsejob uid) -> job view
    pods: dict[tuple[str, str], list[dict[str, Any]]]  # (namespace, job name) -> pod views


class JobReconciler:
    """observe_running / follow_running: the Job reconciler part of Scheduler."""

    _listings: dict[str, tuple[float, set[str]]]

    async def observe_running(self, running: list[dict[str, Any]], snap: Snapshot
                              ) -> list[tuple[dict, Outcome | Requeue | int]]:
        """(body, Outcome) for finished ones, (body, Requeue) for batch members back to
        the queue, (body, attempts) where attempts changed."""
        batch_namespaces = {b["metadata"]["namespace"] for b in running
                            if (snap.jobs.get((b["metadata"]["namespace"], _uid(b))) or {}).get("members")}
        listed = dict(zip(batch_namespaces, await asyncio.gather(*(self._results_in(ns) for ns in batch_namespaces))))
        observed = []
        for body in running:
            outcome = await self._observe(body, snap, listed)
            if outcome is not None:
                observed.append((body, outcome))
        return observed

    async def follow_running(self, observed: list[tuple[dict, Outcome | Requeue | int]]) -> set[str]:
        decisions = [self._finish(body, o) if isinstance(o, Outcome) else
                     self._requeue(body, o) if isinstance(o, Requeue) else self._record_attempts(body, o)
                     for body, o in observed]
        results = await self._bounded(decisions)
        return {uid for uid in results if isinstance(uid, str)}

    async def _results_in(self, namespace: str) -> set[str]:
        """The result objects present in `namespace` (listed at most once a second)."""
        at, found = self._listings.get(namespace, (float("-inf"), set()))
        if self.clock() - at >= RESULT_LISTING_SECONDS:
            try:
                found = await asyncio.to_thread(self.results.present, namespace)
                self._listings[namespace] = (self.clock(), found)
            except ResultUnavailable as exc:
                report_unavailable(exc)
        return found

    async def _observe_member(self, body: Mapping[str, Any], job: Mapping[str, Any],
                              listed: Mapping[str, set[str]]) -> Outcome | Requeue | None:
        """A batch member: decided by its own result object, as soon as it is there;
        when the batch Job has ended without one, back to the queue."""
        meta = body["metadata"]
        ended = _ended(job)
        if meta["uid"] not in listed.get(meta["namespace"], ()) and not ended:
            return None
        outcome = await self.results.outcome(body, None, batch_job=job["name"])
        if isinstance(outcome, Requeue) and not outcome.counted and not ended:
            # listed, but gone when read: a listing older than our discarding of this
            # member's last failure document. Its batch may still reach it: wait.
            return None
        return outcome

    async def _requeue(self, body: Mapping[str, Any], requeue: Requeue) -> str:
        # The failure document of this run must go first: the member's next run writes
        # the same key, and a stale one would decide that run before it even starts.
        await self.results.discard(body)
        self._listings.get(body["metadata"]["namespace"], (0.0, set()))[1].discard(_uid(body))
        written = await self._write_status(body, st.merged(body, st.requeued(
            body, requeue.reason, requeue.message, requeue.counted))["status"])
        metrics.REQUEUED.labels(reason=requeue.reason).inc()
        self.kube.emit(written, "Normal", requeue.reason, requeue.message)
        return _uid(body)

    async def _observe(self, body: Mapping[str, Any], snap: Snapshot,
                       listed: Mapping[str, set[str]] | None = None) -> Outcome | Requeue | int | None:
        """An Outcome when finished, a Requeue for a batch member its Job did not reach,
        an int when attempts changed, else None."""
        meta, status = body["metadata"], body.get("status") or {}
        uid = meta["uid"]
        job = snap.jobs.get((meta["namespace"], uid))
        if job is None:
            return await self._maybe_lost(body)
        if job.get("members"):
            return await self._observe_member(body, job, listed or {})
        pods = [p for p in snap.pods.get((meta["namespace"], job["name"]), []) if p.get("owner") == job["uid"]]
        prior = int(status.get("priorAttempts") or 0)  # runs before this Job (a batch member put back)
        outcome = classify(job, pods)
        if outcome is None:
            tries = prior + attempts(job, pods)
            return tries if tries > max(int(status.get("attempts") or 0), self.recall(uid).attempts_written) else None
        outcome = dataclasses.replace(outcome, attempts=prior + outcome.attempts)
        if not any(p.get("terminated") for p in pods):
            tracked = self.track(uid)
            if tracked.finish_seen is None:
                tracked.finish_seen = self.clock()
            if self.clock() - tracked.finish_seen < POD_VIEW_GRACE_SECONDS:
                return None  # the pods' final states are still on their way through the watch
        return await self.results.outcome(body, outcome) if outcome.phase == st.SUCCEEDED else outcome

    async def _maybe_lost(self, body: Mapping[str, Any]) -> Outcome | None:
        meta, status = body["metadata"], body.get("status") or {}
        created = self.recall(meta["uid"]).job_created
        if created is not None and self.clock() - created < JOB_LOST_GRACE_SECONDS:
            return None
        started = epoch_of(status.get("startedAt"))
        if started is not None and self.wall() - started < JOB_LOST_GRACE_SECONDS:
            return None
        name = status.get("jobName") or job_name(meta["name"], meta["uid"])
        if await self.kube.job_exists(meta["namespace"], name):
            return None  # the Job exists, the index is lagging
        return await self.results.outcome(body, None, lost=f"Job {name} disappeared before it finished",
                                          batch_job=name if int(status.get("batchSize") or 1) > 1 else None)

    async def _record_attempts(self, body: Mapping[str, Any], tries: int) -> None:
        meta = body["metadata"]
        await self.kube.set_status_field(meta["namespace"], meta["name"], _seq(body), "attempts", tries)
        self.track(meta["uid"]).attempts_written = tries

    async def _finish(self, body: Mapping[str, Any], outcome: Outcome) -> str:
        patch = st.finished(body, outcome)
        written = await self._write_status(body, st.merged(body, patch)["status"])
        now = self.wall()
        s = written["status"]
        kind = (s.get("result") or {}).get("kind") or "unknown"
        metrics.COMPLETED.labels(kind=kind, outcome=outcome.phase, reason=outcome.reason).inc()
        for hist, since in ((metrics.RUN_TIME, s.get("startedAt")),
                            (metrics.END_TO_END, body["metadata"].get("creationTimestamp"))):
            t = epoch_of(since)
            if t is not None:
                hist.observe(max(0.0, now - t))
        self.kube.emit(body, *outcome.event())
        return _uid(body)
