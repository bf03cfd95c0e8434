"""ParseJobs end to end: S3 -> operator -> Job -> runner container on a real node (presigned
URLs only) -> result object -> operator -> Postgres -> status."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse

import pytest

from credentials import assert_no_credentials
from operator_e2e import FIXTURES, GROUP, PLURAL, VERSION, wait_for

from schedgen.parsejob import result_key

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]


class BlackHole:
    """A TCP port that accepts connections and never answers (a hung S3 endpoint), until
    `forward_to` makes it a plain relay to the real one. It listens on every interface:
    runner pods reach it at their cluster's host address. Presigned URLs for it stay
    valid through the relay: the Host header they are signed for passes unchanged."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = False
        self.target: tuple[str, int] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def endpoint(self, cluster) -> str:
        """This hole as an S3 endpoint URL for runner pods of `cluster` (and the operator)."""
        return f"http://{cluster.host_address}:{self.port}"

    def forward_to(self, endpoint_url: str) -> None:
        parts = urllib.parse.urlsplit(endpoint_url)
        self.target = (parts.hostname, parts.port or 80)

    def _accept(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.target is not None:
                upstream = socket.create_connection(self.target)
                self.conns.append(upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_real_pdfs_succeed_with_their_events_in_postgres(operator_cluster, start_operator):
    c = operator_cluster
    start_operator()
    ns = c.tenant_namespace("parse")
    for pdf, _, _ in REAL:
        key = c.s3.put(FIXTURES / "up" / pdf)
        c.submit(ns, pdf.lower().replace("_", "-").removesuffix(".pdf"), key)
    for pdf, kind, events in REAL:
        name = pdf.lower().replace("_", "-").removesuffix(".pdf")
        pj = c.wait_phase(ns, name, timeout=180)
        s = pj["status"]
        assert s["phase"] == "Succeeded", s
        assert s["result"]["kind"] == kind and s["result"]["events"] == events, s
        assert s["attempts"] == 1 and s["observedGeneration"] == 1
        assert {x["type"]: x["status"] for x in s["conditions"]} == {"Admitted": "True", "Complete": "True",
                                                                       "Failed": "False"}
        uid = pj["metadata"]["uid"]
        assert c.event_rows(uid) == events
        wait_for(lambda: (c.row(uid) or (None,))[0] == "Succeeded", 30, what="row Succeeded")
        assert c.row(uid)[:5] == ("Succeeded", 3, 1, kind, events)
        assert c.transitions(uid) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
        reasons = {e.reason for e in c.events_for(ns, name)}
        assert reasons == {"Succeeded"}, reasons  # one Event per ParseJob: how it ended
        job = c.batch.read_namespaced_job(s["jobName"], ns)
        assert job.metadata.owner_references[0].uid == uid
        # the Job the operator made holds no credential of any kind, only presigned URLs
        run_secret = c.api.sanitize_for_serialization(c.core.read_namespaced_secret(s["jobName"], ns))
        assert [(o["uid"], o["controller"]) for o in run_secret["metadata"]["ownerReferences"]] == [(uid, False)]
        assert_no_credentials(c.api.sanitize_for_serialization(job),
                              [*c.s3.secret_keys(), c.postgres.dsn, c.postgres.password], run_secret=run_secret)
        for pod in c.pods_of(ns, s["jobName"]):
            assert_no_credentials({"spec": {"template": c.api.sanitize_for_serialization(pod)}},
                                  [*c.s3.secret_keys(), c.postgres.password])
    # Deleting a finished ParseJob drops its result object; its row and events stay.
    pj = c.parsejobs(ns)[0]
    uid, key = pj["metadata"]["uid"], result_key(ns, pj["metadata"]["uid"])
    assert c.s3.client.list_objects_v2(Bucket=c.s3.bucket, Prefix=key).get("KeyCount") == 1
    c.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, pj["metadata"]["name"])
    wait_for(lambda: len(c.parsejobs(ns)) == len(REAL) - 1, 60, what="the ParseJob to go")
    assert c.s3.client.list_objects_v2(Bucket=c.s3.bucket, Prefix=key).get("KeyCount") == 0
    assert c.row(uid)[0] == "Succeeded" and c.event_rows(uid) == pj["status"]["result"]["events"]


def test_invalid_pdf_fails_after_exactly_one_pod(operator_cluster, start_operator):
    c = operator_cluster
    start_operator()
    ns = c.tenant_namespace("invalid")
    key = c.s3.put(FIXTURES / "synthetic" / "invalid-format.pdf")
    c.submit(ns, "invalid", key, maxRetries=3)
    pj = c.wait_phase(ns, "invalid", timeout=120)
    s = pj["status"]
    assert s["phase"] == "Failed" and s["error"]["reason"] == "InvalidPDF", s
    assert s["error"].get("code") and s["error"].get("message")
    assert s["attempts"] == 1
    assert len(c.pods_of(ns, s["jobName"])) == 1
    assert "InvalidPDF" in {e.reason for e in c.events_for(ns, "invalid")}


def test_transient_failures_are_retried_up_to_max_retries(operator_cluster, start_operator):
    c = operator_cluster
    # The runner exits 1 (StorageUnavailable) when its S3 endpoint is unreachable.
    closed = socket.socket()
    closed.bind(("", 0))
    port = closed.getsockname()[1]
    closed.close()
    start_operator(SCHEDGEN_S3_ENDPOINT_URL=f"http://{c.cluster.host_address}:{port}")
    ns = c.tenant_namespace("retry")
    key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
    c.submit(ns, "flaky", key, maxRetries=1, deadlineSeconds=300)
    pj = c.wait_phase(ns, "flaky", timeout=240)
    s = pj["status"]
    assert s["phase"] == "Failed" and s["error"]["reason"] == "BackoffLimitExceeded", s
    assert s["error"].get("code") == "StorageUnavailable"
    assert s["attempts"] == 2
    # each run a Job of its own (the operator's retry, after retryBackoffSeconds), one pod each
    jobs = c.jobs_of(ns, pj["metadata"]["uid"])
    assert len(jobs) == 2 and s["jobName"] in {j.metadata.name for j in jobs}
    assert all(j.spec.backoff_limit == 0 and len(c.pods_of(ns, j.metadata.name)) == 1 for j in jobs)
    assert "Retrying" in {e.reason for e in c.events_for(ns, "flaky")}


def test_deadline_exceeded(operator_cluster, start_operator):
    c = operator_cluster
    hole = BlackHole()
    try:
        start_operator(SCHEDGEN_S3_ENDPOINT_URL=hole.endpoint(c.cluster))
        ns = c.tenant_namespace("deadline")
        key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
        # the run hangs on the download until its Job's deadline: final, retries left or not
        c.submit(ns, "slow", key, deadlineSeconds=10, maxRetries=5)
        pj = c.wait_phase(ns, "slow", timeout=120)
    finally:
        hole.close()
    s = pj["status"]
    assert s["phase"] == "Failed" and s["error"]["reason"] == "DeadlineExceeded", s


def test_an_oom_killed_runner_fails_at_once_as_bad_input(operator_cluster, start_operator):
    """16 MiB is too little for the interpreter: the kernel OOM-kills the container (exit
    137) and the pod failure policy fails the Job after that one pod, retries left or not."""
    c = operator_cluster
    start_operator()
    ns = c.tenant_namespace("oom")
    key = c.s3.put(FIXTURES / "up" / "UP_MOD_XLS.pdf")
    c.submit(ns, "tight", key, maxRetries=3, resources={"limits": {"memory": "16Mi"}, "requests": {"memory": "16Mi"}})
    pj = c.wait_phase(ns, "tight", timeout=120)
    s = pj["status"]
    assert s["phase"] == "Failed" and s["error"]["reason"] == "OOMKilled", s
    assert s["error"]["code"] == "MemoryLimitExceeded" and s["attempts"] == 1, s


def test_deleting_a_running_parsejob_cancels_it(operator_cluster, start_operator):
    c = operator_cluster
    hole = BlackHole()
    try:
        start_operator(SCHEDGEN_S3_ENDPOINT_URL=hole.endpoint(c.cluster))
        ns = c.tenant_namespace("cancel")
        key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
        pj = c.submit(ns, "doomed", key)
        uid = pj["metadata"]["uid"]
        running = c.wait_phase(ns, "doomed", phases=("Running",), timeout=60)
        job_name = running["status"]["jobName"]
        wait_for(lambda: c.pods_of(ns, job_name), 60, what="a pod")
        c.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "doomed")

        def gone():
            try:
                c.get(ns, "doomed")
                return False
            except Exception:  # noqa: BLE001 - 404
                return True
        wait_for(gone, 60, what="ParseJob gone")
        assert c.row(uid)[0] == "Cancelled"
        assert [p for _, p in c.transitions(uid)] == ["Queued", "Running", "Cancelled"]
        wait_for(lambda: not c.pods_of(ns, job_name), 60, what="pods gone")
    finally:
        hole.close()


def test_invalid_specs_are_rejected_by_the_api_server(operator_cluster):
    from kubernetes.client.rest import ApiException

    c = operator_cluster
    ns = c.tenant_namespace("schema")
    with pytest.raises(ApiException) as bad_priority:
        c.submit(ns, "p", "k.pdf", priority="urgent")
    assert bad_priority.value.status == 422
    with pytest.raises(ApiException):
        c.submit(ns, "d", "k.pdf", deadlineSeconds=100000)
    with pytest.raises(ApiException):
        c.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob", "metadata": {"name": "nokey"},
            "spec": {"source": {"s3": {}}}})
    pj = c.submit(ns, "ok", "k.pdf")
    assert pj["spec"]["priority"] == "normal" and pj["spec"]["deadlineSeconds"] == 300
    assert pj["spec"]["maxRetries"] == 3 and pj["spec"]["scheduleType"] == "auto"
    with pytest.raises(ApiException) as immutable:
        c.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok",
                                                {"spec": {"source": {"s3": {"key": "other.pdf"}}}})
    assert "immutable" in str(immutable.value.body)
    c.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok",
                                            {"spec": {"priority": "high"}})  # priority may change
    # no operator runs here: remove the ParseJobs' finalizers ourselves, if any were added
    for pj in c.parsejobs(ns):
        c.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, pj["metadata"]["name"])
    time.sleep(0.5)
    c.namespaces.remove(ns)
    c.core.delete_namespace(ns)


def test_runner_pod_deleted_mid_run_says_why_and_is_retried(operator_cluster, start_operator):
    """A runner container gets SIGTERM when its pod is deleted: it writes an `Interrupted`
    summary and exits 1; a pod deleted while it ran is a disruption (as Karpenter's node
    termination deletes one), so the run goes back to the queue as Disrupted with no
    attempt counted, and the next pod finishes the ParseJob."""
    import json

    from kubernetes import watch

    c = operator_cluster
    hole = BlackHole()
    try:
        start_operator(SCHEDGEN_S3_ENDPOINT_URL=hole.endpoint(c.cluster))
        ns = c.tenant_namespace("podkill")
        key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
        uid = c.submit(ns, "victim", key, maxRetries=2, deadlineSeconds=300)["metadata"]["uid"]
        job = c.wait_phase(ns, "victim", phases=("Running",), timeout=60)["status"]["jobName"]
        pod = wait_for(lambda: next((p.metadata.name for p in c.pods_of(ns, job) if p.status.phase == "Running"),
                                    None), 90, what="a running runner pod")
        time.sleep(3)  # the runner waits on the black-holed store (its download timeout is 15 s)
        # the next attempt (and the operator) reach the real store through the same URLs
        hole.forward_to(c.pod_s3_endpoint)
        seen: list = []
        stream = watch.Watch()
        c.core.delete_namespaced_pod(pod, ns)
        for event in stream.stream(c.core.list_namespaced_pod, ns, field_selector=f"metadata.name={pod}",
                                   timeout_seconds=60):
            state = (event["object"].status.container_statuses or [None])[0]
            if state is not None and state.state.terminated is not None:
                seen.append(state.state.terminated)
            if event["type"] == "DELETED":
                stream.stop()
        assert seen, "the kubelet never reported the runner's end"
        assert seen[-1].exit_code == 1, seen[-1]
        assert json.loads(seen[-1].message)["code"] == "Interrupted", seen[-1].message
        pj = c.wait_phase(ns, "victim", timeout=180)
    finally:
        hole.close()
    s = pj["status"]
    assert s["phase"] == "Succeeded" and s["attempts"] == 1 and s["disruptions"] == 1, s
    assert [h["reason"] for h in s["history"] if h["phase"] == "Queued"][-1] == "Disrupted", s["history"]
    assert c.event_rows(uid) == 5
