"""Failure classification from Job and pod objects (plain dicts as the API returns them)."""

from __future__ import annotations

import json

from schedgen.operator.outcome import classify
from schedgen.operator.views import epoch_of, job_view, pod_view


def job(conditions=(), active=0, succeeded=0, failed=0) -> dict:
    return job_view({"metadata": {"name": "pj-1", "uid": "j1"},
                     "status": {"active": active, "succeeded": succeeded, "failed": failed,
                                "conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                               for t, r, m in conditions]}})


def pod(exit_code=None, message="", reason=None, finished="2026-01-01T00:00:05Z", phase=None, scheduled=None) -> dict:
    status: dict = {"phase": phase or ("Succeeded" if exit_code == 0 else "Failed" if exit_code else "Pending")}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "runner", "state": {"terminated": {
            "exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "message": message, "finishedAt": finished}}}]
    if scheduled:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "lastTransitionTime": scheduled}]
    return pod_view({"metadata": {"name": f"pod-{finished}", "labels": {"batch.kubernetes.io/job-name": "pj-1"},
                                  "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status})


OK = json.dumps({"ok": True, "kind": "lecture", "events": 30, "pages": 2, "seconds": 0.4})


def test_running_is_no_outcome():
    assert classify(job(active=1), [pod(phase="Running")]) is None


def test_success_takes_the_runner_summary():
    out = classify(job([("Complete", "", "")], succeeded=1), [pod(0, OK)])
    assert out.phase == "Succeeded" and out.attempts == 1
    assert out.result == {"kind": "lecture", "events": 30, "pages": 2, "parseSeconds": 0.4}


def test_a_runner_pod_that_succeeded_is_success_before_the_job_is_complete():
    """The Job controller marks the Job Complete about 2 s after the pod's phase turns
    Succeeded; the pod (its result object written) decides at once."""
    out = classify(job(active=1), [pod(0, OK)])
    assert out.phase == "Succeeded" and out.result["events"] == 30 and out.attempts == 1
    # after a transient failure the Job's second pod succeeds: two attempts
    retried = classify(job(active=1, failed=1), [pod(1, "", finished="2026-01-01T00:00:03Z"), pod(0, OK)])
    assert retried.phase == "Succeeded" and retried.attempts == 2
    # a failed pod alone, the Job not yet failed: the Job may retry, no outcome yet
    assert classify(job(active=1, failed=1), [pod(1, "")]) is None
    # the container exited 0 but the pod is not terminal yet: it still holds its CPU
    # request in the scheduler, so its slot is not free yet
    assert classify(job(active=1), [pod(0, OK, phase="Running")]) is None


def test_bad_input_is_invalid_pdf_with_the_runners_code():
    msg = json.dumps({"ok": False, "code": "UnknownScheduleType", "message": "not a UP schedule"})
    out = classify(job([("Failed", "PodFailurePolicy", "Container runner ... exit code 2")], failed=1), [pod(2, msg)])
    assert (out.phase, out.reason, out.code, out.message) == ("Failed", "InvalidPDF", "UnknownScheduleType",
                                                              "not a UP schedule")
    assert out.attempts == 1


def test_misconfigured():
    msg = json.dumps({"ok": False, "code": "ConfigurationError", "message": "SCHEDGEN_S3_KEY is required"})
    out = classify(job([("Failed", "PodFailurePolicy", "")], failed=1), [pod(3, msg)])
    assert out.reason == "Misconfigured" and out.code == "ConfigurationError"


def test_deadline():
    out = classify(job([("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")], failed=1),
                   [pod(137, "", reason="Error")])
    assert out.reason == "DeadlineExceeded"


def test_oom_from_the_container_state():
    pods = [pod(137, "", "OOMKilled", finished=f"2026-01-01T00:00:0{i}Z") for i in range(3)]
    out = classify(job([("Failed", "BackoffLimitExceeded", "")], failed=3), pods)
    assert out.reason == "OOMKilled" and out.attempts == 3 and out.code == "MemoryLimitExceeded"


def test_oom_kill_fails_the_job_at_once_as_bad_input():
    """The pod failure policy fails the Job on exit 137 after one pod: reported as the
    memory limit (code MemoryLimitExceeded, like the runner's own typed error)."""
    out = classify(job([("Failed", "PodFailurePolicy", "Container runner for pod x failed with exit code 137")],
                       failed=1), [pod(137, "", "OOMKilled")])
    assert (out.phase, out.reason, out.code, out.attempts) == ("Failed", "OOMKilled", "MemoryLimitExceeded", 1)


def test_a_sigkill_without_the_failure_policy_is_not_called_oom():
    out = classify(job([("Failed", "BackoffLimitExceeded", "")], failed=1), [pod(137, "", "Error")])
    assert out.reason == "BackoffLimitExceeded"


def test_backoff_limit_keeps_the_last_runner_message():
    first = json.dumps({"ok": False, "code": "StorageUnavailable", "message": "s3 down"})
    last = json.dumps({"ok": False, "code": "DatabaseUnavailable", "message": "pg down"})
    pods = [pod(1, first, finished="2026-01-01T00:00:01Z"), pod(1, last, finished="2026-01-01T00:00:09Z")]
    out = classify(job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")],
                       failed=2), pods)
    assert (out.reason, out.code, out.message, out.attempts) == ("BackoffLimitExceeded", "DatabaseUnavailable",
                                                                 "pg down", 2)


def test_garbage_termination_message_is_tolerated():
    out = classify(job([("Failed", "BackoffLimitExceeded", "")], failed=1), [pod(1, "Traceback: boom")])
    assert out.reason == "BackoffLimitExceeded" and out.message == "Traceback: boom" and out.code is None


def test_pod_view_unschedulable_and_time_parsing():
    p = pod(scheduled="2026-01-01T00:00:10Z")
    assert p["unschedulableSince"] == epoch_of("2026-01-01T00:00:10Z")
    assert epoch_of("2026-01-01T00:00:10.5Z") - epoch_of("2026-01-01T00:00:10Z") == 0.5
