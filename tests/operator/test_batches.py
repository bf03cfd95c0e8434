"""Batch mode's pure parts: which admitted ParseJobs go together (batches.plan), the
batch Job (job_template.build_batch_job), and a member's failure document."""

from __future__ import annotations

import json

from credentials import assert_no_credentials
from schedgen.operator.batches import Requeue, batching, failure_outcome, full_batch, plan, turn_sizes
from schedgen.operator.config import OperatorConfig, RuntimeConfig
from schedgen.operator.job_template import build_batch_job, build_job
from schedgen.operator.outcome import Outcome
from schedgen.operator.queue_policy import QueueEntry, order
from schedgen.operator.views import job_view


def entry(i: int, tenant: str = "a", ns: str = "ns") -> QueueEntry:
    return QueueEntry(key=(ns, f"pj-{tenant}-{i}"), tenant=tenant, priority="normal",
                      arrival=f"2026-01-01T00:00:{i:02d}Z", uid=f"{tenant}-{i}")


def bodies(entries, **spec) -> dict:
    return {e.uid: {"metadata": {"uid": e.uid}, "spec": dict(spec)} for e in entries}


RT = RuntimeConfig(batch_threshold=5, batch_size=4, max_concurrent=20, max_per_tenant=20)


def test_light_load_nothing_changes():
    waiting = [entry(i) for i in range(3)]  # 3 waiting <= threshold 5
    groups, held = plan(waiting, bodies(waiting), waiting, False, RT)
    assert groups == [[e] for e in waiting] and held == []


def test_a_deep_backlog_goes_in_batches_in_admission_order():
    waiting = [entry(i) for i in range(12)]
    admitted = waiting[:10]
    groups, held = plan(admitted, bodies(admitted), waiting, False, RT)
    assert [len(g) for g in groups] == [4, 4, 2] and held == []  # nothing running: even the rest starts
    assert [e for g in groups for e in g] == admitted


def test_a_small_remainder_waits_while_the_tenant_runs_others():
    waiting = [entry(i) for i in range(12)]
    admitted = waiting[:6]
    groups, held = plan(admitted, bodies(admitted), waiting, True, RT)
    assert [len(g) for g in groups] == [4] and held == admitted[4:]


def test_a_full_batch_is_half_the_slots_one_tenant_may_hold_and_smaller_groups_wait_while_anything_runs():
    """maxPerTenant 20 (or maxConcurrent 20): batches of at most 10, so two overlap. A
    smaller group waits while ParseJobs run anywhere (slots free one by one); with
    nothing running it starts as it is."""
    rt = RuntimeConfig(batch_threshold=5, batch_size=25, max_concurrent=40, max_per_tenant=20)
    assert full_batch(rt) == 10
    assert full_batch(RuntimeConfig(batch_size=25, max_concurrent=7, max_per_tenant=20)) == 4
    assert full_batch(RuntimeConfig(batch_size=3, max_concurrent=40, max_per_tenant=20)) == 3
    deep = [entry(i, "a") for i in range(30)]
    others_run = True  # tenant b runs a ParseJob
    groups, held = plan(deep[:9], bodies(deep[:9]), deep, others_run, rt)
    assert groups == [] and held == deep[:9]  # 9 < 10: waits for one more slot
    groups, held = plan(deep[:14], bodies(deep[:14]), deep, others_run, rt)
    assert groups == [deep[:10]] and held == deep[10:14]
    groups, held = plan(deep[:9], bodies(deep[:9]), deep, False, rt)
    assert groups == [deep[:9]] and held == []
    tail = deep[:7]  # a backlog of 7 (> threshold 5): a full batch is all of it
    groups, held = plan(tail, bodies(tail), tail, others_run, rt)
    assert groups == [tail] and held == []


def test_the_rest_of_a_burst_goes_in_batches_while_the_tenant_runs_one():
    """A tenant with 3 left (<= threshold 5) would get 3 single pods; while a batch of
    that tenant and namespace runs, they go together instead. Other tenants, other
    namespaces and a tenant running only single Jobs are unchanged."""
    tail = [entry(i) for i in range(3)]
    assert plan(tail, bodies(tail), tail, True, RT)[0] == [[e] for e in tail]
    groups, held = plan(tail, bodies(tail), tail, True, RT, batching={("ns", "a")})
    assert groups == [tail] and held == []
    groups, held = plan(tail[:2], bodies(tail[:2]), tail, True, RT, batching={("ns", "a")})
    assert groups == [] and held == tail[:2]  # a third slot frees soon: gather
    assert plan(tail, bodies(tail), tail, True, RT, batching={("ns2", "a"), ("ns", "b")})[0] == [[e] for e in tail]
    assert turn_sizes(tail, RT, {("ns", "a")}) == {"a": 4} and turn_sizes(tail, RT) == {}
    running = [{"metadata": {"namespace": "ns", "name": "x"}, "spec": {"tenant": "a"}, "status": {"batchSize": 4}},
               {"metadata": {"namespace": "ns", "name": "y"}, "spec": {"tenant": "b"}, "status": {"batchSize": None}},
               {"metadata": {"namespace": "ns2", "name": "z"}, "spec": {"tenant": "c"}}]
    assert batching(running, lambda b: b["spec"]["tenant"]) == {("ns", "a")}
    off = RuntimeConfig(batch_size=1)
    assert plan(tail, bodies(tail), tail, True, off, batching={("ns", "a")})[0] == [[e] for e in tail]


def test_deep_tenants_take_their_turns_a_batch_at_a_time():
    """Uploads of two deep tenants arrive interleaved, a shallow one's later: the queue
    holds each deep tenant's next batch together, tenants alternating batch by batch,
    and the shallow tenant's one ParseJob gets the next turn, not the end of the line."""
    rt = RuntimeConfig(batch_threshold=5, batch_size=10, max_concurrent=20, max_per_tenant=20)
    a = [QueueEntry(("ns", f"a{i:02d}"), "a", "normal", f"2026-01-01T00:00:{2 * i:02d}Z", uid=f"a{i}")
         for i in range(25)]
    b = [QueueEntry(("ns", f"b{i:02d}"), "b", "normal", f"2026-01-01T00:00:{2 * i + 1:02d}Z", uid=f"b{i}")
         for i in range(25)]
    c = [QueueEntry(("ns", "c00"), "c", "normal", "2026-01-01T00:00:30Z", uid="c0")]
    waiting = a + b + c
    sizes = turn_sizes(waiting, rt)
    assert sizes == {"a": 10, "b": 10}
    ordered = order(waiting, {}, sizes)
    assert ordered[:21] == a[:10] + b[:10] + c
    assert ordered[21:41] == a[10:20] + b[10:20]
    # b runs a batch already: a's next batch comes first
    assert order(waiting, {"b": 10}, sizes)[:10] == a[:10]
    # batch mode off: one ParseJob per turn, as before
    assert order(waiting, {}, turn_sizes(waiting, RuntimeConfig(batch_size=1)))[:4] == [a[0], b[0], c[0], a[1]]


def test_tenants_and_namespaces_never_share_a_batch_and_shallow_tenants_stay_single():
    deep = [entry(i, "a") for i in range(8)]
    other_ns = [entry(i, "a", "ns2") for i in range(8)]
    shallow = [entry(i, "b") for i in range(2)]
    admitted = [deep[0], shallow[0], other_ns[0], deep[1], other_ns[1], shallow[1], deep[2], deep[3]]
    groups, _ = plan(admitted, bodies(admitted), deep + other_ns + shallow, False, RT)
    assert sorted(map(len, groups)) == [1, 1, 2, 4]
    for g in groups:
        assert len({(e.key[0], e.tenant) for e in g}) == 1
    assert [shallow[0]] in groups and [shallow[1]] in groups


def test_own_resources_or_batch_size_one_mean_one_job_each():
    waiting = [entry(i) for i in range(10)]
    groups, _ = plan(waiting, bodies(waiting, resources={"limits": {"memory": "1Gi"}}), waiting, False, RT)
    assert all(len(g) == 1 for g in groups)
    off = RuntimeConfig(batch_size=1, batch_threshold=0)
    assert all(len(g) == 1 for g in plan(waiting, bodies(waiting), waiting, False, off)[0])


def parsejob(i: int) -> dict:
    return {"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
            "metadata": {"name": f"up-{i}", "namespace": "team-a", "uid": f"0000000{i}-aaaa-bbbb-cccc-dddddddddddd",
                         "labels": {}},
            "spec": {"source": {"s3": {"key": f"uploads/{i}.pdf"}}, "tenant": "team-a", "deadlineSeconds": 100}}


def test_the_batch_job_runs_every_member_with_its_own_urls_and_no_credential():
    members = [parsejob(i) for i in range(3)]
    urls = {m["metadata"]["uid"]: {"source": f"http://s3/src-{i}?X-Amz-Signature=s",
                                   "result": f"http://s3/res-{i}?X-Amz-Signature=r"} for i, m in enumerate(members)}
    cfg = OperatorConfig()
    job = build_batch_job(members, cfg, urls)
    single = build_job(members[0], cfg, urls[members[0]["metadata"]["uid"]])
    assert job["metadata"]["labels"]["schedgen.io/batch"] == "true"
    assert "schedgen.io/parsejob-uid" not in job["metadata"]["labels"]
    refs = job["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == [m["metadata"]["uid"] for m in members]
    assert not any(r["controller"] for r in refs)  # none decides alone; the Job goes with the last
    view = job_view(job)
    assert view["owner"] is None and view["members"] == [m["metadata"]["uid"] for m in members]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 300
    pod, one = spec["template"]["spec"], single["spec"]["template"]["spec"]
    assert pod["securityContext"] == one["securityContext"] and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["resources"] == one["containers"][0]["resources"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert "SCHEDGEN_SOURCE_URL" not in env and "SCHEDGEN_JOB_UID" not in env
    items = json.loads(env["SCHEDGEN_BATCH"])
    assert [i["SCHEDGEN_JOB_UID"] for i in items] == [m["metadata"]["uid"] for m in members]
    assert [i["SCHEDGEN_RESULT_URL"] for i in items] == [urls[m["metadata"]["uid"]]["result"] for m in members]
    assert_no_credentials(job)
    again = build_batch_job(list(reversed(members)), cfg, urls)
    assert again["metadata"]["name"].rsplit("-", 1)[1] == job["metadata"]["name"].rsplit("-", 1)[1]
    for m in members:  # the same members back from the queue (a later transition): a new Job
        m["status"] = {"transitionSeq": 4}
    assert build_batch_job(members, cfg, urls)["metadata"]["name"] != job["metadata"]["name"]


def test_failure_documents_decide_only_their_member():
    bad = failure_outcome({"ok": False, "code": "TooLarge", "message": "big", "retry": False}, 1, 3)
    assert isinstance(bad, Outcome) and (bad.reason, bad.code) == ("InvalidPDF", "TooLarge")
    oom = failure_outcome({"ok": False, "killed": "oom", "code": "Killed"}, 1, 3)
    assert (oom.reason, oom.code) == ("OOMKilled", "MemoryLimitExceeded")
    slow = failure_outcome({"ok": False, "killed": "deadline", "message": "no result within 60 s"}, 1, 3)
    assert (slow.reason, slow.code) == ("DeadlineExceeded", "ParseTimeout")
    again = failure_outcome({"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True}, 2, 3)
    assert again == Requeue("Retrying", "Interrupted: SIGTERM", counted=True)
    spent = failure_outcome({"ok": False, "code": "Interrupted", "message": "SIGTERM", "retry": True}, 4, 3)
    assert (spent.phase, spent.reason) == ("Failed", "BackoffLimitExceeded")
    hostile = failure_outcome({"ok": False, "code": 5, "message": "x" * 10000, "killed": "rm -rf"}, 1, 3)
    assert hostile.reason == "InvalidPDF" and hostile.code == "Unknown" and len(hostile.message) == 512
