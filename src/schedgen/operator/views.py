"""What the kopf indexes keep: small plain-dict views of ParseJobs, runner Jobs and pods.

The scheduler, the recorder and retention read only these views, never kopf's live
bodies, so every decision is made from plain data (and tests write it by hand).
"""

from __future__ import annotations

import calendar
import copy
import time
from typing import Any, Iterable, Mapping

from schedgen.parsejob import LABEL_BATCH, RUNNER_CONTAINER

_PARSEJOB_META = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp",
                  "deletionTimestamp")


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
    `controller: true`), else None. Labels can be set by anyone who may create a Job or
    a pod; the controller reference is what ties a Job to its ParseJob (and a pod to its
    Job), so only it lets a Job or pod decide a ParseJob's outcome."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind and ref.get("uid"):
            return ref["uid"]
    return None


def batch_owner_uids(meta: Mapping[str, Any]) -> list[str]:
    """The ParseJobs a batch Job runs: its ParseJob ownerReferences (none is the
    controller: a Job has one, and a batch serves several)."""
    return [ref["uid"] for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "ParseJob" and ref.get("uid") and not ref.get("controller")]


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    conditions = {
        c.get("type"): {"status": c.get("status"), "reason": c.get("reason") or "", "message": c.get("message") or ""}
        for c in status.get("conditions") or []
    }
    meta = body.get("metadata") or {}
    batch = (meta.get("labels") or {}).get(LABEL_BATCH) == "true"
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "owner": controller_uid(meta, "ParseJob"),  # the ParseJob's uid, if it made this Job
        # a batch Job: the ParseJobs it runs (their ownerReferences); else empty
        "members": batch_owner_uids(meta) if batch else [],
        "active": status.get("active") or 0,
        "succeeded": status.get("succeeded") or 0,
        "failed": status.get("failed") or 0,
        "conditions": conditions,
        "deleting": bool(meta.get("deletionTimestamp")),
    }


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    unschedulable_since = None
    disrupted = False
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            unschedulable_since = epoch_of(c.get("lastTransitionTime")) or time.time()
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            disrupted = True
    terminated = None
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != RUNNER_CONTAINER:
            continue
        state = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if state:
            terminated = {
                "exitCode": state.get("exitCode"),
                "reason": state.get("reason") or "",
                "message": state.get("message") or "",
                "finishedAt": state.get("finishedAt") or "",
            }
    labels = meta.get("labels") or {}
    return {
        "name": meta.get("name"),
        "job": labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
        "owner": controller_uid(meta, "Job"),  # the Job's uid, if a Job controls this pod
        "phase": status.get("phase") or "Pending",
        "created": meta.get("creationTimestamp") or "",
        "unschedulableSince": unschedulable_since if status.get("phase", "Pending") == "Pending" else None,
        "disrupted": disrupted,
        "terminated": terminated,
    }


def parsejob_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A ParseJob as the scheduler and the recorder need it: a deep copy, so a later
    change of kopf's body never changes a view already handed out."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in _PARSEJOB_META},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def index_objects(index: Mapping[Any, Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every view in a kopf index (a snapshot: the index may change while we read)."""
    return [view for _, store in list(index.items()) for view in store]
