"""The scheduling tick against an in-memory API (the cluster tests use the real one)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import uuid

import pytest

from schedgen.operator.config import OperatorConfig, RuntimeConfig
from schedgen.operator.kube import Conflict, NotFound
from schedgen.operator.result_store import ResultStore
from schedgen.operator.runner_objects import RunnerJob, RunnerPod
from schedgen.operator.scheduler import Scheduler, Stuck
from schedgen import queue_summary
from schedgen.parsejob import ParseJob, result_key

_rv = itertools.count(1)


class FakeKube:
    """Just enough of kube.Kube: ParseJobs, Jobs, status preconditions, events."""

    def __init__(self, s3=None) -> None:
        self.s3 = s3  # the real S3 server: the runner's result objects
        self.run = uuid.uuid4().hex[:8]  # S3 outlives the test: uids unique per test
        self.parsejobs: dict[tuple[str, str], dict] = {}
        self.jobs: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict] = {}
        self.configmaps: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes = 0

    def add(self, name: str, tenant: str = "t", priority: str = "normal", ns: str = "ns", t: int = 0) -> dict:
        body = {"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
                "metadata": {"name": name, "namespace": ns, "uid": f"uid-{self.run}-{name}", "generation": 1,
                             "resourceVersion": str(next(_rv)),
                             "creationTimestamp": f"2026-01-01T00:{t // 60:02d}:{t % 60:02d}Z"},
                "spec": {"source": {"s3": {"key": f"uploads/namespaces/{ns}/{name}.pdf"}}, "tenant": tenant,
                         "priority": priority,
                         "deadlineSeconds": 60, "maxRetries": 1}, "status": {}}
        self.parsejobs[(ns, name)] = body
        return body

    async def create_job(self, job: dict) -> str | None:
        self.writes += 1
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        if key in self.jobs:
            return None
        self.jobs[key] = copy.deepcopy(job)
        uid = self.jobs[key]["metadata"]["uid"] = f"job-uid-{key[1]}-{uuid.uuid4().hex[:6]}"  # the API server's
        return uid

    async def patch_configmap(self, namespace: str, name: str, data: dict) -> None:
        self.writes += 1
        self.configmaps[(namespace, name)] = dict(data)

    async def put_secret(self, secret: dict) -> None:
        self.writes += 1
        self.secrets[(secret["metadata"]["namespace"], secret["metadata"]["name"])] = copy.deepcopy(secret)

    async def namespace_labels(self, namespace: str) -> dict:
        return {}  # unbound namespaces (tenant binding: tests/operator/test_tenant_binding.py, real API)

    async def job_uid(self, namespace: str, name: str) -> str | None:
        job = self.jobs.get((namespace, name))
        return job["metadata"]["uid"] if job else None

    async def delete_job(self, namespace: str, name: str) -> None:
        self.writes += 1
        self.jobs.pop((namespace, name), None)

    async def replace_status(self, namespace, name, status, expect_seq):
        self.writes += 1
        body = self.parsejobs.get((namespace, name))
        if body is None:
            raise NotFound(name)
        if int(body["status"].get("transitionSeq") or 0) != expect_seq:
            raise Conflict("seq")
        body["status"] = copy.deepcopy(dict(status))
        body["metadata"]["resourceVersion"] = str(next(_rv))
        return body

    async def set_status_field(self, namespace, name, expect_seq, field, value):
        self.writes += 1
        body = self.parsejobs[(namespace, name)]
        if int(body["status"].get("transitionSeq") or 0) != expect_seq:
            raise Conflict("seq")
        body["status"][field] = value

    def emit(self, obj, type_, reason, message):
        self.events.append((obj["metadata"]["name"], type_, reason))

    # --- what the kopf indexes would hold (as handlers.py builds them) ------------------
    def indexes(self, stale: dict | None = None):
        pj = {k: [ParseJob.of(copy.deepcopy((stale or {}).get(k, v)))] for k, v in self.parsejobs.items()}
        jobs: dict = {}
        pods = {}
        for (ns, name), body in self.jobs.items():
            job = RunnerJob.of(body)
            for uid in job.members or (job.owner or "",):
                jobs.setdefault((ns, uid), []).append(job)
            pods[(ns, name)] = [RunnerPod.of(p) for p in body.get("_pods", [])]
        return pj, jobs, pods

    def put_result(self, name: str, document: bytes | None = None, ns: str = "ns") -> None:
        """What a runner PUTs to its presigned result URL (default: a 30-event lecture)."""
        if document is None:
            event = {"module": "COS 214", "activity": "L1", "day": "Monday", "startTime": "08:30", "venues": ["IT 4-1"]}
            document = json.dumps({"kind": "lecture", "pages": 2, "seconds": 0.1, "events": [event] * 30}).encode()
        self.s3.client.put_object(Bucket=self.s3.bucket, Key=result_key(ns, f"uid-{self.run}-{name}"), Body=document)

    def job_of(self, name: str) -> tuple[tuple[str, str], dict]:
        """The live Job of ParseJob `name` (the one its status names)."""
        job_name = self.parsejobs[next(k for k in self.parsejobs if k[1] == name)]["status"]["jobName"]
        return next((k, j) for k, j in self.jobs.items() if k[1] == job_name)

    def finish_job(self, name: str, exit_code: int = 0, message: str | None = None, reason: str | None = None,
                   job_reason: str | None = None, result: bool = True) -> None:
        key, job = self.job_of(name)
        if exit_code == 0 and result:
            self.put_result(name, ns=key[0])
        msg = message if message is not None else json.dumps({"ok": True, "kind": "lecture", "events": 30,
                                                              "pages": 2, "seconds": 0.1})
        job.setdefault("_pods", []).append({
            "metadata": {"name": f"{key[1]}-p", "labels": {"batch.kubernetes.io/job-name": key[1]},
                         "ownerReferences": [{"kind": "Job", "name": key[1], "uid": job["metadata"]["uid"],
                                              "controller": True}],
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed",
                       "containerStatuses": [{"name": "runner", "state": {"terminated": {
                           "exitCode": exit_code, "reason": reason or "Completed", "message": msg,
                           "finishedAt": "2026-01-01T00:00:05Z"}}}]}})
        cond = ("Complete", "Completed") if exit_code == 0 else (
            "Failed", job_reason or ("PodFailurePolicy" if exit_code in (2, 3, 137) else "BackoffLimitExceeded"))
        job["status"] = {"succeeded": int(exit_code == 0), "failed": int(exit_code != 0),
                         "conditions": [{"type": cond[0], "status": "True", "reason": cond[1], "message": ""}]}


def runtime(**kw) -> RuntimeConfig:
    # one ParseJob per Job here (batch mode: test_scheduler_batches.py and the e2e tests)
    base = dict(max_concurrent=2, max_per_tenant=2, admissions_per_second=1000.0, admission_burst=1000,
                queue_position_interval_seconds=0.5, batch_size=1, retry_backoff_seconds=0)
    base.update(kw)
    return RuntimeConfig(**base)


def phases(kube: FakeKube) -> dict[str, str]:
    """As the API server shows them: a ParseJob never written reads Queued (the CRD's default)."""
    return {k[1]: v["status"].get("phase") or "Queued" for k, v in kube.parsejobs.items()}


def status(kube: FakeKube, name: str, ns: str = "ns") -> dict:
    return kube.parsejobs[(ns, name)]["status"]


def make_scheduler(kube: FakeKube) -> Scheduler:
    cfg = OperatorConfig(default_bucket=kube.s3.bucket, s3_endpoint_url=kube.s3.endpoint_url)
    # the operator's own S3 user: what it may do is what the real one may (hack/s3iam.py)
    return Scheduler(cfg, kube, ResultStore(cfg, kube.s3.client_for("operator")), records=None)  # type: ignore[arg-type]


@pytest.fixture
def setup(s3):
    kube = FakeKube(s3)
    loop = asyncio.new_event_loop()
    sched = make_scheduler(kube)
    yield kube, sched, loop
    for task in sched.in_flight.tasks:  # held at a gate of a test that failed
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def tick(loop, sched, kube, rt=None, stale=None, settle=True):
    """One tick, and (`settle`) the writes it decided: a tick returns before they are done."""
    loop.run_until_complete(sched.tick(rt or runtime(), sched.snapshot(*kube.indexes(stale))))
    if settle:
        loop.run_until_complete(sched.settle())
    else:  # the writes go on as far as they can (to a gate of the test's)
        loop.run_until_complete(asyncio.sleep(0.05))


def test_admits_up_to_the_cap_then_follows_to_success(setup):
    kube, sched, loop = setup
    for i in range(4):
        kube.add(f"pj{i}", t=i)
    tick(loop, sched, kube)
    assert phases(kube) == {"pj0": "Running", "pj1": "Running", "pj2": "Queued", "pj3": "Queued"}
    assert len(kube.jobs) == 2
    # the waiting are not written at all: their places are in the published queue summary
    assert status(kube, "pj2") == {} and status(kube, "pj3") == {}
    summary = kube.configmaps[("schedgen-system", "schedgen-operator-queue")]
    assert queue_summary.position_of(summary, "ns", "pj2") == 1 and queue_summary.position_of(summary, "ns", "pj3") == 2
    assert json.loads(summary["summary"])["waiting"] == 2 and json.loads(summary["summary"])["running"] == 2
    # admitted straight from nothing: one status write holds both transitions
    assert [h["phase"] for h in status(kube, "pj0")["history"]] == ["Queued", "Running"]
    kube.finish_job("pj0")
    tick(loop, sched, kube)
    p = phases(kube)
    assert p["pj0"] == "Succeeded" and p["pj2"] == "Running" and p["pj3"] == "Queued"
    assert status(kube, "pj0")["result"]["events"] == 30
    assert (status(kube, "pj0")["attempts"], ("pj0", "Normal", "Succeeded") in kube.events) == (1, True)


def test_stale_index_never_admits_or_records_twice(setup):
    kube, sched, loop = setup
    kube.add("a")
    stale = {("ns", "a"): copy.deepcopy(kube.parsejobs[("ns", "a")])}
    tick(loop, sched, kube)
    first = copy.deepcopy(status(kube, "a"))
    tick(loop, sched, kube, stale=stale)  # the watch has not delivered our write yet
    tick(loop, sched, kube, stale=stale)
    assert status(kube, "a") == first and len(kube.jobs) == 1


def test_a_job_no_running_parsejob_records_is_deleted_not_adopted(setup):
    """The operator stopped between creating a Job and recording Running (or someone made
    a Job with the name): only a Job whose uid the operator recorded is a run's. The
    orphan goes; the ParseJob moves to a new transitionSeq (its next Job a new name),
    keeps its place and attempts, and is admitted under the caps like any other."""
    kube, sched, loop = setup
    kube.add("a", t=0)
    kube.add("b", t=1)
    tick(loop, sched, kube, runtime(max_concurrent=1))
    orphan = status(kube, "a")["jobName"]
    kube.parsejobs[("ns", "a")]["status"] = {}  # as if the Running write was lost
    sched2 = make_scheduler(kube)  # a new operator process
    tick(loop, sched2, kube, runtime(max_concurrent=1))
    s = status(kube, "a")
    assert orphan not in {k[1] for k in kube.jobs}
    assert (s["phase"], s["attempts"], s["history"][-1]["reason"]) == ("Queued", 0, "JobReplaced"), s
    assert [n for n, p in phases(kube).items() if p == "Running"] == ["b"]  # the orphan held no slot
    kube.finish_job("b")
    tick(loop, sched2, kube, runtime(max_concurrent=1))
    s = status(kube, "a")
    assert s["phase"] == "Running" and s["jobName"] != orphan and s["jobUid"].startswith("job-uid-")
    assert [n for n, p in phases(kube).items() if p == "Running"] == ["a"]  # the cap held throughout


def test_a_job_replaced_under_the_same_name_is_not_the_runs(setup):
    """Its recorded uid tells the run's Job from another made under the same name after
    it was deleted: the run's Job is gone (JobLost, or its result object decides)."""
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    key, job = kube.job_of("a")
    job["metadata"]["uid"] = "impostor-uid"  # deleted and made again by someone else
    kube.finish_job("a")  # the impostor "succeeds" (and its result object is there: ours would be)
    s3_key = result_key("ns", kube.parsejobs[("ns", "a")]["metadata"]["uid"])
    kube.s3.client.delete_object(Bucket=kube.s3.bucket, Key=s3_key)
    status(kube, "a")["startedAt"] = "2020-01-01T00:00:00.000000Z"
    tick(loop, sched, kube)
    tick(loop, sched, kube)  # the reading task, collected
    s = status(kube, "a")
    assert (s["phase"], s["error"]["reason"]) == ("Failed", "JobLost"), s


def test_a_suspended_or_stuck_run_ends_at_the_operators_deadline(setup):
    """A Job that never ends (suspended by someone with Job rights, pods that never
    start) holds its slot only until the run's deadline and a grace: DeadlineExceeded,
    its Job deleted, and the slot goes to the next."""
    kube, sched, loop = setup
    kube.add("stuck", t=0)
    kube.add("next", t=1)
    tick(loop, sched, kube, runtime(max_concurrent=1))
    key, job = kube.job_of("stuck")
    job["spec"]["suspend"] = True
    tick(loop, sched, kube, runtime(max_concurrent=1))
    assert phases(kube) == {"stuck": "Running", "next": "Queued"}  # within its deadline: it may go on
    status(kube, "stuck")["startedAt"] = "2020-01-01T00:00:00.000000Z"  # 60 s deadline long past
    tick(loop, sched, kube, runtime(max_concurrent=1))
    s = status(kube, "stuck")
    assert (s["phase"], s["error"]["reason"], s["attempts"]) == ("Failed", "DeadlineExceeded", 1), s
    assert key not in kube.jobs
    tick(loop, sched, kube, runtime(max_concurrent=1))
    assert phases(kube)["next"] == "Running"


@pytest.mark.parametrize("spec,reason", [
    ({"source": {"s3": {"key": "uploads/sha256/0123.pdf"}}}, "SourceNotAllowed"),  # legacy: API namespaces only
    ({"source": {"s3": {"key": "uploads/namespaces/other/sha256/0123.pdf"}}}, "SourceNotAllowed"),  # its API's
    ({"source": {"s3": {"key": "uploads/namespaces/other/x.pdf"}}}, "SourceNotAllowed"),  # another namespace's
    ({"source": {"s3": {"key": "results/ns/uid.json"}}}, "SourceNotAllowed"),
    ({"source": {"s3": {"key": "uploads/namespaces/ns/../other/x.pdf"}}}, "SourceNotAllowed"),
    ({"source": {"s3": {"bucket": "elsewhere", "key": "uploads/namespaces/ns/x.pdf"}}}, "SourceNotAllowed"),
    ({"resources": {"limits": {"cpu": "0", "memory": "0"}}}, "InvalidSpec"),
    ({"resources": {"requests": {"memory": "-1Mi"}}}, "InvalidSpec"),
])
def test_what_may_never_run_fails_at_admission_without_a_job(setup, spec, reason):
    kube, sched, loop = setup
    body = kube.add("a")
    body["spec"].update(spec)
    tick(loop, sched, kube)
    s = status(kube, "a")
    assert (s["phase"], s["error"]["reason"]) == ("Failed", reason) and not kube.jobs, s


def test_an_ended_job_of_an_earlier_run_is_not_adopted(setup):
    """After a retry the ParseJob waits at a new transitionSeq: its old, failed Job is
    not its Job any more, so it is not adopted; the next run gets a Job of its own."""
    kube, sched, loop = setup
    kube.add("a", t=0)
    tick(loop, sched, kube)
    first_job = status(kube, "a")["jobName"]
    kube.finish_job("a", 1, json.dumps({"ok": False, "code": "StorageUnavailable", "message": "S3 away"}))
    tick(loop, sched, kube)  # Retrying: back to the queue (retry_backoff_seconds 0)
    assert (status(kube, "a")["phase"], status(kube, "a")["attempts"]) == ("Queued", 1)
    tick(loop, sched, kube)
    s = status(kube, "a")
    assert s["phase"] == "Running" and s["jobName"] != first_job and len(kube.jobs) == 2
    assert (s["attempts"], s["priorAttempts"]) == (2, 1)


def test_failure_classification_reaches_the_status(setup):
    kube, sched, loop = setup
    kube.add("bad")
    tick(loop, sched, kube)
    kube.finish_job("bad", 2, json.dumps({"ok": False, "code": "NotAPDF", "message": "not a PDF"}))
    tick(loop, sched, kube)
    s = status(kube, "bad")
    assert s["phase"] == "Failed" and s["error"] == {"reason": "InvalidPDF", "code": "NotAPDF", "message": "not a PDF"}
    assert s["attempts"] == 1 and ("bad", "Warning", "InvalidPDF") in kube.events


def test_transient_failures_are_retried_as_new_runs_then_fail(setup):
    """maxRetries 1: two runs, each a Job of its own; attempts count them exactly; the
    second failure is final (BackoffLimitExceeded, the runner's last code kept)."""
    kube, sched, loop = setup
    kube.add("flaky")
    failure = json.dumps({"ok": False, "code": "StorageUnavailable", "message": "S3 away"})
    seen = []
    for _ in range(2):
        tick(loop, sched, kube)
        assert status(kube, "flaky")["phase"] == "Running"
        seen.append(status(kube, "flaky")["attempts"])
        kube.finish_job("flaky", 1, failure)
        tick(loop, sched, kube)
    s = status(kube, "flaky")
    assert seen == [1, 2] and s["phase"] == "Failed" and s["attempts"] == 2, s
    assert s["error"] == {"reason": "BackoffLimitExceeded", "code": "StorageUnavailable", "message": "S3 away"}
    assert len(kube.jobs) == 2 and ("flaky", "Normal", "Retrying") in kube.events


def test_a_retry_waits_for_its_delay(setup):
    kube, sched, loop = setup
    kube.add("flaky")
    tick(loop, sched, kube)
    kube.finish_job("flaky", 1, json.dumps({"ok": False, "code": "StorageUnavailable", "message": "S3 away"}))
    rt = runtime(retry_backoff_seconds=30)
    tick(loop, sched, kube, rt)
    s = status(kube, "flaky")
    assert s["phase"] == "Queued" and "retryAfter" in s
    tick(loop, sched, kube, rt)
    assert status(kube, "flaky")["phase"] == "Queued" and len(kube.jobs) == 1  # not before its delay
    s["retryAfter"] = "2020-01-01T00:00:00.000000Z"  # the delay is over
    tick(loop, sched, kube, rt)
    assert status(kube, "flaky")["phase"] == "Running" and "retryAfter" not in status(kube, "flaky")


def test_job_lost(setup):
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    kube.jobs.clear()
    status(kube, "a")["startedAt"] = "2020-01-01T00:00:00.000000Z"
    tick(loop, sched, kube)
    assert status(kube, "a")["error"]["reason"] == "JobLost"


def test_a_vanished_job_that_left_its_result_succeeds(setup):
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    kube.put_result("a")  # the runner finished, then the Job was deleted (TTL, by hand)
    kube.jobs.clear()
    status(kube, "a")["startedAt"] = "2020-01-01T00:00:00.000000Z"
    tick(loop, sched, kube)
    s = status(kube, "a")
    assert s["phase"] == "Succeeded" and s["result"]["events"] == 30 and s["result"]["kind"] == "lecture"


@pytest.mark.parametrize("document,fragment", [
    (None, "wrote no result object"),
    (b"not json", "not JSON"),
    (b"[" * 100_000, "nests deeper"),  # json.loads would raise RecursionError
    (json.dumps({"kind": "lecture", "pages": 1, "seconds": 0.1,
                 "events": [{"module": "M", "activity": 7}]}).encode(), "activity must be a string"),
])
def test_a_bad_result_object_fails_the_parsejob(setup, document, fragment):
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    kube.finish_job("a", result=False)
    if document is not None:
        kube.put_result("a", document)
    tick(loop, sched, kube)
    s = status(kube, "a")
    assert s["phase"] == "Failed" and s["error"]["reason"] == "InvalidResult", s
    assert fragment in s["error"]["message"]


def test_a_hostile_termination_message_is_not_a_summary(setup):
    """4 KiB of "[" as the runner's termination message: the ParseJob still ends, by its
    exit code, and the tick goes on for the others."""
    kube, sched, loop = setup
    kube.add("a", t=0)
    kube.add("b", t=1)
    tick(loop, sched, kube)
    kube.finish_job("a", 2, "[" * 4096)
    kube.finish_job("b")
    tick(loop, sched, kube)
    assert status(kube, "a")["error"]["reason"] == "InvalidPDF" and status(kube, "b")["phase"] == "Succeeded"


def test_priorities_and_tenant_turns(setup):
    kube, sched, loop = setup
    for i in range(5):
        kube.add(f"flood{i}", tenant="flood", t=i)
    kube.add("lone", tenant="lone", t=30)
    kube.add("urgent", tenant="flood", priority="high", t=59)
    tick(loop, sched, kube, runtime(max_concurrent=2, max_per_tenant=5))
    running = sorted(n for n, p in phases(kube).items() if p == "Running")
    assert running == ["flood0", "urgent"]
    kube.finish_job("urgent")
    tick(loop, sched, kube, runtime(max_concurrent=2, max_per_tenant=5))
    assert phases(kube)["lone"] == "Running"  # the lone tenant's turn before flood1


def test_deleting_parsejobs_are_left_to_the_finalizer(setup):
    kube, sched, loop = setup
    b = kube.add("a")
    b["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    tick(loop, sched, kube)
    assert status(kube, "a") == {} and not kube.jobs


def test_write_budget_per_parsejob(setup):
    kube, sched, loop = setup
    for i in range(20):
        kube.add(f"pj{i}", tenant=f"t{i % 3}", t=i)
    rt = runtime(max_concurrent=4, max_per_tenant=4, queue_position_interval_seconds=1000)
    for _ in range(200):
        tick(loop, sched, kube, rt)
        for name, phase in phases(kube).items():
            if phase == "Running" and not kube.job_of(name)[1].get("status"):
                kube.finish_job(name)
        if all(p == "Succeeded" for p in phases(kube).values()):
            break
    assert all(p == "Succeeded" for p in phases(kube).values())
    loop.run_until_complete(asyncio.sleep(0))
    writes_per_job = (kube.writes + len(kube.events)) / 20
    assert writes_per_job <= 6, writes_per_job


def test_cancel_stops_the_job_and_records_cancelled_once(setup):
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    running = ParseJob.of(copy.deepcopy(kube.parsejobs[("ns", "a")]))
    final = loop.run_until_complete(sched.cancel(running))
    s = status(kube, "a")
    assert not kube.jobs and s == dict(final.status.raw)
    assert [h["phase"] for h in s["history"]] == ["Queued", "Running", "Cancelled"]
    assert s["error"]["reason"] == "Cancelled" and ("a", "Normal", "Cancelled") in kube.events
    with pytest.raises(Conflict):  # a stale body: the status moved on meanwhile
        loop.run_until_complete(sched.cancel(running))
    writes = kube.writes
    again = loop.run_until_complete(sched.cancel(ParseJob.of(kube.parsejobs[("ns", "a")])))
    assert dict(again.status.raw) == s and kube.writes == writes  # a finished ParseJob is left as it is


def test_cancel_before_the_first_tick_records_queued_then_cancelled(setup):
    kube, sched, loop = setup
    body = kube.add("new")
    final = loop.run_until_complete(sched.cancel(ParseJob.of(copy.deepcopy(body))))
    assert [h["phase"] for h in final.status.raw["history"]] == ["Queued", "Cancelled"]
    assert status(kube, "new")["phase"] == "Cancelled"


class Stopped:
    """Like kopf.DaemonStopped for the loop: truthy once set."""

    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag


def test_run_ticks_until_stopped_and_reports_its_liveness(setup):
    kube, sched, loop = setup
    kube.add("a")
    stopped = Stopped()

    async def go():
        task = asyncio.create_task(sched.run(stopped, runtime, *kube.indexes()))
        while phases(kube)["a"] != "Running" or not sched.last_tick:  # admitted, and the tick over
            await asyncio.sleep(0.01)
        health = sched.health()
        assert health["active"] and 0 <= health["lastTickAgeSeconds"] < 5
        sched.last_tick -= 120  # as if no tick for two minutes
        with pytest.raises(Stuck):
            sched.health()
        stopped.flag = True
        sched.kick()
        await asyncio.wait_for(task, 5)

    loop.run_until_complete(go())
    assert sched.health()["active"] is False


def test_a_member_put_back_after_a_counted_run_keeps_counting_in_its_own_job(setup):
    """A batch member interrupted mid-parse comes back Queued with attempts 1 (Retrying);
    run again as its own Job, its attempts go on from there."""
    kube, sched, loop = setup
    body = kube.add("member")
    body["status"] = {"phase": "Queued", "transitionSeq": 3, "attempts": 1, "enqueuedAt": "2026-01-01T00:00:00Z",
                      "history": [{"seq": 3, "phase": "Queued", "reason": "Retrying", "message": "", "at": "x"}]}
    tick(loop, sched, kube)
    s = status(kube, "member")
    assert (s["phase"], s["attempts"], s["priorAttempts"]) == ("Running", 2, 1)
    kube.finish_job("member")
    tick(loop, sched, kube)
    s = status(kube, "member")
    assert (s["phase"], s["attempts"]) == ("Succeeded", 2), s  # 1 before + this run


def test_a_run_whose_pod_was_deleted_under_it_goes_back_uncounted_even_once_the_pod_is_gone(setup):
    """A node taken away by an autoscaler: Karpenter's forced termination deletes the
    do-not-disrupt runner pod with a plain DELETE (no DisruptionTarget). The pod index saw it
    deleted while it ran (Scheduler.note_pod); by the time its Job's end is decided the pod may
    be gone: the run is still a disruption, not an attempt."""
    kube, sched, loop = setup
    kube.add("moved")
    tick(loop, sched, kube)
    assert (status(kube, "moved")["phase"], status(kube, "moved")["attempts"]) == ("Running", 1)
    key, job = kube.job_of("moved")
    pod = {"metadata": {"name": f"{key[1]}-p", "labels": {"batch.kubernetes.io/job-name": key[1]},
                        "ownerReferences": [{"kind": "Job", "uid": job["metadata"]["uid"], "controller": True}],
                        "deletionTimestamp": "2026-01-01T00:00:31Z", "deletionGracePeriodSeconds": 1},
           "status": {"phase": "Running"}}
    sched.note_pod(RunnerPod.of(pod))  # the pod index's event; the pod is gone before the next tick
    job["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                                  "reason": "BackoffLimitExceeded", "message": ""}]}
    tick(loop, sched, kube)
    s = status(kube, "moved")
    assert (s["phase"], s["attempts"], s["history"][-1]["reason"]) == ("Queued", 0, "Disrupted"), s
    # a pod that failed by itself is counted as before
    tick(loop, sched, kube)
    kube.finish_job("moved", 1, json.dumps({"ok": False, "code": "StorageUnavailable", "message": "S3 away"}))
    tick(loop, sched, kube)
    s = status(kube, "moved")
    assert (s["phase"], s["attempts"], s["history"][-1]["reason"]) == ("Queued", 1, "Retrying"), s


def test_one_parsejob_that_breaks_its_observation_never_stops_the_tick(setup, monkeypatch):
    """Whatever goes wrong deciding one ParseJob (here: its Job's kind raises), that
    ParseJob alone fails, typed (ObservationFailed) and counted; the others are decided
    and admitted in the same tick."""
    from schedgen.operator import metrics
    from schedgen.operator import runner_jobs

    kube, sched, loop = setup
    for name in ("poisoned", "fine"):
        kube.add(name)
    kube.add("waiting", t=5)
    tick(loop, sched, kube)
    kube.finish_job("poisoned")
    kube.finish_job("fine")
    poisoned_uid = kube.parsejobs[("ns", "poisoned")]["metadata"]["uid"]
    real_run_end = runner_jobs.SingleJob.run_end

    def run_end(self, pj, job, pods, listed):
        if pj.uid == poisoned_uid:
            raise RecursionError("maximum recursion depth exceeded")
        return real_run_end(self, pj, job, pods, listed)

    monkeypatch.setattr(runner_jobs.SingleJob, "run_end", run_end)
    before = metrics.OBSERVATION_ERRORS._value.get()
    tick(loop, sched, kube)
    assert status(kube, "poisoned")["error"] == {"reason": "ObservationFailed", "code": "InternalError",
                                                 "message": "RecursionError: maximum recursion depth exceeded"}
    assert status(kube, "fine")["phase"] == "Succeeded" and status(kube, "waiting")["phase"] == "Running"
    assert metrics.OBSERVATION_ERRORS._value.get() == before + 1


def test_no_runner_where_its_network_policy_is_missing(s3):
    """With SCHEDGEN_RUNNER_NETWORK_POLICY set (the chart sets it with its policies), a
    namespace without that NetworkPolicy gets no runner: the ParseJob fails, no Job."""
    kube = FakeKube(s3)
    kube.policies = {("ns", "schedgen-runner")}

    async def network_policy_exists(namespace, name):
        return (namespace, name) in kube.policies

    kube.network_policy_exists = network_policy_exists
    cfg = OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url,
                         runner_network_policy="schedgen-runner")
    sched = Scheduler(cfg, kube, ResultStore(cfg, s3.client), records=None)  # type: ignore[arg-type]
    kube.add("covered", ns="ns")
    kube.add("bare", ns="elsewhere")
    loop = asyncio.new_event_loop()
    try:
        tick(loop, sched, kube)
    finally:
        loop.close()
    assert status(kube, "covered")["phase"] == "Running"
    s = status(kube, "bare", ns="elsewhere")
    assert (s["phase"], s["error"]["reason"]) == ("Failed", "NoNetworkPolicy") and len(kube.jobs) == 1


def test_an_orphan_the_operator_signed_is_adopted_not_run_twice(setup):
    """The operator stopped between creating a Job and recording Running: the Job carries
    its signature for the ParseJob as it waits, so the restarted operator adopts it (its
    uid recorded, nothing run twice). The same Job unsigned (or signed with another key:
    someone else's) is deleted instead (test_a_job_no_running_parsejob_records...)."""
    from schedgen.operator.signing import Signer

    kube, sched, loop = setup
    sched.signer = Signer(b"the operator's key")
    kube.add("a")
    tick(loop, sched, kube)
    (key, job), = kube.jobs.items()
    assert job["metadata"]["annotations"]["schedgen.io/signature"]
    kube.parsejobs[("ns", "a")]["status"] = {}  # the Running write was lost
    again = make_scheduler(kube)
    again.signer = Signer(b"the operator's key")
    tick(loop, again, kube)
    s = status(kube, "a")
    assert s["phase"] == "Running" and s["jobName"] == key[1] and s["jobUid"] == job["metadata"]["uid"]
    assert list(kube.jobs) == [key]  # adopted: no second Job, no second run
    other = make_scheduler(kube)  # a key that is not the operator's: the Job is not proven its own
    other.signer = Signer(b"someone else")
    kube.parsejobs[("ns", "a")]["status"] = {}
    tick(loop, other, kube)
    assert key not in kube.jobs and status(kube, "a")["history"][-1]["reason"] == "JobReplaced"


def test_an_orphan_that_ran_to_the_end_without_an_operator_is_adopted(setup):
    """The operator stopped between creating a Job and recording Running, and the Job ran
    to its end before a new operator started (CI found this: the ParseJob failed
    JobNameTaken, its own finished Job holding the name). The ended Job, signed for the
    run now, is adopted and its result recorded: Succeeded, one Job, run once."""
    from schedgen.operator.signing import Signer

    kube, sched, loop = setup
    sched.signer = Signer(b"the operator's key")
    kube.add("a")
    tick(loop, sched, kube)
    (key, job), = kube.jobs.items()
    kube.finish_job("a")  # the Job ran to its end ...
    kube.parsejobs[("ns", "a")]["status"] = {}  # ... and the Running write was lost
    again = make_scheduler(kube)
    again.signer = Signer(b"the operator's key")
    for _ in range(3):
        tick(loop, again, kube)
    s = status(kube, "a")
    assert s["phase"] == "Succeeded" and s["jobUid"] == job["metadata"]["uid"] and s["attempts"] == 1, s
    assert list(kube.jobs) == [key]


def test_an_ended_job_of_an_earlier_run_is_not_an_orphan(setup):
    """A waiting ParseJob's ended Job of an earlier run (another transitionSeq, so another
    name) is history: neither adopted nor deleted, and the next run gets a new Job."""
    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    (old_key, _), = kube.jobs.items()
    kube.finish_job("a")
    pj = kube.parsejobs[("ns", "a")]
    pj["status"] = {**pj["status"], "phase": "Queued", "transitionSeq": pj["status"]["transitionSeq"] + 1,
                    "jobName": None, "jobUid": None}  # put back to the queue after that run
    tick(loop, sched, kube)
    assert old_key in kube.jobs and len(kube.jobs) == 2, list(kube.jobs)
    assert status(kube, "a")["phase"] == "Running" and status(kube, "a")["jobName"] != old_key[1]


def test_a_runner_image_that_cannot_be_pulled_fails_the_run_with_the_kubelets_words(setup):
    """A pod whose runner image the kubelet cannot get (wrong tag, no pull Secret) would
    wait in ImagePullBackOff until the Job's deadline and end DeadlineExceeded. A moment of
    it is a registry's hiccup (the kubelet retries); IMAGE_PULL_GRACE_SECONDS of it fails
    the run, with the kubelet's message, and deletes its Job."""
    import datetime as dt

    from schedgen.operator.config import IMAGE_PULL_GRACE_SECONDS

    kube, sched, loop = setup
    kube.add("a")
    tick(loop, sched, kube)
    key, job = kube.job_of("a")

    def pod(age: float) -> dict:
        created = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=age)
        return {"metadata": {"name": f"{key[1]}-p", "labels": {"batch.kubernetes.io/job-name": key[1]},
                             "ownerReferences": [{"kind": "Job", "name": key[1], "uid": job["metadata"]["uid"],
                                                  "controller": True}],
                             "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
                "spec": {"nodeName": "node-1"},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "runner", "state": {"waiting": {
                    "reason": "ImagePullBackOff",
                    "message": 'Back-off pulling image "registry.example/schedgen-runner:0.9"'}}}]}}

    job["_pods"] = [pod(10)]
    tick(loop, sched, kube)
    assert phases(kube)["a"] == "Running"  # the kubelet still retries
    job["_pods"] = [pod(IMAGE_PULL_GRACE_SECONDS + 5)]
    tick(loop, sched, kube)
    tick(loop, sched, kube)
    s = status(kube, "a")
    assert (s["phase"], s["error"]["reason"], s["error"]["code"]) == ("Failed", "ImagePullFailed",
                                                                     "RunnerImageUnavailable"), s
    assert 'Back-off pulling image "registry.example/schedgen-runner:0.9"' in s["error"]["message"]
    assert "node-1" in s["error"]["message"] and key not in kube.jobs


def test_the_next_runs_job_is_created_while_the_ended_runs_status_is_written(setup):
    """Admission does not wait for the ended runs' final statuses to create the next
    Jobs (each a round trip to a busy apiserver at a backlog); only the Running writes
    wait for them, so the statuses never show more Running than the cap, and the new
    run's startedAt is not before the ended run's completedAt."""
    kube, sched, loop = setup
    kube.add("a", t=0)
    kube.add("b", t=1)
    tick(loop, sched, kube, runtime(max_concurrent=1))
    kube.finish_job("a")
    created, order = asyncio.Event(), []
    create_job, replace_status = kube.create_job, kube.replace_status

    async def creating(job):
        order.append(("create", job["metadata"]["name"]))
        created.set()
        return await create_job(job)

    async def writing(namespace, name, status, expect_seq):
        if status["phase"] == "Succeeded":  # the slow final write: the next Job is created meanwhile
            try:
                await asyncio.wait_for(created.wait(), 2)
            except asyncio.TimeoutError:
                order.append(("no create while the final status was written", name))
        order.append((status["phase"], name))
        return await replace_status(namespace, name, status, expect_seq)

    kube.create_job, kube.replace_status = creating, writing
    for _ in range(3):  # the first reads a's result object, within the tick or in the next
        if phases(kube)["b"] == "Running":
            break
        tick(loop, sched, kube, runtime(max_concurrent=1))
    assert [step for step in order if step[0] != "create"] == [("Succeeded", "a"), ("Running", "b")], order
    assert order[0][0] == "create", order
    assert status(kube, "a")["completedAt"] <= status(kube, "b")["startedAt"]


@pytest.mark.parametrize("ended,waits", [(1, True), (17, False)])
def test_the_tick_waits_for_result_reads_only_while_they_can_all_run_at_once(setup, monkeypatch, ended, waits):
    """A moment's wait lets a tick decide the runs it saw end; with more reads going than
    run at once (READ_CONCURRENCY, 16) they queue behind each other, and the wait would
    only hold admission up: the tick goes on, and each read's end kicks the next."""
    kube, sched, loop = setup
    rt = runtime(max_concurrent=ended, max_per_tenant=ended, pending_runners_max=-1)
    for i in range(ended):
        kube.add(f"pj{i}", t=i)
    tick(loop, sched, kube, rt)
    for i in range(ended):
        kube.finish_job(f"pj{i}")
    never = asyncio.Event()

    async def stuck_read(pj):
        await never.wait()

    waited = []
    wait = asyncio.wait

    async def recording_wait(tasks, timeout=None, **kw):
        waited.append(len(tasks))
        return await wait(tasks, timeout=timeout, **kw)

    monkeypatch.setattr(sched.results, "fetch", stuck_read)
    monkeypatch.setattr(asyncio, "wait", recording_wait)
    tick(loop, sched, kube, rt)
    assert len(sched.reconciler.reads) == ended and all(p == "Running" for p in phases(kube).values())
    assert waited == ([ended] if waits else [])
    sched.reconciler.forget_except(set())  # cancels the reads
    loop.run_until_complete(asyncio.sleep(0))


# --- the pipeline: a tick does not wait for the writes it decided ----------------------


def gated(kube: FakeKube, method: str, when=lambda *a: True):
    """Hold `kube.<method>` calls for which `when(*args)` until the returned Event is set;
    the calls made, in order."""
    gate, calls, real = asyncio.Event(), [], getattr(kube, method)

    async def held(*args, **kw):
        calls.append(args)
        if when(*args):
            await gate.wait()
        return await real(*args, **kw)

    setattr(kube, method, held)
    return gate, calls


def test_a_tick_returns_before_its_starts_are_written_and_the_next_does_not_start_them_again(setup):
    """The next tick decides while the Jobs are still being created: what is starting
    holds its slot (the cap counts it) and is not admitted a second time."""
    kube, sched, loop = setup
    for i in range(3):
        kube.add(f"pj{i}", t=i)
    gate, creates = gated(kube, "create_job")
    tick(loop, sched, kube, settle=False)  # returns although no Job is created yet
    assert len(creates) == 2 and not kube.jobs and sched.in_flight.tasks
    for _ in range(2):
        tick(loop, sched, kube, settle=False)
    assert len(creates) == 2, creates  # pj0 and pj1 still starting: not again, and pj2 waits for a slot
    assert phases(kube) == {"pj0": "Queued", "pj1": "Queued", "pj2": "Queued"}
    gate.set()
    loop.run_until_complete(sched.settle())
    assert phases(kube) == {"pj0": "Running", "pj1": "Running", "pj2": "Queued"} and len(kube.jobs) == 2
    tick(loop, sched, kube)
    assert len(creates) == 2 and not sched.in_flight.pending  # seen written: forgotten


def test_a_slot_freed_while_a_start_is_in_flight_is_taken_by_the_next_tick(setup):
    """A start held up (a slow apiserver) no longer holds up admission into other slots."""
    kube, sched, loop = setup
    rt = runtime(max_concurrent=2, max_per_tenant=2)
    kube.add("a", t=0)
    tick(loop, sched, kube, rt)
    kube.add("b", t=1)
    kube.add("c", t=2)
    b_uid = kube.parsejobs[("ns", "b")]["metadata"]["uid"]
    gate, creates = gated(kube, "create_job", lambda job: b_uid in json.dumps(job))
    tick(loop, sched, kube, rt, settle=False)  # b starts (held); the cap is full
    assert len(creates) == 1 and b_uid in json.dumps(creates[0]) and len(kube.jobs) == 1
    kube.finish_job("a")
    for _ in range(3):  # a's end (its result read within a tick or the next), then c into a's slot
        tick(loop, sched, kube, rt, settle=False)
        if phases(kube)["c"] == "Running":
            break
    assert phases(kube)["a"] == "Succeeded" and phases(kube)["c"] == "Running", phases(kube)
    assert phases(kube)["b"] == "Queued"  # still held
    gate.set()
    loop.run_until_complete(sched.settle())
    assert phases(kube) == {"a": "Succeeded", "b": "Running", "c": "Running"}


def test_an_end_in_flight_is_decided_once_and_the_next_running_waits_for_it(setup):
    """While a's final status is on its way the next tick neither decides a again nor
    shows b Running before a has ended (the statuses never exceed the cap)."""
    kube, sched, loop = setup
    rt = runtime(max_concurrent=1)
    kube.add("a", t=0)
    kube.add("b", t=1)
    tick(loop, sched, kube, rt)
    kube.finish_job("a")
    gate, writes = gated(kube, "replace_status", lambda ns, name, status, seq: status["phase"] == "Succeeded")
    for _ in range(4):
        tick(loop, sched, kube, rt, settle=False)
    finals = [w for w in writes if w[2]["phase"] == "Succeeded"]
    assert len(finals) == 1, writes  # decided once
    assert phases(kube) == {"a": "Running", "b": "Queued"}  # b's Job may exist; its Running waits for a
    assert len(kube.jobs) == 2
    gate.set()
    loop.run_until_complete(sched.settle())
    assert phases(kube) == {"a": "Succeeded", "b": "Running"}
    assert [w[2]["phase"] for w in writes] == ["Succeeded", "Running"]
    assert status(kube, "a")["completedAt"] <= status(kube, "b")["startedAt"]


def test_a_start_that_fails_is_decided_again_by_the_next_tick(setup):
    kube, sched, loop = setup
    kube.add("a")
    create_job, calls = kube.create_job, []

    async def refused_once(job):
        calls.append(job["metadata"]["name"])
        if len(calls) == 1:
            raise RuntimeError("apiserver: 503")
        return await create_job(job)

    kube.create_job = refused_once
    tick(loop, sched, kube)
    assert phases(kube)["a"] == "Queued" and not sched.in_flight.pending  # failed: forgotten at once
    assert sched.changed.is_set()  # and the scheduler kicked
    tick(loop, sched, kube)
    assert phases(kube)["a"] == "Running" and len(calls) == 2


def test_the_next_tick_waits_in_proportion_to_the_loop_time_the_last_one_took(setup, monkeypatch):
    """Ticks no longer wait for their writes, and each reads every ParseJob: after a tick
    that spanned 0.05 s of the event loop's CPU the next waits 5 times that from its end;
    after a cheap one, only the minimum gap from its start."""
    from schedgen.operator import scheduler as scheduler_module

    kube, sched, loop = setup
    slept = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay, *a, **kw):
        slept.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(scheduler_module.asyncio, "sleep", recording_sleep)
    now = 100.0
    sched.clock = lambda: now
    sched._tick_started, sched._tick_ended, sched._tick_cpu = now - 0.2, now, 0.05
    sched.kick()
    loop.run_until_complete(sched.wait(timeout=1))
    sched._tick_started, sched._tick_ended, sched._tick_cpu = now - 0.02, now, 0.001
    sched.kick()
    loop.run_until_complete(sched.wait(timeout=1))
    assert slept == [pytest.approx(0.25), pytest.approx(0.08)]
