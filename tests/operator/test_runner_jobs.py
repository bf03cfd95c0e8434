"""The two kinds of runner Job (runner_jobs.SINGLE, runner_jobs.BATCH): their names, the
batch Job, which live Job the operator may adopt, how a batch member's run ends, and
the typed view of a runner Job (runner_objects.RunnerJob)."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid

from hypothesis import given
from hypothesis import strategies as st

from credentials import assert_no_credentials, assert_run_file_holds_no_credentials
from parsejobs import parsejob
from schedgen.operator.config import OperatorConfig
from schedgen.operator.job_template import effective_resources
from schedgen.operator.outcome import NotReached, Parsed, RunFailed, conclude
from schedgen.operator.runner_jobs import BATCH, SINGLE, kind_of
from schedgen.operator.runner_objects import RunnerJob, RunnerPod
from schedgen.parsejob import ANN_MEMBERS, ParseJob

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def member(i: int, seq: int = 1, **spec) -> ParseJob:
    return parsejob(f"up-{i}", namespace="team-a", uid=f"0000000{i}-aaaa-bbbb-cccc-dddddddddddd", tenant="team-a",
                    deadlineSeconds=100, status={"phase": "Queued", "transitionSeq": seq}, **spec)


def urls_of(members: list[ParseJob]) -> dict:
    return {m.uid: {"source": f"http://s3/src-{i}?X-Amz-Signature=s", "result": f"http://s3/res-{i}?X-Amz-Signature=r"}
            for i, m in enumerate(members)}


def ended(job: dict, condition: str = "Complete") -> RunnerJob:
    return RunnerJob.of({**job, "status": {"conditions": [{"type": condition, "status": "True"}]}})


# --- names ----------------------------------------------------------------------------------


def test_a_single_jobs_name_is_deterministic_per_transition():
    uid = "0b5c9a3e-1111-2222-3333-444455556666"
    pj = parsejob("my.upload", uid=uid, status={"phase": "Queued", "transitionSeq": 3})
    assert SINGLE.name([pj]) == SINGLE.name([pj]) == "my-upload-0b5c9a3e-3"
    other = parsejob("my.upload", uid="ffffffff-0000-0000-0000-000000000000",
                     status={"phase": "Queued", "transitionSeq": 3})
    assert SINGLE.name([other]) != SINGLE.name([pj])
    retried = pj.with_status({"phase": "Queued", "transitionSeq": 5})  # back from the queue: a new Job
    assert SINGLE.name([retried]) == "my-upload-0b5c9a3e-5"
    long = SINGLE.name([parsejob("x" * 253, uid=uid, status={"transitionSeq": 12})])
    assert len(long) <= 63 and long.endswith("-0b5c9a3e-12") and DNS_LABEL.match(long)


# DNS subdomains (a ParseJob's name): alphanumerics at both ends, "-" and "." inside
names = st.builds(lambda a, mid, z: a + mid + z, st.sampled_from("a0z"),
                  st.text(alphabet="az09-.", max_size=251), st.sampled_from(["", "9", "b"]))


@given(names, st.uuids(), st.integers(0, 10**6), st.lists(st.tuples(names, st.uuids()), min_size=1, max_size=5))
def test_names_are_valid_job_names(name, uid, seq, others):
    """A Job's name is a DNS-1123 label of at most 63 characters (its pods carry it in
    the job-name label), whatever the ParseJob's name (a DNS subdomain, up to 253)."""
    pj = parsejob(name, uid=str(uid), status={"phase": "Queued", "transitionSeq": seq})
    single = SINGLE.name([pj])
    assert len(single) <= 63 and DNS_LABEL.match(single), single
    batch = BATCH.name([pj] + [parsejob(n, uid=str(u), status={"transitionSeq": seq}) for n, u in others])
    assert len(batch) <= 63 and DNS_LABEL.match(batch), batch


# --- the batch Job --------------------------------------------------------------------------


def test_the_batch_job_runs_every_member_with_its_own_urls_and_no_credential():
    """Was: the batch Job was derived from the single Job (build_job, then changed). Now
    both fill the one template (job_template.runner_job): the same pod security and the
    default resources, and no pod retries either way (backoffLimit 0); the batch has no
    pod failure policy (any pod failure ends it: members it did not reach go back)."""
    members = [member(i) for i in range(3)]
    urls = urls_of(members)
    cfg = OperatorConfig()
    job = BATCH.build(members, cfg, urls)
    single = SINGLE.build([members[0]], cfg, {members[0].uid: urls[members[0].uid]})
    labels = job["metadata"]["labels"]
    assert labels["schedgen.io/batch"] == "true" and labels["schedgen.io/tenant"] == "team-a"
    assert labels["app.kubernetes.io/managed-by"] == "schedgen-operator"
    assert "schedgen.io/parsejob-uid" not in labels and "schedgen.io/parsejob" not in labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    refs = job["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [m.uid for m in members]
    assert not any(r["controller"] for r in refs)  # none decides alone; the Job goes with the last
    assert all(r["kind"] == "ParseJob" and r["blockOwnerDeletion"] for r in refs)
    assert json.loads(job["metadata"]["annotations"][ANN_MEMBERS]) == {m.uid: 1 for m in members}
    view = RunnerJob.of(job)
    assert view.owner is None and view.members == tuple(m.uid for m in members) and view.is_batch
    assert view.member_seqs == {m.uid: 1 for m in members} and kind_of(view) is BATCH
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 300  # the members' deadlines
    assert "podFailurePolicy" not in spec and "podFailurePolicy" in single["spec"]
    pod, one = spec["template"]["spec"], single["spec"]["template"]["spec"]
    assert pod["securityContext"] == one["securityContext"] and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"] == one["containers"][0]["securityContext"]
    assert pod["containers"][0]["resources"] == one["containers"][0]["resources"] == effective_resources(None, cfg)
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert "SCHEDGEN_SOURCE_URL" not in env and "SCHEDGEN_JOB_UID" not in env
    assert env["SCHEDGEN_RUN_FILE"] == "/run/schedgen/run.json"
    secret = BATCH.secret(members, cfg, urls)
    assert secret["metadata"]["name"] == job["metadata"]["name"]
    assert secret["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"]
    items = assert_run_file_holds_no_credentials(secret)
    assert [i["SCHEDGEN_JOB_UID"] for i in items] == [m.uid for m in members]
    assert [i["SCHEDGEN_JOB_NAME"] for i in items] == [m.name for m in members]
    assert [i["SCHEDGEN_SOURCE_URL"] for i in items] == [urls[m.uid]["source"] for m in members]
    assert [i["SCHEDGEN_RESULT_URL"] for i in items] == [urls[m.uid]["result"] for m in members]
    assert_no_credentials(job, run_secret=secret)
    again = BATCH.build(list(reversed(members)), cfg, urls)
    assert again["metadata"]["name"].rsplit("-", 1)[1] == job["metadata"]["name"].rsplit("-", 1)[1]
    later = [m.with_status({"phase": "Queued", "transitionSeq": 4}) for m in members]
    assert BATCH.build(later, cfg, urls)["metadata"]["name"] != job["metadata"]["name"]  # back from the queue


# --- adoption -------------------------------------------------------------------------------


def test_a_single_job_is_named_for_the_transition_it_was_made_for():
    pj = member(1, seq=1)
    job = SINGLE.build([pj], OperatorConfig(), urls_of([pj]))
    view = RunnerJob.of(job)
    assert view.owner == pj.uid and view.runs(pj.uid) and kind_of(view) is SINGLE
    assert SINGLE.made_for(pj, view)
    assert not SINGLE.made_for(pj.with_status({"phase": "Queued", "transitionSeq": 3}), view)
    batch = RunnerJob.of(BATCH.build([pj, member(2)], OperatorConfig(), urls_of([pj, member(2)])))
    assert not SINGLE.made_for(pj, batch)


def test_a_batch_job_records_the_transitions_of_the_members_it_was_made_for():
    members = [member(1), member(2)]
    job = BATCH.build(members, OperatorConfig(), urls_of(members))
    view = RunnerJob.of(job)
    assert all(BATCH.made_for(m, view) for m in members)
    assert not BATCH.made_for(member(1, seq=3), view)
    assert not BATCH.made_for(member(3), view)
    single = RunnerJob.of(SINGLE.build([members[0]], OperatorConfig(), urls_of(members[:1])))
    assert not BATCH.made_for(members[0], single)


# --- how a batch member's run ends ---------------------------------------------------------


def test_a_member_is_decided_by_its_result_object_or_the_end_of_its_job():
    members = [member(1), member(2)]
    job = BATCH.build(members, OperatorConfig(), urls_of(members))
    live = RunnerJob.of({**job, "status": {"active": 1}})
    assert BATCH.run_end(members[0], live, [], listed={members[0].uid}) == Parsed()
    assert BATCH.run_end(members[1], live, [], listed={members[0].uid}) is None
    assert BATCH.run_end(members[1], ended(job, "Failed"), [], listed=()) == Parsed()  # the object decides
    assert BATCH.run_end(members[1], ended(job), [], listed=()) == Parsed()


def test_a_member_not_reached_goes_back_uncounted():
    running = member(1).with_status({"phase": "Running", "priorAttempts": 2, "attempts": 3, "jobName": "batch-x",
                                     "batchSize": 2})
    members = [member(1), member(2)]
    job = BATCH.build(members, OperatorConfig(), urls_of(members))
    assert BATCH.without_result(running, RunnerJob.of({**job, "status": {"active": 1}}), None) is None  # may come
    end = BATCH.without_result(running, ended(job), None)
    assert end == BATCH.without_result(running, None, "Job batch-x disappeared") == \
        NotReached("Job batch-x ended before this ParseJob's turn")
    out = conclude(running, end, 10)
    assert (out.reason, out.counted, out.delay) == ("BatchEnded", False, 0.0)


def test_a_single_run_without_its_result():
    pj = member(1).with_status({"phase": "Running", "priorAttempts": 0, "attempts": 1, "jobName": "x"})
    assert SINGLE.without_result(pj, None, "Job x disappeared").reason == "JobLost"
    assert SINGLE.without_result(pj, None, None).reason == "InvalidResult"
    assert SINGLE.job_to_stop(pj) == "x" and BATCH.job_to_stop(pj) is None


def runner_pod(disrupted: bool) -> RunnerPod:
    conditions = [{"type": "DisruptionTarget", "status": "True"}] if disrupted else []
    return RunnerPod.of({"metadata": {"name": "p"}, "status": {"phase": "Failed", "conditions": conditions}})


def test_failure_documents_decide_only_their_member():
    bad = BATCH.failed({"ok": False, "code": "TooLarge", "message": "big", "retry": False}, [], None)
    assert (bad.reason, bad.code, bad.transient, bad.counted) == ("InvalidPDF", "TooLarge", False, True)
    interrupted = {"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True}
    again = BATCH.failed(interrupted, [runner_pod(False)], None)
    assert again == RunFailed("BackoffLimitExceeded", "SIGTERM", "Interrupted", transient=True, counted=True)
    evicted = BATCH.failed(interrupted, [runner_pod(False), runner_pod(True)], None)
    assert evicted == RunFailed("BackoffLimitExceeded", "SIGTERM", "Interrupted", transient=True, counted=False)
    # a disruption excuses a transient failure only: bad input stays bad input
    assert BATCH.failed({"ok": False, "code": "TooLarge", "message": "big"}, [runner_pod(True)], None) == bad
    oom = BATCH.failed({"ok": False, "killed": "oom"}, [runner_pod(True)], None)
    # a transient one waits for its Job to end: the pod's DisruptionTarget comes after the document
    members = [member(1), member(2)]
    job = BATCH.build(members, OperatorConfig(), urls_of(members))
    assert BATCH.failed(interrupted, [runner_pod(False)], RunnerJob.of({**job, "status": {"active": 1}})) is None
    assert BATCH.failed(interrupted, [runner_pod(True)], ended(job, "Failed")).counted is False
    assert BATCH.failed(bad_doc := {"ok": False, "code": "TooLarge", "message": "big"}, [],
                        RunnerJob.of({**job, "status": {"active": 1}})).reason == "InvalidPDF", bad_doc
    assert (oom.reason, oom.counted) == ("OOMKilled", True)


def deleted_pod(phase: str, finished: str | None, deletion: str = "2026-01-01T00:01:30Z", grace: int = 30,
                owner: str = "j1") -> RunnerPod:
    """A runner pod whose deletion was asked for at 00:01:00 (deletionTimestamp less its grace)."""
    status: dict = {"phase": phase}
    if finished:
        status["containerStatuses"] = [{"name": "runner", "state": {"terminated": {
            "exitCode": 1, "reason": "Error", "message": "", "finishedAt": finished}}}]
    return RunnerPod.of({"metadata": {"name": "p", "deletionTimestamp": deletion, "deletionGracePeriodSeconds": grace,
                                      "ownerReferences": [{"kind": "Job", "uid": owner, "controller": True}]},
                         "status": status})


def test_a_pod_deleted_while_it_ran_was_stopped_from_outside():
    # deleted while Running (Karpenter's forced termination deletes a do-not-disrupt pod, no condition)
    assert deleted_pod("Running", None).stopped and deleted_pod("Pending", None).deleted
    # ended after its deletion was asked for: its SIGTERM (the intermediate event may be skipped)
    assert deleted_pod("Failed", "2026-01-01T00:01:02Z").deleted
    assert deleted_pod("Failed", "2026-01-01T00:01:00Z", deletion="2026-01-01T00:01:00Z", grace=0).deleted
    # ended by itself, deleted afterwards (a clean-up): not stopped
    assert not deleted_pod("Failed", "2026-01-01T00:00:40Z").deleted
    assert not deleted_pod("Succeeded", "2026-01-01T00:00:58Z").stopped
    assert not runner_pod(False).stopped and runner_pod(True).stopped  # DisruptionTarget


def test_a_batch_member_stopped_by_its_pods_deletion_is_not_counted_unless_its_deadline_did_it():
    interrupted = {"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True}
    members = [member(1), member(2)]
    body = BATCH.build(members, OperatorConfig(), urls_of(members))
    failed = RunnerJob.of({**body, "metadata": {**body["metadata"], "uid": "j1"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}})
    stopped = BATCH.failed(interrupted, [deleted_pod("Failed", "2026-01-01T00:01:02Z")], failed)
    assert (stopped.transient, stopped.counted) == (True, False)
    # the pod already gone from the index: the Job remembered as disrupted (Scheduler.note_pod)
    assert BATCH.failed(interrupted, [], failed).counted is True
    assert BATCH.failed(interrupted, [], dataclasses.replace(failed, disrupted=True)).counted is False
    # the Job's own deadline deleted the pod: the run took too long, it counts
    past = RunnerJob.of({**body, "status": failed_status("DeadlineExceeded")})
    assert BATCH.failed(interrupted, [deleted_pod("Running", None)], past).counted is True
    assert BATCH.failed(interrupted, [runner_pod(True)], dataclasses.replace(past, disrupted=True)).counted is True


def failed_status(reason: str) -> dict:
    return {"conditions": [{"type": "Failed", "status": "True", "reason": reason}]}


def test_a_single_run_whose_pod_was_deleted_while_it_ran_is_not_counted():
    pj = member(1).with_status({"phase": "Running", "priorAttempts": 0, "attempts": 1})
    body = SINGLE.build([pj], OperatorConfig(), urls_of([pj]))
    job = RunnerJob.of({**body, "metadata": {**body["metadata"], "uid": "j1"},
                        "status": failed_status("BackoffLimitExceeded")})
    end = SINGLE.run_end(pj, job, [deleted_pod("Failed", "2026-01-01T00:01:02Z")], ())
    assert (end.reason, end.transient, end.counted) == ("BackoffLimitExceeded", True, False)
    assert conclude(pj, end, 10).reason == "Disrupted"
    failed_alone = RunnerPod.of({"metadata": {"name": "p", "ownerReferences": [{"kind": "Job", "uid": "j1",
                                                                                 "controller": True}]},
                                 "status": {"phase": "Failed", "containerStatuses": [{"name": "runner", "state": {
                                     "terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:01:02Z"}}}]}})
    assert SINGLE.run_end(pj, job, [failed_alone], ()).counted is True
    assert SINGLE.run_end(pj, dataclasses.replace(job, disrupted=True), [], ()).counted is False


# --- the typed runner Job -------------------------------------------------------------------


def test_only_the_controller_reference_ties_a_job_to_its_parsejob():
    pj = member(1)
    uid = pj.uid
    labelled = RunnerJob.of({"metadata": {"name": "j", "uid": "j1", "labels": {"schedgen.io/parsejob-uid": uid},
                                          "ownerReferences": [{"kind": "ParseJob", "uid": uid, "controller": False},
                                                              {"kind": "Other", "uid": uid, "controller": True}]}})
    assert labelled.owner is None and not labelled.runs(uid) and not labelled.is_batch
    # members come from a batch Job's references, never from a label alone
    not_batch = RunnerJob.of({"metadata": {"name": "j", "ownerReferences": [{"kind": "ParseJob", "uid": uid}]}})
    assert not_batch.members == () and not not_batch.runs(uid)


def test_the_runner_job_view():
    body = {"metadata": {"name": "batch-x", "uid": "j9", "labels": {"schedgen.io/batch": "true"},
                         "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-01T00:01:00Z",
                         "annotations": {ANN_MEMBERS: json.dumps({"u1": 3, "u2": "x"})},
                         "ownerReferences": [{"kind": "ParseJob", "uid": "u1"}, {"kind": "ParseJob", "uid": "u2"},
                                             {"kind": "ParseJob", "uid": "u3", "controller": True}]},
            "spec": {"suspend": True, "activeDeadlineSeconds": 200},
            "status": {"active": 1, "failed": 2, "conditions": [
                {"type": "Failed", "status": "False", "reason": "x"},
                {"type": "Complete", "status": "False"}]}}
    job = RunnerJob.of(body)
    assert job.members == ("u1", "u2") and job.member_seqs == {"u1": 3}  # a non-number seq is no seq
    assert job.runs("u2") and not job.runs("u3")
    assert (job.active, job.failed, job.complete, job.failure) == (1, 2, False, None)
    assert job.deleting and job.ended and job.suspended and job.deadline_seconds == 200
    garbled = RunnerJob.of({**body, "metadata": {**body["metadata"], "annotations": {ANN_MEMBERS: "{oops"}}})
    assert garbled.member_seqs == {}
    failed = RunnerJob.of({"metadata": {"name": "j"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}]}})
    assert failed.ended and (failed.failure.reason, failed.failure.message) == ("DeadlineExceeded", "too slow")
    assert not RunnerJob.of({"metadata": {"name": "j", "uid": str(uuid.uuid4())}}).ended
