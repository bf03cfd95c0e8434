"""How a run ends and what that means for its ParseJob: a single runner Job's end read
from the Job and its pods (plain dicts as the API returns them, read by RunnerJob.of and
RunnerPod.of), a batch member's failure document, and the one retry scheme
(outcome.conclude, retry_delay, succeeded)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from parsejobs import parsejob
from schedgen.operator import status as ps
from schedgen.operator.outcome import (
    MAX_DISRUPTIONS,
    RETRY_DELAY_CAP_SECONDS,
    NotReached,
    Outcome,
    Parsed,
    Requeue,
    RunFailed,
    conclude,
    from_failure_document,
    retry_delay,
    succeeded,
)
from schedgen.operator.runner_jobs import BATCH, SINGLE
from schedgen.operator.runner_objects import RunnerJob, RunnerPod, epoch_of
from schedgen.parsejob import ParseJob

PJ_UID = "0b5c9a3e-1111-2222-3333-444455556666"


def pj(prior: int = 0, max_retries: int = 3) -> ParseJob:
    """A Running ParseJob on its run number prior + 1."""
    return parsejob("pj-1", uid=PJ_UID, maxRetries=max_retries,
                    status={"phase": "Running", "transitionSeq": 2, "jobName": "pj-1-0b5c9a3e-1",
                            "attempts": prior + 1, "priorAttempts": prior})


def job(conditions=(), active=0, succeeded=0, failed=0) -> RunnerJob:
    return RunnerJob.of({"metadata": {"name": "pj-1-0b5c9a3e-1", "uid": "j1",
                                      "ownerReferences": [{"kind": "ParseJob", "uid": PJ_UID, "controller": True}]},
                         "status": {"active": active, "succeeded": succeeded, "failed": failed,
                                    "conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                                   for t, r, m in conditions]}})


def pod(exit_code=None, message="", reason=None, finished="2026-01-01T00:00:05Z", phase=None, scheduled=None,
        disrupted=False) -> RunnerPod:
    status: dict = {"phase": phase or ("Succeeded" if exit_code == 0 else "Failed" if exit_code else "Pending")}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "runner", "state": {"terminated": {
            "exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "message": message, "finishedAt": finished}}}]
    conditions = []
    if scheduled:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "lastTransitionTime": scheduled})
    if disrupted:
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"})
    status["conditions"] = conditions
    return RunnerPod.of({"metadata": {"name": f"pod-{finished}", "labels": {"batch.kubernetes.io/job-name": "pj-1"},
                                      "ownerReferences": [{"kind": "Job", "uid": "j1", "controller": True}],
                                      "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status})


def run_end(j: RunnerJob, pods: list[RunnerPod], of: ParseJob | None = None):
    return SINGLE.run_end(of or pj(), j, pods, ())


OK = json.dumps({"ok": True, "kind": "lecture", "events": 30, "pages": 2, "seconds": 0.4})
FAILED_BACKOFF = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


def test_running_is_no_end():
    assert run_end(job(active=1), [pod(phase="Running")]) is None
    assert run_end(job(active=1), []) is None


def test_a_complete_job_parsed_and_the_result_object_decides():
    """Was: the outcome took the runner summary's figures. Now the run only says it
    parsed (Parsed); the result object is read for the figures (the reconciler), and
    `succeeded` counts the run on top of the attempts before it."""
    assert run_end(job([("Complete", "", "")], succeeded=1), [pod(0, OK)]) == Parsed()
    assert run_end(job([("Complete", "", "")], succeeded=1), []) == Parsed()
    result = {"kind": "lecture", "events": 30, "pages": 2, "parseSeconds": 0.4}
    out = succeeded(pj(), result)
    assert (out.phase, out.reason, out.result, out.attempts) == ("Succeeded", "Completed", result, 1)
    assert out.event() == ("Normal", "Succeeded", "parsed lecture schedule: 30 events, 2 pages in 0.4 s")


def test_a_runner_pod_that_succeeded_is_success_before_the_job_is_complete():
    """The Job controller marks the Job Complete about 2 s after the pod's phase turns
    Succeeded; the pod (its result object written) decides at once."""
    assert run_end(job(active=1), [pod(0, OK)]) == Parsed()
    # a failed pod alone, the Job not yet failed: no end yet
    assert run_end(job(active=1, failed=1), [pod(1, "")]) is None
    # the container exited 0 but the pod is not terminal yet: it still holds its CPU
    # request in the scheduler, so its slot is not free yet
    assert run_end(job(active=1), [pod(0, OK, phase="Running")]) is None


def test_a_success_after_retries_counts_every_run():
    """Was: the Job's second pod succeeded after a transient failure (two attempts). Now
    a retry is a new run (a new Job; backoffLimit 0), and attempts go on from the runs
    before it (status.priorAttempts)."""
    assert succeeded(pj(prior=1), {}).attempts == 2
    assert succeeded(pj(prior=3), {}).attempts == 4


def test_bad_input_is_invalid_pdf_with_the_runners_code_and_never_retried():
    msg = json.dumps({"ok": False, "code": "UnknownScheduleType", "message": "not a UP schedule"})
    end = run_end(job([("Failed", "PodFailurePolicy", "Container runner ... exit code 2")], failed=1), [pod(2, msg)])
    assert end == RunFailed("InvalidPDF", "not a UP schedule", code="UnknownScheduleType")
    out = conclude(pj(max_retries=3), end, retry_base=10)
    assert (out.phase, out.reason, out.code, out.message, out.attempts) == (
        "Failed", "InvalidPDF", "UnknownScheduleType", "not a UP schedule", 1)
    no_summary = run_end(job([("Failed", "PodFailurePolicy", "")], failed=1), [pod(2, "")])
    assert (no_summary.reason, no_summary.code, no_summary.transient) == ("InvalidPDF", "BadInput", False)


def test_misconfigured():
    msg = json.dumps({"ok": False, "code": "ConfigurationError", "message": "SCHEDGEN_S3_KEY is required"})
    end = run_end(job([("Failed", "PodFailurePolicy", "")], failed=1), [pod(3, msg)])
    assert (end.reason, end.code, end.message, end.transient) == (
        "Misconfigured", "ConfigurationError", "SCHEDGEN_S3_KEY is required", False)


def test_deadline():
    end = run_end(job([("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")], failed=1),
                  [pod(137, "", reason="Error")])
    assert end.reason == "DeadlineExceeded" and not end.transient
    assert end.message == "Job was active longer than specified deadline"
    out = conclude(pj(), end, retry_base=10)
    assert isinstance(out, Outcome) and (out.phase, out.reason, out.attempts) == ("Failed", "DeadlineExceeded", 1)


def test_oom_from_the_container_state():
    end = run_end(job([FAILED_BACKOFF], failed=1), [pod(137, "", "OOMKilled")])
    assert (end.reason, end.code, end.transient) == ("OOMKilled", "MemoryLimitExceeded", False)
    assert conclude(pj(), end).attempts == 1


def test_oom_kill_fails_the_job_at_once_as_bad_input():
    """The pod failure policy fails the Job on exit 137 after one pod: reported as the
    memory limit (code MemoryLimitExceeded, like the runner's own typed error)."""
    end = run_end(job([("Failed", "PodFailurePolicy", "Container runner for pod x failed with exit code 137")],
                      failed=1), [pod(137, "", "OOMKilled")])
    out = conclude(pj(), end, retry_base=10)
    assert (out.phase, out.reason, out.code, out.attempts) == ("Failed", "OOMKilled", "MemoryLimitExceeded", 1)


def test_a_sigkill_without_the_failure_policy_is_not_called_oom():
    """Kept from before the restructure: exit 137 is the memory limit only when the
    kernel says OOMKilled or the pod failure policy failed the Job on it. A SIGKILL the
    policy did not act on (the Job failed by its backoff limit) is not a memory problem:
    a transient failure, retried."""
    end = run_end(job([FAILED_BACKOFF], failed=1), [pod(137, "", "Error")])
    assert end.reason == "BackoffLimitExceeded" and end.transient


def test_an_evicted_pods_sigkill_is_not_called_oom():
    """An evicted pod (DisruptionTarget, SIGKILLed: 137, reason Error) is ignored by the
    pod failure policy and replaced; when the replacement fails without a container
    state (rejected at the kubelet's admission, say), the Job fails by its backoff
    limit and the evicted pod is the last with an exit code. That is no OOM kill and
    the input is not at fault: a transient failure."""
    evicted = pod(137, "", "Error", finished="2026-01-01T00:00:03Z", disrupted=True)
    rejected = RunnerPod.of({"metadata": {"name": "pod-2", "labels": {"batch.kubernetes.io/job-name": "pj-1"}},
                             "status": {"phase": "Failed", "reason": "OutOfcpu"}})
    end = run_end(job([FAILED_BACKOFF], failed=1), [evicted, rejected])
    assert end.reason != "OOMKilled" and end.transient


def test_a_job_the_pod_failure_policy_failed_is_never_retried():
    """The policy fails a Job only on exit 2, 3 or 137: bad input, a misconfigured
    runner, the memory limit, none of which a retry mends. When the pod's final state
    never came through the watch (the reconciler waits a few seconds for it, then
    decides from the Job alone), the Job's reason still says so."""
    end = run_end(job([("Failed", "PodFailurePolicy",
                        "Container runner for pod ns/pj-1-x failed with exit code 2 matching FailJob rule at index 1")],
                      failed=1), [])
    assert not end.transient
    assert isinstance(conclude(pj(max_retries=3), end, retry_base=10), Outcome)


def test_backoff_limit_is_transient_and_keeps_the_last_runner_message():
    """Was: BackoffLimitExceeded was final (the Job's own retries spent). Now every
    runner Job has backoffLimit 0, so the Job's backoff limit is one transient failure:
    retried by the operator while attempts last. The last failed pod's summary (by
    finish time; an Ignored disrupted pod may precede it) says why."""
    first = json.dumps({"ok": False, "code": "StorageUnavailable", "message": "s3 down"})
    last = json.dumps({"ok": False, "code": "DatabaseUnavailable", "message": "pg down"})
    pods = [pod(1, last, finished="2026-01-01T00:00:09Z"), pod(1, first, finished="2026-01-01T00:00:01Z")]
    end = run_end(job([FAILED_BACKOFF], failed=2), pods)
    assert (end.reason, end.code, end.message, end.transient, end.counted) == (
        "BackoffLimitExceeded", "DatabaseUnavailable", "pg down", True, True)
    again = conclude(pj(prior=0, max_retries=3), end, retry_base=10)
    assert again == Requeue("Retrying", "DatabaseUnavailable: pg down", counted=True, delay=10.0)
    spent = conclude(pj(prior=3, max_retries=3), end, retry_base=10)
    assert isinstance(spent, Outcome)
    assert (spent.phase, spent.reason, spent.code, spent.attempts) == (
        "Failed", "BackoffLimitExceeded", "DatabaseUnavailable", 4)


def test_garbage_termination_message_is_tolerated():
    end = run_end(job([FAILED_BACKOFF], failed=1), [pod(1, "Traceback: boom")])
    assert end.reason == "BackoffLimitExceeded" and end.message == "Traceback: boom" and end.code is None
    huge = run_end(job([FAILED_BACKOFF], failed=1), [pod(1, "[" * 4096)])
    assert huge.code is None and len(huge.message) == 512 and huge.message.endswith("…")


def test_an_unknown_job_failure_is_final_with_its_reason():
    end = run_end(job([("Failed", "SomethingNew", "the Job controller says no")], failed=0), [])
    assert (end.reason, end.message, end.transient) == ("SomethingNew", "the Job controller says no", False)


def test_failure_documents():
    """What a batch runner writes for a member it could not parse (untrusted)."""
    bad = from_failure_document({"ok": False, "code": "TooLarge", "message": "big", "retry": False})
    assert (bad.reason, bad.code, bad.message, bad.transient) == ("InvalidPDF", "TooLarge", "big", False)
    oom = from_failure_document({"ok": False, "killed": "oom", "code": "Killed"})
    assert (oom.reason, oom.code, oom.transient) == ("OOMKilled", "MemoryLimitExceeded", False)
    slow = from_failure_document({"ok": False, "killed": "deadline", "message": "no result within 60 s"})
    assert (slow.reason, slow.code, slow.message) == ("DeadlineExceeded", "ParseTimeout", "no result within 60 s")
    again = from_failure_document({"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True})
    assert (again.reason, again.code, again.transient, again.counted) == (
        "BackoffLimitExceeded", "Interrupted", True, True)
    misconfigured = from_failure_document({"ok": False, "code": "ConfigurationError", "message": "no url"})
    assert misconfigured.reason == "Misconfigured" and not misconfigured.transient
    hostile = from_failure_document({"ok": False, "code": 5, "message": "x" * 10000, "killed": "rm -rf",
                                     "retry": "yes"})
    assert hostile.reason == "InvalidPDF" and hostile.code == "Unknown" and len(hostile.message) == 512
    assert not hostile.transient  # only retry: true retries


def test_conclude_the_retry_scheme():
    transient = RunFailed("BackoffLimitExceeded", "SIGTERM", code="Interrupted", transient=True)
    assert conclude(pj(prior=1, max_retries=3), transient, 10) == Requeue(
        "Retrying", "Interrupted: SIGTERM", counted=True, delay=20.0)
    spent = conclude(pj(prior=3, max_retries=3), transient, 10)
    assert (spent.phase, spent.reason, spent.attempts) == ("Failed", "BackoffLimitExceeded", 4)
    assert isinstance(conclude(pj(prior=0, max_retries=0), transient, 10), Outcome)  # no retries at all
    assert conclude(pj(prior=0, max_retries=3), transient, 0) == Requeue(
        "Retrying", "Interrupted: SIGTERM", counted=True, delay=0.0)  # backoff off: at once
    assert conclude(pj(prior=2), NotReached("Job batch-x ended before this ParseJob's turn")) == Requeue(
        "BatchEnded", "Job batch-x ended before this ParseJob's turn", counted=False)
    disrupted = RunFailed("BackoffLimitExceeded", "SIGTERM", code="Interrupted", transient=True, counted=False)
    assert conclude(pj(prior=3, max_retries=3), disrupted, 10) == Requeue(
        "Disrupted", "SIGTERM", counted=False, disruption=True)  # attempts spent, but this run does not count
    lost = conclude(pj(prior=1), RunFailed("JobLost", "Job pj-1 disappeared"), 10)
    assert (lost.phase, lost.reason, lost.attempts) == ("Failed", "JobLost", 2)
    event = lost.event()
    assert event == ("Warning", "JobLost", "JobLost: Job pj-1 disappeared")
    assert conclude(pj(), RunFailed("InvalidPDF", "m", code="NotAPDF")).event()[2] == "InvalidPDF (NotAPDF): m"


def test_retry_delay_doubles_from_the_base_up_to_the_cap():
    assert [retry_delay(a, 10) for a in range(0, 8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert retry_delay(3, 0) == 0 and retry_delay(3, -5) == 0
    assert RETRY_DELAY_CAP_SECONDS == 300


@given(st.floats(0.001, 1000), st.integers(1, 60))
def test_a_retrys_delay_doubles_and_is_capped(base, attempts):
    first = retry_delay(1, base)
    assert first == min(base, RETRY_DELAY_CAP_SECONDS)
    this, following = retry_delay(attempts, base), retry_delay(attempts + 1, base)
    assert 0 < this <= following <= RETRY_DELAY_CAP_SECONDS
    assert following == min(RETRY_DELAY_CAP_SECONDS, 2 * this)


@given(st.integers(0, 11), st.integers(0, 10), st.floats(0, 100))
def test_not_reached_and_disrupted_runs_never_count(prior, max_retries, base):
    p = pj(prior=prior, max_retries=max_retries)
    disrupted = BATCH.failed({"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True},
                             [pod(143, disrupted=True)], None)
    for end in (NotReached("Job batch-x ended before this ParseJob's turn"), disrupted):
        out = conclude(p, end, base)
        assert isinstance(out, Requeue) and not out.counted and out.delay == 0
        assert ps.requeued(p, out)["attempts"] == prior


ENDS = {
    "transient": RunFailed("BackoffLimitExceeded", "s3 down", code="StorageUnavailable", transient=True),
    "disrupted": RunFailed("BackoffLimitExceeded", "SIGTERM", code="Interrupted", transient=True, counted=False),
    "not_reached": NotReached("Job batch-x ended before this ParseJob's turn"),
    "final": RunFailed("InvalidPDF", "not a PDF", code="NotAPDF"),
}


@given(st.lists(st.sampled_from(sorted(ENDS)), min_size=1, max_size=30), st.integers(0, 10), st.floats(0, 60))
def test_a_parsejobs_life_of_runs(ends, max_retries, base):
    """Run after run (status.running, the run's end, conclude, status.requeued or
    status.finished): attempts are the counted runs, never more than maxRetries + 1;
    the k-th counted retry waits retry_delay(k); the ParseJob fails BackoffLimitExceeded
    exactly when its counted transient failures pass maxRetries."""
    p = parsejob("life", maxRetries=max_retries)
    p = p.with_status(ps.queued(p))
    counted = disruptions = 0
    for kind in ends:
        p = p.with_status(ps.running(p, "j"))
        end = ENDS[kind]
        decision = conclude(p, end, base)
        counts = kind in ("transient", "final")
        counted += counts
        disruptions += kind == "disrupted"
        assert counted <= max_retries + 1 and disruptions <= MAX_DISRUPTIONS + 1
        if isinstance(decision, Requeue):
            assert kind != "final" and decision.counted == counts
            assert decision.delay == (retry_delay(counted, base) if counts else 0)
            p = p.with_status(ps.requeued(p, decision))
            assert p.status.attempts == counted and p.status.disruptions == disruptions
            if counts and base > 0:
                assert epoch_of(p.status.retry_after) is not None
            continue
        expected = {"final": "InvalidPDF", "transient": "BackoffLimitExceeded", "disrupted": "TooManyDisruptions"}
        assert decision.reason == expected[kind]
        assert kind == "final" or (kind == "transient" and counted == max_retries + 1) or (
            kind == "disrupted" and disruptions == MAX_DISRUPTIONS + 1)
        p = p.with_status(ps.finished(p, decision))
        assert p.status.attempts == decision.attempts == counted
        break
    else:
        assert p.status.attempts == counted and p.phase == "Queued"


def test_a_parsejob_whose_runs_are_stopped_from_outside_over_and_over_fails():
    """A pod deleted in a loop (by a tenant, or a broken node) must not keep a ParseJob
    in the queue forever: the 21st disruption fails it, with no attempt counted."""
    disrupted = RunFailed("BackoffLimitExceeded", "its pod was deleted", transient=True, counted=False)
    p = parsejob("loop", maxRetries=3)
    p = p.with_status(ps.queued(p))
    for n in range(1, MAX_DISRUPTIONS + 1):
        p = p.with_status(ps.running(p, "j"))
        p = p.with_status(ps.requeued(p, conclude(p, disrupted)))
        assert (p.phase, p.status.disruptions, p.status.attempts) == ("Queued", n, 0)
    p = p.with_status(ps.running(p, "j"))
    final = conclude(p, disrupted)
    assert (final.phase, final.reason, final.attempts) == ("Failed", "TooManyDisruptions", 0)
    assert final.message.startswith(f"{MAX_DISRUPTIONS + 1} runs stopped from outside (limit {MAX_DISRUPTIONS})")
    done = p.with_status(ps.finished(p, final))
    assert done.status.raw["error"]["reason"] == "TooManyDisruptions" and done.status.disruptions == MAX_DISRUPTIONS


def test_pod_view_unschedulable_and_time_parsing():
    p = pod(scheduled="2026-01-01T00:00:10Z")
    assert p.unschedulable_since == epoch_of("2026-01-01T00:00:10Z")
    assert epoch_of("2026-01-01T00:00:10Z") == 1767225610
    assert epoch_of("2026-01-01T00:00:10.5Z") - epoch_of("2026-01-01T00:00:10Z") == 0.5
    assert epoch_of("2026-01-01T00:00:10.000001Z") > epoch_of("2026-01-01T00:00:10Z")
    assert epoch_of(None) is None and epoch_of("") is None
    assert pod(phase="Running", scheduled="2026-01-01T00:00:10Z").unschedulable_since is None
    assert pod(143, disrupted=True).disrupted and not pod(1).disrupted
