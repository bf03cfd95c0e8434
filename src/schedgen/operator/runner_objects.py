"""What the kopf indexes keep of runner Jobs and their pods: small typed views, built
once per watch event, so every decision is made from plain data (tests write it by hand).
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from schedgen.parsejob import ANN_MEMBERS, ANN_SIGNATURE, KIND, LABEL_BATCH, RUNNER_CONTAINER

BATCH_LABEL_VALUE = "true"


def epoch_of(value: str | None) -> float | None:
    """RFC 3339 (as the API server writes it) -> epoch seconds."""
    if not value:
        return None
    text = value.rstrip("Z")
    frac = 0.0
    if "." in text:
        text, fraction = text.split(".", 1)
        frac = float("0." + "".join(ch for ch in fraction if ch.isdigit()) or "0")
    text = text.split("+")[0]
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) + frac


def controller_uid(meta: Mapping[str, Any], kind: str) -> str | None:
    """The uid of the object's controller of `kind` (its ownerReference with
    `controller: true`). Labels are anyone's to set; only the controller reference ties a
    Job to its ParseJob (and a pod to its Job)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind and ref.get("uid"):
            return ref["uid"]
    return None


def _member_uids(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The ParseJobs a batch Job runs: its ParseJob ownerReferences (none is the
    controller: a Job has one controller, and a batch serves several ParseJobs)."""
    return tuple(ref["uid"] for ref in meta.get("ownerReferences") or []
                 if ref.get("kind") == KIND and ref.get("uid") and not ref.get("controller"))


def _member_seqs(meta: Mapping[str, Any]) -> dict[str, int]:
    try:
        seqs = json.loads((meta.get("annotations") or {}).get(ANN_MEMBERS) or "{}")
    except ValueError:
        return {}
    return {k: v for k, v in seqs.items() if isinstance(v, int)} if isinstance(seqs, dict) else {}


@dataclass(frozen=True)
class JobCondition:
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class RunnerJob:
    """A runner Job: who it runs (`owner` for a single ParseJob, `members` for a batch)
    and how far it got."""

    name: str
    uid: str
    owner: str | None = None  # the controlling ParseJob's uid (a single run)
    members: tuple[str, ...] = ()  # the ParseJobs of a batch Job
    member_seqs: Mapping[str, int] = field(default_factory=dict)  # their transitionSeq at admission
    signature: str | None = None  # the operator's (signing.py)
    namespace: str = ""
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failure: JobCondition | None = None  # condition Failed=True
    deleting: bool = False
    suspended: bool = False
    deadline_seconds: int | None = None  # spec.activeDeadlineSeconds
    created: str = ""
    # a pod of it was stopped from outside (RunnerPod.stopped), remembered by the scheduler
    # after the pod itself is gone (Scheduler.note_pod)
    disrupted: bool = False

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "RunnerJob":
        meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed")
        batch = (meta.get("labels") or {}).get(LABEL_BATCH) == BATCH_LABEL_VALUE
        deadline = spec.get("activeDeadlineSeconds")
        return cls(
            name=meta.get("name") or "", uid=meta.get("uid") or "",
            owner=None if batch else controller_uid(meta, KIND),
            members=_member_uids(meta) if batch else (),
            member_seqs=_member_seqs(meta) if batch else {},
            signature=(meta.get("annotations") or {}).get(ANN_SIGNATURE), namespace=meta.get("namespace") or "",
            active=status.get("active") or 0, succeeded=status.get("succeeded") or 0,
            failed=status.get("failed") or 0, complete="Complete" in conditions,
            failure=JobCondition(failed.get("reason") or "Failed", failed.get("message") or "") if failed else None,
            deleting=bool(meta.get("deletionTimestamp")), suspended=bool(spec.get("suspend")),
            deadline_seconds=deadline if isinstance(deadline, int) else None,
            created=meta.get("creationTimestamp") or "")

    @property
    def is_batch(self) -> bool:
        return bool(self.members)

    @property
    def ended(self) -> bool:
        """Over: Complete, Failed, or being deleted."""
        return self.deleting or self.complete or self.failure is not None

    def parsejob_uids(self) -> tuple[str, ...]:
        """The ParseJobs this Job runs, by ownerReference: the keys of the Job index. A Job
        without one (labels alone are anyone's to set) is nobody's."""
        return self.members or ((self.owner,) if self.owner else ())

    def runs(self, uid: str) -> bool:
        """This Job runs the ParseJob `uid` (by ownerReference, never by label)."""
        return self.owner == uid or uid in self.members


@dataclass(frozen=True)
class Terminated:
    """The runner container's last termination."""

    exit_code: int | None
    reason: str = ""
    message: str = ""
    finished_at: str = ""


IMAGE_UNAVAILABLE = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


@dataclass(frozen=True)
class RunnerPod:
    name: str
    job: str | None  # the Job's name (label)
    owner: str | None  # the controlling Job's uid
    phase: str = "Pending"
    created: str = ""
    node: str | None = None
    unschedulable_since: float | None = None  # epoch seconds, while Pending-Unschedulable
    disrupted: bool = False  # condition DisruptionTarget=True (eviction, preemption, drain)
    terminated: Terminated | None = None
    deleted: bool = False  # stopped by its deletion: deleted while it ran (see `of`)
    waiting: tuple[str, str] | None = None  # the runner container's (reason, message) while it waits

    @property
    def image_unavailable(self) -> bool:
        """The kubelet cannot get the runner's image (a wrong image or tag, a registry that
        refuses: no pull Secret, ...): it retries with a backoff, and the pod would wait
        until the Job's deadline."""
        return self.waiting is not None and self.waiting[0] in IMAGE_UNAVAILABLE

    @property
    def stopped(self) -> bool:
        """Stopped from outside, not by its own end: evicted or preempted (DisruptionTarget),
        or deleted while it ran -- a node taken away (Karpenter's forced termination deletes a
        do-not-disrupt pod with a plain DELETE, no condition), or by hand."""
        return self.disrupted or self.deleted

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "RunnerPod":
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        phase = status.get("phase") or "Pending"
        unschedulable, disrupted = None, False
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                unschedulable = epoch_of(c.get("lastTransitionTime")) or time.time()
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
                disrupted = True
        terminated, waiting = None, None
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != RUNNER_CONTAINER:
                continue
            state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if state:
                terminated = Terminated(state.get("exitCode"), state.get("reason") or "", state.get("message") or "",
                                        state.get("finishedAt") or "")
            if wait := (cs.get("state") or {}).get("waiting"):
                waiting = (wait.get("reason") or "", wait.get("message") or "")
        labels = meta.get("labels") or {}
        return cls(
            name=meta.get("name") or "", job=labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
            owner=controller_uid(meta, "Job"), phase=phase, created=meta.get("creationTimestamp") or "",
            node=(body.get("spec") or {}).get("nodeName"),
            unschedulable_since=unschedulable if phase == "Pending" else None, disrupted=disrupted,
            terminated=terminated, deleted=_deleted_while_running(meta, phase, terminated),
            waiting=waiting if phase == "Pending" else None)


def _deleted_while_running(meta: Mapping[str, Any], phase: str, terminated: Terminated | None) -> bool:
    """The pod was deleted before it ended by itself: its deletion asked for while it was
    still Pending or Running, or its container ended after the deletion was asked for (its
    SIGTERM: the deletionTimestamp less the grace period; one second of slack, the
    timestamps being whole seconds). Read from the state alone, so a watch that skipped the
    intermediate events still tells it. A pod deleted after it ended by itself is not."""
    deadline = epoch_of(meta.get("deletionTimestamp"))
    if deadline is None:
        return False
    if phase in ("Pending", "Running"):
        return True
    asked = deadline - float(meta.get("deletionGracePeriodSeconds") or 0)
    finished = epoch_of(terminated.finished_at) if terminated else None
    return finished is not None and finished >= asked - 1.0
