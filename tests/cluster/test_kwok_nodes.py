"""Simulated nodes (KWOK, hack/localkube/kwok.py) and the executor (hack/localkube/executor.py) on
the real control plane: fake nodes turn Ready and keep their Lease, the real scheduler binds pods
that select and tolerate them, KWOK runs them, and the executor does the runner's work -- a real
GET of a real PDF from S3 through a presigned URL, schedgen's parser, a real PUT of the result
object -- so a runner-shaped Job ends the way the runner would end it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from ipaddress import ip_address, ip_network

import pytest
from kubernetes import client
from localkube.kwok import (
    ANN_EXIT_CODE,
    DEFAULT_CIDR,
    FAKE_KEY,
    FAKE_SELECTOR,
    FAKE_TAINT,
    FAKE_TOLERATION,
    FAKE_VALUE,
)
from localkube.testing import job_pods, wait_for, wait_job_finished

from schedgen.parsejob import (
    EXIT_BAD_INPUT,
    LABEL_MANAGED_BY,
    LABEL_PARSEJOB,
    LABEL_PARSEJOB_UID,
    MANAGED_BY,
    RUNNER_CONTAINER,
    RunnerSummary,
    result_key,
)

pytestmark = pytest.mark.cluster

REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]


def _core(api):
    return client.CoreV1Api(api)


def _batch(api):
    return client.BatchV1Api(api)


def _pod(name: str, placed: bool = True, tolerate: bool = True) -> dict:
    spec: dict = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                  "containers": [{"name": "main", "image": "example.invalid/never-pulled:1"}]}
    if placed:
        spec["nodeSelector"] = {FAKE_KEY: FAKE_VALUE}
    if tolerate:
        spec["tolerations"] = [FAKE_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_fake_nodes_turn_ready_with_their_size_label_taint_and_lease(kwok_nodes, kube_api):
    core = _core(kube_api)
    nodes = {n.metadata.name: n for n in core.list_node(label_selector=FAKE_SELECTOR).items}
    assert set(kwok_nodes.nodes) <= set(nodes), nodes.keys()
    for name in kwok_nodes.nodes:
        node = nodes[name]
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True" and ready.reason == "KubeletReady"
        assert node.status.allocatable == {"cpu": "32", "memory": "256Gi", "pods": "110",
                                           "ephemeral-storage": "100Gi"}
        assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
            (FAKE_TAINT["key"], FAKE_TAINT["value"], FAKE_TAINT["effect"])]
        assert node.metadata.annotations[FAKE_KEY] == FAKE_VALUE
        assert node.status.node_info.kubelet_version.startswith("kwok-")
        # kwok holds and renews the node's Lease, which the node-lifecycle controller reads
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease(name, "kube-node-lease")
        assert lease.spec.lease_duration_seconds == 40 and lease.spec.holder_identity
        assert abs(datetime.now(timezone.utc) - lease.spec.renew_time).total_seconds() < 40
    # the real node is not KWOK's
    assert "node-1" not in nodes
    real = core.read_node("node-1")
    assert real.status.node_info.kubelet_version == "v1.37.2"


def test_a_pod_that_selects_and_tolerates_fake_nodes_runs_there_and_goes_away_when_deleted(
        kwok_nodes, kube_api, kube_ns):
    core = _core(kube_api)
    core.create_namespaced_pod(kube_ns, _pod("on-kwok"))

    def running():
        pod = core.read_namespaced_pod("on-kwok", kube_ns)
        return pod if pod.status.phase == "Running" else None

    pod = wait_for(running, 30, what="the pod Running on a fake node")
    assert pod.spec.node_name in kwok_nodes.nodes
    assert ip_address(pod.status.pod_ip) in ip_network(DEFAULT_CIDR)
    assert {c.type for c in pod.status.conditions if c.status == "True"} >= {"Initialized", "Ready", "ContainersReady"}
    (cs,) = pod.status.container_statuses
    assert cs.ready and cs.state.running is not None
    # without the annotations it stays Running; deleted, it ends (pod-terminate) and goes (pod-delete)
    core.delete_namespaced_pod("on-kwok", kube_ns)
    wait_for(lambda: not [p for p in core.list_namespaced_pod(kube_ns).items if p.metadata.name == "on-kwok"],
             30, what="the deleted pod to go away")


def test_fake_nodes_take_only_pods_that_tolerate_their_taint(kwok_nodes, kube_api, kube_ns):
    core = _core(kube_api)
    core.create_namespaced_pod(kube_ns, _pod("intolerant", tolerate=False))

    def unschedulable():
        pod = core.read_namespaced_pod("intolerant", kube_ns)
        cond = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        return cond if cond and cond.reason == "Unschedulable" else None

    cond = wait_for(unschedulable, 30, what="the scheduler to refuse the pod")
    assert "untolerated taint" in cond.message and core.read_namespaced_pod("intolerant", kube_ns).spec.node_name is None


# ---------------------------------------------------------------------------------------- the executor
def _presign(s3, cluster, method: str, key: str, **params) -> str:
    """A presigned URL for the host runner pods reach (the cluster's host address), as the operator
    makes it: signed by the operator's own S3 user."""
    signer = s3.client_for("operator", endpoint_url=s3.server.endpoint_for(cluster.host_address))
    return signer.generate_presigned_url(method, Params={"Bucket": s3.bucket, "Key": key, **params}, ExpiresIn=600)


def _member_env(s3, cluster, ns: str, name: str, uid: str, source_key: str) -> dict[str, str]:
    return {"SCHEDGEN_JOB_NAMESPACE": ns, "SCHEDGEN_JOB_NAME": name, "SCHEDGEN_JOB_UID": uid,
            "SCHEDGEN_TENANT": ns, "SCHEDGEN_SOURCE_URL": _presign(s3, cluster, "get_object", source_key),
            "SCHEDGEN_RESULT_URL": _presign(s3, cluster, "put_object", result_key(ns, uid),
                                            ContentType="application/json"),
            "SCHEDGEN_SCHEDULE_TYPE": "auto", "SCHEDGEN_PARSE_TIMEOUT_SECONDS": "60"}


def runner_job(api, ns: str, name: str, runs: list[dict[str, str]], parsejob_uid: str | None = None) -> dict:
    """A Job shaped like the operator's (operator/job_template.py): its labels, the runner
    container reading its runs from a Secret of the Job's name (created here), placement on
    the fake nodes, the pod failure policy."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PARSEJOB: name}
    if parsejob_uid:
        labels[LABEL_PARSEJOB_UID] = parsejob_uid
    client.CoreV1Api(api).create_namespaced_secret(ns, {"metadata": {"name": name},
                                                        "stringData": {"run.json": json.dumps(runs)}})
    container = {"name": RUNNER_CONTAINER, "image": "localhost/schedgen-runner:never-pulled",
                 "imagePullPolicy": "Never",
                 "env": [{"name": k, "value": v} for k, v in {"SCHEDGEN_RUN_FILE": "/run/schedgen/run.json",
                                                              "SCHEDGEN_MAX_BYTES": "10485760",
                                                              "SCHEDGEN_MAX_PAGES": "100",
                                                              "SCHEDGEN_MAX_MEMORY_MB": "384"}.items()],
                 "volumeMounts": [{"name": "run", "mountPath": "/run/schedgen", "readOnly": True}],
                 "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                               "limits": {"cpu": "1", "memory": "512Mi"}},
                 "terminationMessagePath": "/dev/termination-log",
                 "terminationMessagePolicy": "FallbackToLogsOnError"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"backoffLimit": 3, "activeDeadlineSeconds": 300,
                     "podFailurePolicy": {"rules": [
                         {"action": "FailJob", "onExitCodes": {"containerName": RUNNER_CONTAINER, "operator": "In",
                                                               "values": [EXIT_BAD_INPUT]}}]},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                                           "containers": [container], "nodeSelector": {FAKE_KEY: FAKE_VALUE},
                                           "volumes": [{"name": "run", "secret": {"secretName": name}}],
                                           "tolerations": [FAKE_TOLERATION]}}}}


def _terminated(api, ns: str, job: str):
    (pod,) = job_pods(api, ns, job)
    (cs,) = pod.status.container_statuses
    return pod, cs.state.terminated


def test_executor_completes_a_runner_job_with_the_parsed_events_and_the_runner_summary(
        local_cluster, kwok_nodes, runner_executor, s3, kube_api, kube_ns, tmp_path):
    from api_testlib import FIXTURES

    pdf, kind, events = REAL[0]
    source = s3.put(FIXTURES / "up" / pdf)
    uid = str(uuid.uuid4())
    env = _member_env(s3, local_cluster, kube_ns, "pj-ok", uid, source)
    _batch(kube_api).create_namespaced_job(kube_ns, runner_job(kube_api, kube_ns, "pj-ok", [env], uid))

    cond = wait_job_finished(kube_api, kube_ns, "pj-ok", 60)
    assert cond["type"] == "Complete", cond
    pod, term = _terminated(kube_api, kube_ns, "pj-ok")
    assert pod.spec.node_name in kwok_nodes.nodes and pod.status.phase == "Succeeded"
    assert pod.metadata.annotations[ANN_EXIT_CODE] == "0"
    assert term.exit_code == 0 and term.reason == "Completed"
    summary = RunnerSummary.from_message(term.message)
    assert summary is not None and summary.ok and summary.kind == kind and summary.events == events, term.message
    assert summary.pages >= 1 and summary.seconds > 0
    # the result object the runner PUTs: summary fields and every event, camelCase
    doc = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=result_key(kube_ns, uid))["Body"].read())
    assert set(doc) == {"kind", "pages", "seconds", "events"}
    assert doc["kind"] == kind and doc["pages"] == summary.pages and len(doc["events"]) == events
    from schedgen.runner.parsing import parse_pdf

    expected = parse_pdf(FIXTURES / "up" / pdf)
    assert doc["events"] == [e.to_json() for e in expected.events]
    assert all("module" in e and "activity" in e for e in doc["events"])
    stats = runner_executor.stats()
    assert stats["members_ok"] >= 1 and stats["s3_gets"] >= 1 and stats["s3_puts"] >= 1


def test_executor_ends_a_bad_pdf_with_exit_2_and_the_typed_error(
        local_cluster, kwok_nodes, runner_executor, s3, kube_api, kube_ns):
    source = s3.put(b"this is not a PDF at all\n" * 20)
    uid = str(uuid.uuid4())
    env = _member_env(s3, local_cluster, kube_ns, "pj-bad", uid, source)
    _batch(kube_api).create_namespaced_job(kube_ns, runner_job(kube_api, kube_ns, "pj-bad", [env], uid))

    cond = wait_job_finished(kube_api, kube_ns, "pj-bad", 60)
    assert cond["type"] == "Failed" and cond["reason"] == "PodFailurePolicy", cond
    pod, term = _terminated(kube_api, kube_ns, "pj-bad")  # one pod: exit 2 is never retried
    assert pod.status.phase == "Failed" and term.exit_code == EXIT_BAD_INPUT and term.reason == "Error"
    summary = RunnerSummary.from_message(term.message)
    assert summary == RunnerSummary(ok=False, code="NotAPDF",
                                    message="the file does not start with a PDF header (%PDF-)"), term.message
    # a single run that fails writes no result object (as the runner)
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=result_key(kube_ns, uid))
    assert listed.get("KeyCount", 0) == 0


def test_executor_runs_a_batch_pod_member_by_member(local_cluster, kwok_nodes, runner_executor, s3, kube_api,
                                                      kube_ns):
    from api_testlib import FIXTURES

    members = []
    for name, data in (("pj-a", (FIXTURES / "up" / REAL[2][0]).read_bytes()), ("pj-b", b"%PDF-1.4 truncated"),
                       ("pj-c", None)):
        uid = str(uuid.uuid4())
        key = s3.put(data) if data is not None else f"uploads/missing-{uuid.uuid4().hex}.pdf"
        members.append((uid, _member_env(s3, local_cluster, kube_ns, name, uid, key)))
    job = runner_job(kube_api, kube_ns, "batch-1", [env for _, env in members])
    job["spec"]["backoffLimit"] = 0
    job["spec"].pop("podFailurePolicy")
    _batch(kube_api).create_namespaced_job(kube_ns, job)

    cond = wait_job_finished(kube_api, kube_ns, "batch-1", 60)
    assert cond["type"] == "Complete", cond
    _, term = _terminated(kube_api, kube_ns, "batch-1")
    assert term.exit_code == 0
    assert json.loads(term.message) == {"ok": True, "kind": None, "events": 3, "pages": None, "seconds": None}

    def result(uid):
        return json.loads(s3.client.get_object(Bucket=s3.bucket, Key=result_key(kube_ns, uid))["Body"].read())

    ok, bad, missing = (result(uid) for uid, _ in members)
    assert ok["kind"] == "exam" and len(ok["events"]) == REAL[2][2]
    assert bad == {"ok": False, "killed": None, "code": "CorruptPDF", "retry": False,
                   "message": "the PDF has no end-of-file marker: it is truncated or damaged"}
    assert missing["ok"] is False and missing["code"] == "SourceNotFound" and missing["retry"] is False
