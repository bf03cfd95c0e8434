"""A Job or pod decides a ParseJob only through its controller ownerReference: a Job
with the right labels but no ownerReference naming the ParseJob is not its Job, and a
pod whose controller is not that Job is not its pod."""

from __future__ import annotations

import asyncio
import json

from schedgen.operator.job_reconciler import JobReconciler, Snapshot
from schedgen.operator.runner_objects import RunnerJob, RunnerPod, controller_uid
from schedgen.parsejob import ParseJob

PJ_UID = "11111111-2222-3333-4444-555555555555"
JOB_UID = "66666666-7777-8888-9999-000000000000"
LABELS = {"app.kubernetes.io/managed-by": "schedgen-operator", "schedgen.io/parsejob-uid": PJ_UID,
          "schedgen.io/parsejob": "pj"}


def parsejob() -> dict:
    return {"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
            "metadata": {"name": "pj", "namespace": "ns", "uid": PJ_UID, "generation": 1, "resourceVersion": "1",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"source": {"s3": {"key": "k.pdf"}}, "tenant": "t"},
            "status": {"phase": "Running", "transitionSeq": 2, "attempts": 1, "jobName": "pj-11111111",
                       "startedAt": "2026-01-01T00:00:01Z"}}


def job(owner_refs: list[dict]) -> dict:
    return {"metadata": {"name": "pj-11111111", "namespace": "ns", "uid": JOB_UID, "labels": LABELS,
                         "ownerReferences": owner_refs},
            "status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                                    "reason": "PodFailurePolicy", "message": ""}]}}


def pod(owner_refs: list[dict]) -> dict:
    message = json.dumps({"ok": False, "code": "NoTables", "message": "no table"})
    return {"metadata": {"name": "pj-11111111-x", "labels": {"batch.kubernetes.io/job-name": "pj-11111111"},
                         "ownerReferences": owner_refs, "creationTimestamp": "2026-01-01T00:00:02Z"},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "runner", "state": {"terminated": {
                "exitCode": 2, "reason": "Error", "message": message, "finishedAt": "2026-01-01T00:00:05Z"}}}]}}


OWNED_BY_PJ = [{"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob", "name": "pj", "uid": PJ_UID,
                "controller": True, "blockOwnerDeletion": True}]
OWNED_BY_JOB = [{"apiVersion": "batch/v1", "kind": "Job", "name": "pj-11111111", "uid": JOB_UID,
                 "controller": True}]


def test_views_keep_only_the_controller_uid():
    assert controller_uid(job(OWNED_BY_PJ)["metadata"], "ParseJob") == PJ_UID
    assert RunnerJob.of(job(OWNED_BY_PJ)).owner == PJ_UID
    assert RunnerJob.of(job([])).owner is None
    not_controller = [{**OWNED_BY_PJ[0], "controller": False}]
    assert RunnerJob.of(job(not_controller)).owner is None
    other_kind = [{**OWNED_BY_PJ[0], "kind": "ConfigMap"}]
    assert RunnerJob.of(job(other_kind)).owner is None
    assert RunnerPod.of(pod(OWNED_BY_JOB)).owner == JOB_UID
    assert RunnerPod.of(pod([])).owner is None


def decide(job_refs: list[dict], pod_refs: list[dict]):
    """What the reconciler decides from the indexes as handlers.py keys them: Jobs under
    the ParseJobs they own (RunnerJob.parsejob_uids), pods under their Job's name."""
    pj = ParseJob.of(parsejob())
    runner_job = RunnerJob.of(job(job_refs))
    jobs: dict = {}
    for uid in runner_job.parsejob_uids():
        jobs.setdefault(("ns", uid), []).append(runner_job)
    snap = Snapshot([pj], jobs, {("ns", "pj-11111111"): [RunnerPod.of(pod(pod_refs))]})
    if snap.job_of(pj) is None:
        return None, snap
    reconciler = JobReconciler(None, None, None, "bucket")  # type: ignore[arg-type]
    decided = asyncio.run(reconciler.observe([pj], snap, 0))
    return (decided[0][1] if decided else None), snap


def test_the_parsejobs_own_job_and_pod_decide_it():
    outcome, _ = decide(OWNED_BY_PJ, OWNED_BY_JOB)
    assert outcome.phase == "Failed" and outcome.reason == "InvalidPDF" and outcome.code == "NoTables"


def test_a_labelled_job_without_owner_reference_is_not_the_parsejobs():
    outcome, snap = decide([], OWNED_BY_JOB)
    assert snap.jobs == {} and outcome is None
    # A Job owned by another ParseJob, labelled as this one's, is not this one's either.
    outcome, snap = decide([{**OWNED_BY_PJ[0], "uid": "another-uid"}], OWNED_BY_JOB)
    assert ("ns", PJ_UID) not in snap.jobs and outcome is None


def test_a_pod_not_controlled_by_the_job_decides_nothing():
    outcome, _ = decide(OWNED_BY_PJ, [])
    assert outcome is None  # the Job's pods are not seen yet: wait for them (no InvalidPDF from a stray pod)
    outcome, _ = decide(OWNED_BY_PJ, [{**OWNED_BY_JOB[0], "uid": "another-job"}])
    assert outcome is None
