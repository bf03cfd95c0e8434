"""Operator hygiene on real nodes: a Job that only carries the right labels does not
decide a ParseJob, and a finalizer never blocks a deletion forever (a black-holed
Postgres: the object goes after the bound, with a Warning Event and a metric)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from operator_e2e import wait_for
from schedgen.parsejob import (GROUP, LABEL_MANAGED_BY, LABEL_PARSEJOB, LABEL_PARSEJOB_UID, MANAGED_BY, PLURAL,
                               VERSION)

pytestmark = [pytest.mark.cluster]


class SilentPort:
    """Accepts TCP connections and never answers (a black-holed database)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # kept open, never read from or written to

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def phase(c, ns: str, name: str) -> str | None:
    return (c.get(ns, name).get("status") or {}).get("phase")


def test_a_labelled_job_without_owner_reference_does_not_decide_a_parsejob(operator_cluster, start_operator):
    c = operator_cluster
    c.set_runtime(maxConcurrent=0)  # nothing is admitted: the ParseJob stays Queued
    start_operator()
    ns = c.tenant_namespace("impostor")
    uid = c.submit(ns, "pj", "uploads/none.pdf")["metadata"]["uid"]
    wait_for(lambda: phase(c, ns, "pj") == "Queued", 60, what="Queued")
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PARSEJOB_UID: uid, LABEL_PARSEJOB: "pj"}
    c.batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "impostor", "labels": labels},
        "spec": {"suspend": True, "template": {"metadata": {"labels": labels}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "runner", "image": c.runner_image, "command": ["true"]}]}}}})
    # Before, a Job labelled with the ParseJob's uid was adopted: the ParseJob went Running.
    time.sleep(5)  # ten ticks and more
    status = c.get(ns, "pj")["status"]
    assert status["phase"] == "Queued" and not status.get("jobName"), status
    c.set_runtime(maxConcurrent=1)  # admitted now: its own Job, not the impostor
    wait_for(lambda: phase(c, ns, "pj") in ("Running", "Succeeded", "Failed"), 60, what="admitted")
    status = c.get(ns, "pj")["status"]
    assert status["jobName"] != "impostor"
    job = c.batch.read_namespaced_job(status["jobName"], ns)
    assert [(r.kind, r.uid, r.controller) for r in job.metadata.owner_references] == [("ParseJob", uid, True)]


def test_a_forged_job_with_the_parsejobs_owner_reference_is_deleted_not_adopted(operator_cluster, start_operator):
    """Someone with Job rights makes a Job named as the waiting ParseJob's next Job would
    be, with a hand-written controller ownerReference to it. Before, it was adopted as
    Running past maxConcurrent, the token bucket and the tenant check; now only a Job whose
    uid the operator recorded is a run's: the forgery is deleted, the ParseJob moves to a
    new transitionSeq (JobReplaced) and stays Queued while admission is closed."""
    from schedgen.operator.runner_jobs import SINGLE
    from schedgen.parsejob import ParseJob

    c = operator_cluster
    c.set_runtime(maxConcurrent=0)  # nothing may be admitted
    start_operator()
    ns = c.tenant_namespace("forged")
    body = c.submit(ns, "pj", "uploads/none.pdf")
    wait_for(lambda: phase(c, ns, "pj") == "Queued", 60, what="Queued")
    pj = ParseJob.of(c.get(ns, "pj"))
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_PARSEJOB_UID: pj.uid, LABEL_PARSEJOB: "pj"}
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "name": "pj", "uid": pj.uid,
             "controller": True, "blockOwnerDeletion": True}
    forged = SINGLE.name([pj])
    c.batch.create_namespaced_job(ns, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": forged, "labels": labels, "ownerReferences": [owner]},
        "spec": {"suspend": True, "template": {"metadata": {"labels": labels}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "runner", "image": c.runner_image, "command": ["true"]}]}}}})
    wait_for(lambda: not [j for j in c.jobs_of(ns, pj.uid) if not j.metadata.deletion_timestamp],
             60, what="the forged Job deleted")
    status = c.get(ns, "pj")["status"]
    assert status["phase"] == "Queued" and not status.get("jobName"), status
    assert status["history"][-1]["reason"] == "JobReplaced", status["history"]
    assert (c.row(body["metadata"]["uid"]) or ("Queued",))[0] == "Queued"


def test_the_finalizer_gives_up_on_a_black_holed_postgres(operator_cluster, start_operator):
    c = operator_cluster
    c.set_runtime(maxConcurrent=0)
    hole = SilentPort()
    try:
        op = start_operator(SCHEDGEN_DATABASE_URL=f"postgresql://schedgen@127.0.0.1:{hole.port}/schedgen",
                            SCHEDGEN_FINALIZE_RECORD_TIMEOUT_SECONDS="8")
        ns = c.tenant_namespace("abandon")
        c.submit(ns, "pj", "uploads/none.pdf")
        wait_for(lambda: phase(c, ns, "pj") == "Queued", 60, what="Queued (the scheduler never waits on Postgres)")
        # Queued is the CRD's default status, there at once: wait for the operator's finalizer
        wait_for(lambda: "schedgen.io/record" in (c.get(ns, "pj")["metadata"].get("finalizers") or []), 60,
                 what="the operator's finalizer")
        t0 = time.monotonic()
        c.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "pj")
        wait_for(lambda: not c.parsejobs(ns), 90, what="the ParseJob to go")
        took = time.monotonic() - t0
        assert 8 <= took < 90, took  # held while it retried, then let go
        wait_for(lambda: any(e.reason == "RecordAbandoned" and e.type == "Warning" for e in c.events_for(ns, "pj")),
                 30, what="the RecordAbandoned Event")
        assert (op.metric("schedgen_records_abandoned_total") or 0) >= 1
        assert (op.metric("schedgen_records_errors_total") or 0) >= 1  # the records loop timed out and retries
    finally:
        hole.close()


def configmap_finalizers(c) -> list[str]:
    from operator_e2e import CONFIGMAP, OPERATOR_NS

    return list(c.core.read_namespaced_config_map(CONFIGMAP, OPERATOR_NS).metadata.finalizers or [])


def test_a_stopped_operator_leaves_no_finalizer_on_its_configmap(operator_cluster, start_operator):
    """kopf keeps a finalizer on the object carrying its daemons; an operator that stops
    (helm uninstall deletes it with the ConfigMap) removes it, so the ConfigMap is never
    stuck Terminating. The next operator adds it again."""
    from schedgen.parsejob import FINALIZER

    c = operator_cluster
    op = start_operator()
    wait_for(lambda: FINALIZER in configmap_finalizers(c), 30, what="kopf's finalizer on the ConfigMap")
    op.stop()
    assert not op.running
    assert FINALIZER not in configmap_finalizers(c)
    start_operator()
    wait_for(lambda: FINALIZER in configmap_finalizers(c), 30, what="the finalizer back with a new operator")


def test_a_silent_postgres_never_stops_admission_and_everything_catches_up(operator_cluster, start_operator):
    """The operator's DSN points at a relay that accepts and never answers: ParseJobs are
    still admitted and their runners finish (the scheduler loop is not held); completion
    and records wait for the database (the events are written before Succeeded). When the
    relay answers again, every ParseJob succeeds and its rows catch up."""
    import urllib.parse

    from operator_e2e import FIXTURES
    from test_record_store_blackhole import Hole

    c = operator_cluster
    parts = urllib.parse.urlsplit(c.postgres.dsn)
    hole = Hole((parts.hostname, parts.port))
    hole.open = False
    try:
        c.set_runtime(maxConcurrent=2, maxPerTenant=2)
        op = start_operator(SCHEDGEN_DATABASE_URL=c.postgres.dsn.replace(f":{parts.port}/", f":{hole.port}/"))
        ns = c.tenant_namespace("silentpg")
        key = c.s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
        for i in range(3):
            c.submit(ns, f"pj{i}", key, scheduleType="exam")
        wait_for(lambda: sum(1 for pj in c.parsejobs(ns) if (pj.get("status") or {}).get("phase") == "Running") == 2,
                 90, what="two admitted while Postgres is silent")
        wait_for(lambda: (op.metric("schedgen_records_errors_total") or 0) >= 1, 90,
                 what="the records loop to time out and retry")
        hole.open = True
        items = c.wait_all_finished([ns], timeout=300)
        assert [pj["status"]["phase"] for pj in items] == ["Succeeded"] * 3, [pj["status"] for pj in items]
        for pj in items:
            uid = pj["metadata"]["uid"]
            wait_for(lambda: (c.row(uid) or (None,))[0] == "Succeeded", 60, what="the row to catch up")
            assert c.transitions(uid) == [(1, "Queued"), (2, "Running"), (3, "Succeeded")]
    finally:
        hole.close()


def test_a_runner_image_the_node_cannot_get_fails_the_run_with_the_kubelets_words(operator_cluster, start_operator):
    """A runner image that is on no node (pullPolicy Never: the kubelet says
    ErrImageNeverPull) would hold the run until its deadline. After the grace the run
    fails ImagePullFailed with the kubelet's message, its Job deleted."""
    c = operator_cluster
    c.set_runtime(maxConcurrent=2)
    start_operator(SCHEDGEN_RUNNER_IMAGE="localhost/schedgen-runner:not-on-any-node",
                   SCHEDGEN_IMAGE_PULL_GRACE_SECONDS="5")
    ns = c.tenant_namespace("noimage")
    c.submit(ns, "pj", "uploads/none.pdf")
    wait_for(lambda: phase(c, ns, "pj") == "Failed", 180, what="Failed")
    status = c.get(ns, "pj")["status"]
    assert (status["error"]["reason"], status["error"]["code"]) == ("ImagePullFailed", "RunnerImageUnavailable")
    assert "not-on-any-node" in status["error"]["message"] and "ErrImageNeverPull" in status["error"]["message"]
    wait_for(lambda: not c.batch.list_namespaced_job(ns).items, 60, what="its Job deleted")
