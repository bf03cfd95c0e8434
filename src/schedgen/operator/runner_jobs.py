"""The two kinds of runner Job, behind one interface (compare Kueue's `GenericJob`):

    SINGLE  one ParseJob, one Job: its controller ownerReference is the ParseJob; the pod
            failure policy fails it at once on bad input, a disrupted pod is replaced free
    BATCH   several ParseJobs of one namespace and tenant parsed one after another by one
            pod (runner/batch.py): an ownerReference to each member (none the
            controller: the Job goes with its last member), a deadline that is the sum of
            the members', each member's outcome in its own result object

Each kind names its Job, builds it, and says how one member's run ended (`run_end`,
an outcome.RunEnd, or None while it goes on); what that means for the ParseJob (retry,
attempts) is decided in one place, outcome.conclude. Names are deterministic per
members and their transitionSeq, so a ParseJob's next run never meets an earlier run's
Job. A Job no Running ParseJob records (made just before the operator stopped, or by
someone else) is never adopted: the scheduler deletes it (`made_for` tells which
ParseJob must move to a new transitionSeq for its next Job's name).
"""

from __future__ import annotations

import hashlib
import json
from typing import Collection, Mapping, Protocol, Sequence

from schedgen.parsejob import (
    EXIT_BAD_INPUT,
    EXIT_MISCONFIGURED,
    EXIT_OOM_KILLED,
    ANN_MEMBERS,
    LABEL_BATCH,
    LABEL_PARSEJOB,
    LABEL_PARSEJOB_UID,
    ParseJob,
    RunnerSummary,
)

from . import job_template as tpl
from .config import OperatorConfig
from .outcome import NotReached, Parsed, RunEnd, RunFailed, from_failure_document, invalid_result, job_lost, short
from .runner_objects import BATCH_LABEL_VALUE, RunnerJob, RunnerPod, Terminated

Urls = Mapping[str, str]  # {"source": presigned GET, "result": presigned PUT}


class RunnerJobKind(Protocol):
    waits_for_pod_states: bool  # a Job over before its pods' final states came: wait a moment

    def name(self, members: Sequence[ParseJob]) -> str: ...

    def build(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict: ...

    def secret(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict: ...

    def made_for(self, pj: ParseJob, job: RunnerJob) -> bool: ...

    def run_end(self, pj: ParseJob, job: RunnerJob, pods: Sequence[RunnerPod], listed: Collection[str]
                ) -> RunEnd | None: ...

    def failed(self, document: Mapping, pods: Sequence[RunnerPod], job: RunnerJob | None) -> RunFailed | None: ...

    def without_result(self, pj: ParseJob, job: RunnerJob | None, lost: str | None) -> RunEnd | None: ...

    def job_to_stop(self, pj: ParseJob) -> str | None: ...


def kind_of(job: RunnerJob) -> "RunnerJobKind":
    return BATCH if job.is_batch else SINGLE


def kind_for(pj: ParseJob) -> "RunnerJobKind":
    """The kind of the Job a Running ParseJob's status names (its Job may be gone)."""
    return BATCH if pj.status.batch_size > 1 else SINGLE


def _seq_suffix(pj: ParseJob) -> str:
    return f"{pj.uid.replace('-', '')[:8]}-{pj.status.seq}"


class SingleJob:
    waits_for_pod_states = True

    def name(self, members: Sequence[ParseJob]) -> str:
        (pj,) = members
        return f"{tpl.safe_name(pj.name, 40) or 'pj'}-{_seq_suffix(pj)}"

    def _labels(self, pj: ParseJob) -> dict[str, str]:
        return {**tpl.labels_of(pj), LABEL_PARSEJOB: tpl.label_value(pj.name), LABEL_PARSEJOB_UID: pj.uid}

    def build(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict:
        (pj,) = members
        return tpl.runner_job(
            name=self.name(members), namespace=pj.namespace, labels=self._labels(pj),
            owners=[tpl.owner_reference(pj, controller=True)],
            resources=tpl.effective_resources(pj.resources, cfg), deadline_seconds=pj.deadline_seconds,
            priority=pj.priority, cfg=cfg, pod_failure_policy=tpl.SINGLE_RUN_POD_FAILURE_POLICY)

    def secret(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict:
        (pj,) = members
        return tpl.run_secret(name=self.name(members), namespace=pj.namespace, labels=self._labels(pj),
                              owners=[tpl.owner_reference(pj, controller=False)],
                              runs=[tpl.member_env(pj, cfg, urls[pj.uid])])

    def made_for(self, pj: ParseJob, job: RunnerJob) -> bool:
        """`job` has the name this ParseJob's next run would get (its transitionSeq now)."""
        return job.name == self.name([pj])

    def run_end(self, pj: ParseJob, job: RunnerJob, pods: Sequence[RunnerPod], listed: Collection[str]
                ) -> RunEnd | None:
        """From the Job and its pods. A pod in phase Succeeded is enough: it wrote its
        result object before exiting, and the Job's Complete comes about 2 s later. Not
        the container's exit alone: the pod holds its CPU request in the scheduler until
        its phase is terminal."""
        if job.complete or any(p.phase == "Succeeded" and _exit(p) == 0 for p in pods):
            return Parsed()
        if job.failure is None:
            return None
        last = _last_failure(pods)
        summary = RunnerSummary.from_message(last.message) if last else None
        code = summary.code if summary else None
        message = (summary.message if summary else None) or (last.message if last else "") or job.failure.message
        if job.failure.reason == "DeadlineExceeded":
            return RunFailed("DeadlineExceeded", short(job.failure.message or "the Job ran past its deadline"),
                             code=code)
        by_policy = job.failure.reason == "PodFailurePolicy"  # it fails a Job only on exit 2, 3 or 137
        if last and (last.reason == "OOMKilled" or (by_policy and last.exit_code == EXIT_OOM_KILLED)):
            return RunFailed("OOMKilled", "the runner exceeded its memory limit", code="MemoryLimitExceeded")
        if last and last.exit_code == EXIT_MISCONFIGURED:
            return RunFailed("Misconfigured", short(message), code=code or "ConfigurationError")
        if by_policy or (last and last.exit_code == EXIT_BAD_INPUT):
            return RunFailed("InvalidPDF", short(message), code=code or "BadInput")
        if job.failure.reason == "BackoffLimitExceeded":
            # a pod stopped from outside without a DisruptionTarget (the policy ignores those):
            # deleted while it ran -- a node taken away by an autoscaler, or by hand
            stopped = any(p.deleted for p in pods) or job.disrupted
            return RunFailed("BackoffLimitExceeded", short(message), code=code, transient=True, counted=not stopped)
        return RunFailed(job.failure.reason, short(message), code=code)

    def failed(self, document: Mapping, pods: Sequence[RunnerPod], job: RunnerJob | None) -> RunFailed | None:
        return from_failure_document(document)  # a single runner writes none; a compromised one might

    def without_result(self, pj: ParseJob, job: RunnerJob | None, lost: str | None) -> RunEnd | None:
        if lost is not None:
            return job_lost(lost)
        return invalid_result("the Job completed but wrote no result object")

    def job_to_stop(self, pj: ParseJob) -> str | None:
        """The Job of a ParseJob deleted before it finished. A waiting one's Job may exist
        (created just before the operator stopped): the name it would have."""
        return pj.status.job_name or (self.name([pj]) if pj.status.waiting else None)


class BatchJob:
    waits_for_pod_states = False  # members are decided by their result objects

    def name(self, members: Sequence[ParseJob]) -> str:
        ids = sorted(f"{pj.uid}:{pj.status.seq}" for pj in members)
        digest = hashlib.sha1(",".join(ids).encode()).hexdigest()[:10]
        return f"batch-{tpl.safe_name(members[0].name, 30) or 'pj'}-{digest}"

    def build(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict:
        first = members[0]
        job = tpl.runner_job(
            name=self.name(members), namespace=first.namespace,
            labels={**tpl.labels_of(first), LABEL_BATCH: BATCH_LABEL_VALUE},
            owners=[tpl.owner_reference(pj, controller=False) for pj in members],
            resources=tpl.effective_resources(None, cfg),
            deadline_seconds=sum(pj.deadline_seconds for pj in members), priority=first.priority, cfg=cfg)
        seqs = {pj.uid: pj.status.seq for pj in members}
        job["metadata"]["annotations"] = {ANN_MEMBERS: json.dumps(seqs, separators=(",", ":"))}
        return job

    def secret(self, members: Sequence[ParseJob], cfg: OperatorConfig, urls: Mapping[str, Urls]) -> dict:
        first = members[0]
        return tpl.run_secret(name=self.name(members), namespace=first.namespace,
                              labels={**tpl.labels_of(first), LABEL_BATCH: BATCH_LABEL_VALUE},
                              owners=[tpl.owner_reference(pj, controller=False) for pj in members],
                              runs=[tpl.member_env(pj, cfg, urls[pj.uid]) for pj in members])

    def made_for(self, pj: ParseJob, job: RunnerJob) -> bool:
        """`job` was made for this ParseJob at its transitionSeq now."""
        return job.member_seqs.get(pj.uid) == pj.status.seq

    def run_end(self, pj: ParseJob, job: RunnerJob, pods: Sequence[RunnerPod], listed: Collection[str]
                ) -> RunEnd | None:
        """A member is decided by its own result object, as soon as it is listed; one the
        Job ended without reaching goes back to the queue. The reconciler reads the
        object (`Parsed`) and turns a failure document into `member_failed`."""
        if pj.uid in listed or job.ended:
            return Parsed()
        return None

    def failed(self, document: Mapping, pods: Sequence[RunnerPod], job: RunnerJob | None) -> RunFailed | None:
        """A member's failure document; a transient failure of a pod stopped from outside
        (eviction, node drain, a node taken away by an autoscaler, a deletion: the runner was
        stopped, not at fault) does not count -- unless the Job's own deadline stopped it
        (DeadlineExceeded: the Job controller deletes its pod). A transient one waits for its
        Job to end (None meanwhile): the runner writes it as its pod is stopped, before the
        pod's DisruptionTarget condition or its end comes."""
        end = from_failure_document(document)
        if end.transient and job is not None and not job.ended:
            return None
        deadline = job is not None and job.failure is not None and job.failure.reason == "DeadlineExceeded"
        if end.transient and not deadline and (any(p.stopped for p in pods) or (job is not None and job.disrupted)):
            return RunFailed(end.reason, end.message, end.code, transient=True, counted=False)
        return end

    def without_result(self, pj: ParseJob, job: RunnerJob | None, lost: str | None) -> RunEnd | None:
        """No object: back to the queue once the Job has ended (or vanished); while it runs
        the member may still come (listed, but gone when read: a listing older than a
        discard)."""
        if job is not None and not job.ended:
            return None
        return NotReached(f"Job {pj.status.job_name or '?'} ended before this ParseJob's turn")

    def job_to_stop(self, pj: ParseJob) -> str | None:
        return None  # the batch goes on for its other members


def _exit(pod: RunnerPod) -> int | None:
    return pod.terminated.exit_code if pod.terminated else None


def _last_failure(pods: Sequence[RunnerPod]) -> Terminated | None:
    failed = [p for p in pods if p.terminated and p.terminated.exit_code not in (None, 0)]
    failed.sort(key=lambda p: (p.terminated.finished_at or "", p.created or ""))  # type: ignore[union-attr]
    return failed[-1].terminated if failed else None


SINGLE = SingleJob()
BATCH = BatchJob()
