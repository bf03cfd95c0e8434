"""Agent mode (SCHEDGEN_NODE_MODE=agent): the control plane + the process agent behave like a real
cluster for plain batch/v1 Jobs. Kept while end-to-end tests still run the runner through the
agent's image map; the real nodes are tested in test_real_nodes.py."""

from __future__ import annotations

import os
import time

import psutil
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from localkube.testing import (container_pid, job_manifest, job_pods, wait_for,
                               wait_job_finished)

pytestmark = pytest.mark.cluster


def _batch(api):
    return client.BatchV1Api(api)


def _core(api):
    return client.CoreV1Api(api)


def _terminated(pod):
    cs = (pod.status.container_statuses or [None])[0]
    return cs.state.terminated if cs and cs.state else None


def test_apiserver_and_kubectl(agent_cluster):
    out = agent_cluster.kubectl("get", "--raw=/readyz").stdout
    assert out.strip() == "ok"
    nodes = agent_cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert "node/node-1" in nodes
    version = agent_cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.' in version


def test_job_succeeds_with_env_and_termination_message(agent_api, agent_ns):
    ns = agent_ns
    core = _core(agent_api)
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"mode": "fast"}})
    job = job_manifest("ok", ["sh", "-c", 'printf "%s|%s|%s|%s|%s" "$PW" "$MODE" "$POD" "$GREETING" "$TMPDIR" '
                                          '> "$TERMINATION_MESSAGE_PATH"; echo done'])
    job["spec"]["template"]["metadata"] = {"labels": {"app": "demo"}}
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hello $(WHO)"},
    ]
    _batch(agent_api).create_namespaced_job(ns, job)
    cond = wait_job_finished(agent_api, ns, "ok", 60)
    assert cond["type"] == "Complete", cond
    (pod,) = job_pods(agent_api, ns, "ok")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.node_name
    assert pod.status.pod_ip == "127.0.0.1"
    t = _terminated(pod)
    assert t.exit_code == 0 and t.reason == "Completed"
    pw, mode, label, greeting, tmpdir = t.message.split("|")
    assert (pw, mode, label, greeting) == ("hunter2", "fast", "demo", "hello world")
    assert pod.metadata.uid[:8] in tmpdir
    conds = {c.type: c.status for c in pod.status.conditions}
    assert conds["PodScheduled"] == "True" and conds["Ready"] == "False"


def test_backoff_limit_exceeded_after_three_pods(agent_api, agent_ns):
    ns = agent_ns
    _batch(agent_api).create_namespaced_job(ns, job_manifest("fail", ["sh", "-c", "exit 1"], backoff_limit=2))
    cond = wait_job_finished(agent_api, ns, "fail", 90)
    assert cond["type"] == "Failed" and cond["reason"] == "BackoffLimitExceeded", cond
    assert cond["job"].status.failed == 3
    pods = job_pods(agent_api, ns, "fail")
    assert len(pods) == 3
    for p in pods:
        assert p.status.phase == "Failed"
        assert _terminated(p).exit_code == 1 and _terminated(p).reason == "Error"


def test_active_deadline_kills_process(agent_api, agent_ns):
    ns = agent_ns
    _batch(agent_api).create_namespaced_job(
        ns, job_manifest("slow", ["sh", "-c", "sleep 300"], activeDeadlineSeconds=3))

    def running_pid():
        for p in job_pods(agent_api, ns, "slow"):
            if p.status.phase == "Running":
                return container_pid(p)
    pid = wait_for(running_pid, 30, what="running pod")
    assert psutil.pid_exists(pid)
    cond = wait_job_finished(agent_api, ns, "slow", 30)
    assert cond["type"] == "Failed" and cond["reason"] == "DeadlineExceeded", cond

    def gone():
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    wait_for(gone, 15, what=f"pid {pid} to exit")
    wait_for(lambda: not job_pods(agent_api, ns, "slow"), 30, what="pod removal")


def test_pod_failure_policy_fail_job(agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("pfp", ["sh", "-c", "exit 2"], backoff_limit=6, podFailurePolicy={"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]})
    _batch(agent_api).create_namespaced_job(ns, job)
    cond = wait_job_finished(agent_api, ns, "pfp", 60)
    assert cond["type"] == "Failed" and cond["reason"] == "PodFailurePolicy", cond
    assert len(job_pods(agent_api, ns, "pfp")) == 1


def test_memory_limit_oomkilled(agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("oom", ["python", "-c", "b = bytearray(200 * 1024 * 1024); import time; time.sleep(5)"],
                       image="python:3.11", resources={"limits": {"memory": "64Mi", "cpu": "100m"}})
    _batch(agent_api).create_namespaced_job(ns, job)
    cond = wait_job_finished(agent_api, ns, "oom", 60)
    assert cond["type"] == "Failed"
    (pod,) = job_pods(agent_api, ns, "oom")
    t = _terminated(pod)
    assert (t.exit_code, t.reason) == (137, "OOMKilled")


def test_termination_message_fallback_to_logs(agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("logs", ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 3"])
    job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    _batch(agent_api).create_namespaced_job(ns, job)
    wait_job_finished(agent_api, ns, "logs", 60)
    (pod,) = job_pods(agent_api, ns, "logs")
    t = _terminated(pod)
    assert t.exit_code == 3
    lines = t.message.strip().splitlines()
    assert len(lines) == 80 and lines[-1] == "line 100" and lines[0] == "line 21"


def test_custom_termination_message_path(agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("tmp", ["sh", "-c", 'echo -n "custom $TERMINATION_MESSAGE_PATH" > "$TERMINATION_MESSAGE_PATH"'])
    job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/tmp/status/msg"
    _batch(agent_api).create_namespaced_job(ns, job)
    wait_job_finished(agent_api, ns, "tmp", 60)
    (pod,) = job_pods(agent_api, ns, "tmp")
    msg = _terminated(pod).message
    assert msg.startswith("custom ") and msg.endswith("/rootfs/tmp/status/msg")


def test_ttl_after_finished_deletes_job(agent_api, agent_ns):
    ns = agent_ns
    _batch(agent_api).create_namespaced_job(ns, job_manifest("ttl", ["true"], ttlSecondsAfterFinished=0))

    def deleted():
        try:
            _batch(agent_api).read_namespaced_job("ttl", ns)
            return False
        except ApiException as e:
            return e.status == 404
    wait_for(deleted, 60, what="TTL deletion")
    wait_for(lambda: not job_pods(agent_api, ns, "ttl"), 30, what="pod GC")


def test_owner_deletion_garbage_collects_jobs_and_pods(agent_api, agent_ns):
    ns = agent_ns
    owner = _core(agent_api).create_namespaced_config_map(ns, {"metadata": {"name": "owner"}})
    job = job_manifest("owned", ["sh", "-c", "sleep 300"])
    job["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                           "uid": owner.metadata.uid}]
    _batch(agent_api).create_namespaced_job(ns, job)
    pid = wait_for(lambda: next((container_pid(p) for p in job_pods(agent_api, ns, "owned")
                                 if p.status.phase == "Running"), None), 30, what="running pod")
    _core(agent_api).delete_namespaced_config_map("owner", ns)

    def all_gone():
        try:
            _batch(agent_api).read_namespaced_job("owned", ns)
            return False
        except ApiException as e:
            if e.status != 404:
                raise
        return not job_pods(agent_api, ns, "owned")
    wait_for(all_gone, 60, what="garbage collection of job and pods")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unschedulable_until_node_added(agent_cluster, agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("big", ["true"], resources={"requests": {"cpu": "3", "memory": "1Gi"}})
    _batch(agent_api).create_namespaced_job(ns, job)

    def unschedulable():
        for p in job_pods(agent_api, ns, "big"):
            for c in p.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    return p
    pod = wait_for(unschedulable, 30, what="Unschedulable condition")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    time.sleep(1)
    assert job_pods(agent_api, ns, "big")[0].spec.node_name is None
    agent_cluster.add_node("node-big", cpu="4", memory="8Gi")
    cond = wait_job_finished(agent_api, ns, "big", 60)
    assert cond["type"] == "Complete"
    assert job_pods(agent_api, ns, "big")[0].spec.node_name == "node-big"


def test_pod_security_restricted_rejects_privileged(agent_api):
    core = _core(agent_api)
    ns = f"psa-{os.getpid()}-{int(time.time())}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        pod = {"metadata": {"name": "priv"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "command": ["true"], "securityContext": {"privileged": True}}]}}
        with pytest.raises(ApiException) as ei:
            core.create_namespaced_pod(ns, pod)
        assert ei.value.status == 403 and "violates PodSecurity" in ei.value.body
    finally:
        core.delete_namespace(ns)


def test_many_jobs(agent_api, agent_ns):
    ns = agent_ns
    batch = _batch(agent_api)
    n = 60
    for i in range(n):
        batch.create_namespaced_job(ns, job_manifest(f"j{i}", ["sh", "-c", f"sleep 0.{i % 10}; exit {i % 2}"],
                                                     resources={"requests": {"cpu": "50m", "memory": "32Mi"}}))

    def done():
        jobs = batch.list_namespaced_job(ns).items
        fin = [j for j in jobs if any(c.type in ("Complete", "Failed") and c.status == "True"
                                      for c in j.status.conditions or [])]
        return len(fin) == n and jobs
    jobs = wait_for(done, 120, interval=0.5, what="all jobs finished")
    ok = sorted(int(j.metadata.name[1:]) for j in jobs if j.status.succeeded == 1)
    assert ok == [i for i in range(n) if i % 2 == 0]


def test_init_container_and_on_failure_restart(agent_api, agent_ns):
    ns = agent_ns
    job = job_manifest("retry", ["sh", "-c", 'test "$(cat "$HOME/init")" = ready || exit 9; '
                                             'if [ -f "$HOME/tried" ]; then exit 0; fi; touch "$HOME/tried"; exit 1'],
                       restart_policy="OnFailure", backoff_limit=3)
    job["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "init", "image": "busybox", "command": ["sh", "-c", 'echo ready > "$HOME/init"']}]
    _batch(agent_api).create_namespaced_job(ns, job)
    cond = wait_job_finished(agent_api, ns, "retry", 60)
    assert cond["type"] == "Complete", cond
    (pod,) = job_pods(agent_api, ns, "retry")
    cs = pod.status.container_statuses[0]
    assert cs.restart_count == 1
    assert cs.last_state.terminated.exit_code == 1
    assert cs.state.terminated.exit_code == 0
    assert pod.status.init_container_statuses[0].state.terminated.reason == "Completed"


def test_pod_gets_service_account_kubeconfig_and_image_map_updates(agent_cluster, agent_api, agent_ns):
    ns = agent_ns
    kubectl = agent_cluster.bin("kubectl")
    agent_cluster.set_image("whoami-tool", [kubectl, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
    job = job_manifest("who", [], image="whoami-tool:1.0")
    job["spec"]["template"]["spec"]["containers"][0].pop("command")
    job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    job["spec"]["template"]["spec"]["containers"][0]["args"] = []
    _batch(agent_api).create_namespaced_job(ns, job)
    cond = wait_job_finished(agent_api, ns, "who", 60)
    (pod,) = job_pods(agent_api, ns, "who")
    assert cond["type"] == "Complete", _terminated(pod)
    log = (next((agent_cluster.state_dir / "nodes").glob(f"*/pods/{ns}_{pod.metadata.name}_*/main.log"))).read_text()
    assert f"system:serviceaccount:{ns}:default" in log
