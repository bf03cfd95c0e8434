"""Real nodes: containerd + kubelet v1.37.2 with kube-scheduler and kube-proxy, in the cluster's own
network namespace. Every assertion is about what the kubelet/containerd/kernel really did."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from localkube import network
from localkube.images import BUSYBOX_REF, PAUSE_REF, busybox_archive
from localkube.testing import job_manifest, job_pods, wait_for, wait_job_finished

pytestmark = pytest.mark.cluster

BUSYBOX = BUSYBOX_REF


def _core(api):
    return client.CoreV1Api(api)


# busybox's httpd serving one page from a writable dir (the image has /tmp)
HTTPD = "mkdir -p /tmp/www && echo \"{text}\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"


def pod_manifest(name: str, command: list[str], **spec) -> dict:
    container = {"name": "main", "image": BUSYBOX, "command": command}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [container], **spec}}


def wait_pod(api, ns: str, name: str, phases=("Succeeded", "Failed"), timeout: float = 60):
    def check():
        pod = _core(api).read_namespaced_pod(name, ns)
        return pod if pod.status.phase in phases else None
    return wait_for(check, timeout, what=f"pod {ns}/{name} in {phases}")


def http_get(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def terminated(pod):
    cs = (pod.status.container_statuses or [None])[0]
    return cs.state.terminated if cs and cs.state else None


def test_nodes_are_kubelets_on_containerd(kubelet_cluster):
    out = kubelet_cluster.kubectl("get", "nodes", "-o", "wide").stdout
    row = next(line for line in out.splitlines() if line.startswith("node-1 "))
    assert re.search(r"\bReady\b", row) and "v1.37.2" in row and "containerd://1.6.20" in row, out
    assert kubelet_cluster.node_ip("node-1") in row
    node = json.loads(kubelet_cluster.kubectl("get", "node", "node-1", "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.37.2" and info["containerRuntimeVersion"] == "containerd://1.6.20"
    # allocatable is cut to the requested size with kubeReserved (the machine is bigger)
    assert node["status"]["allocatable"]["memory"] == "4Gi" and node["status"]["allocatable"]["cpu"] == "2"
    assert node["status"]["allocatable"]["pods"] == "110"
    # the node authenticates as itself, in system:nodes -- not as a cluster admin
    who = json.loads(subprocess.run(
        [kubelet_cluster.bin("kubectl"), f"--kubeconfig={kubelet_cluster.node_kubeconfig('node-1')}",
         "auth", "whoami", "-o", "json"], capture_output=True, text=True, check=True).stdout)["status"]["userInfo"]
    assert who["username"] == "system:node:node-1"
    assert "system:nodes" in who["groups"] and "system:masters" not in who["groups"]
    images = kubelet_cluster._real_node("node-1").images()
    assert PAUSE_REF in images and BUSYBOX in images


def test_restricted_pod_runs_as_non_root_and_reports_its_termination_message(kube_api):
    core = _core(kube_api)
    ns = f"restricted-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", ns), 30, what="default SA")
        script = ("w=$(touch /probe 2>/dev/null && echo yes || echo no); "
                  "t=$(test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo yes || echo no); "
                  "printf 'uid=%s gid=%s rootfs-writable=%s %s %s %s token=%s' \"$(id -u)\" \"$(id -g)\" \"$w\" "
                  "\"$(grep ^Seccomp: /proc/self/status | tr -d ' \\t')\" "
                  "\"$(grep ^CapEff: /proc/self/status | tr -d ' \\t')\" "
                  "\"$(grep ^NoNewPrivs: /proc/self/status | tr -d ' \\t')\" \"$t\" > /dev/termination-log")
        pod = pod_manifest("restricted", ["sh", "-c", script],
                           automountServiceAccountToken=False,
                           securityContext={"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                           container={"securityContext": {"allowPrivilegeEscalation": False,
                                                          "readOnlyRootFilesystem": True,
                                                          "capabilities": {"drop": ["ALL"]}}})
        core.create_namespaced_pod(ns, pod)
        done = wait_pod(kube_api, ns, "restricted")
        t = terminated(done)
        assert done.status.phase == "Succeeded" and t.exit_code == 0 and t.reason == "Completed"
        assert t.message == ("uid=65532 gid=65532 rootfs-writable=no Seccomp:2 CapEff:0000000000000000 "
                             "NoNewPrivs:1 token=no"), t.message
        assert t.container_id.startswith("containerd://")
        # and PodSecurity 'restricted' is enforced for real: a root pod is refused
        with pytest.raises(ApiException) as ei:
            core.create_namespaced_pod(ns, pod_manifest("rooty", ["true"]))
        assert ei.value.status == 403 and "violates PodSecurity" in ei.value.body
    finally:
        core.delete_namespace(ns)


def test_memory_limit_is_enforced_by_the_kernel_and_reported_oomkilled(kube_api, kube_ns):
    job = job_manifest("oom", ["dd", "if=/dev/zero", "of=/dev/null", "bs=300M", "count=1"], image=BUSYBOX,
                       resources={"limits": {"memory": "64Mi", "cpu": "200m"}})
    client.BatchV1Api(kube_api).create_namespaced_job(kube_ns, job)
    cond = wait_job_finished(kube_api, kube_ns, "oom", 90)
    assert cond["type"] == "Failed", cond
    (pod,) = job_pods(kube_api, kube_ns, "oom")
    t = terminated(pod)
    assert (t.exit_code, t.reason) == (137, "OOMKilled")


def test_job_active_deadline_kills_the_container(kubelet_cluster, kube_api, kube_ns):
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(kube_ns, job_manifest("slow", ["sleep", "300"], image=BUSYBOX,
                                                      activeDeadlineSeconds=4))

    def running():
        for p in job_pods(kube_api, kube_ns, "slow"):
            cs = (p.status.container_statuses or [None])[0]
            if cs and cs.state and cs.state.running:
                return p
    pod = wait_for(running, 60, what="running pod")
    node = kubelet_cluster._real_node(pod.spec.node_name)
    cid = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    assert cid in node.ctr("tasks", "ls").stdout
    cond = wait_job_finished(kube_api, kube_ns, "slow", 60)
    assert cond["type"] == "Failed" and cond["reason"] == "DeadlineExceeded", cond
    wait_for(lambda: cid not in node.ctr("tasks", "ls").stdout, 30, what="the container's task to end")


def test_logs_exec_and_port_forward_go_through_the_apiserver_to_the_kubelet(kubelet_cluster, kube_api, kube_ns):
    core = _core(kube_api)
    core.create_namespaced_pod(kube_ns, pod_manifest(
        "talk", ["sh", "-c", "for i in 1 2 3; do echo line $i; done; " + HTTPD.format(text="hello from the pod")],
        restartPolicy="Always"))
    wait_pod(kube_api, kube_ns, "talk", phases=("Running",))
    wait_for(lambda: "line 3" in kubelet_cluster.kubectl("-n", kube_ns, "logs", "talk").stdout, 30, what="logs")
    out = kubelet_cluster.kubectl("-n", kube_ns, "exec", "talk", "--", "sh", "-c", "echo $((6*7)) $(hostname)").stdout
    assert out.split() == ["42", "talk"]
    pf = subprocess.Popen([kubelet_cluster.bin("kubectl"), f"--kubeconfig={kubelet_cluster.kubeconfig}", "-n", kube_ns,
                           "port-forward", "pod/talk", ":8080"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    try:
        line = pf.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

        assert "hello from the pod" in wait_for(lambda: http_get("127.0.0.1", port), 30, what="port-forward")
    finally:
        pf.terminate()
        pf.wait(10)


class HostServer:
    """A TCP server on the host address: answers each connection with what it saw."""

    def __init__(self, host: str):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            with conn:
                self.peers.append(peer[0])
                conn.sendall(f"host saw {peer[0]}\n".encode())

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def test_pod_reaches_a_tcp_server_on_the_host_address(kubelet_cluster, kube_api, kube_ns):
    host = kubelet_cluster.host_address
    server = HostServer(host)
    try:
        _core(kube_api).create_namespaced_pod(kube_ns, pod_manifest(
            "client", ["sh", "-c", f"echo hi | nc -w 5 {host} {server.port} > /dev/termination-log"]))
        pod = wait_pod(kube_api, kube_ns, "client")
        t = terminated(pod)
        assert pod.status.phase == "Succeeded", t
        plan = kubelet_cluster.net_plan
        assert t.message.strip() == f"host saw {plan.ns_address}"
        assert server.peers == [plan.ns_address]
    finally:
        server.close()


def test_pod_bridge_keeps_its_address_while_pods_come_and_go(kubelet_cluster, kube_api, kube_ns):
    """An unset bridge address follows its lowest port's, so every pod start or stop could change
    the gateway's MAC under the running pods (their traffic vanished until ARP expired)."""
    plan = kubelet_cluster.net_plan

    def bridge() -> tuple[str, str]:
        inside = ("ip", "netns", "exec", plan.netns)
        mac = subprocess.run([*inside, "cat", f"/sys/class/net/{network.BRIDGE}/address"],
                             capture_output=True, text=True, check=True).stdout.strip()
        kind = subprocess.run([*inside, "cat", f"/sys/class/net/{network.BRIDGE}/addr_assign_type"],
                              capture_output=True, text=True, check=True).stdout.strip()
        return mac, kind

    for i in range(3):
        _core(kube_api).create_namespaced_pod(kube_ns, pod_manifest(f"churn-{i}", ["true"]))
        wait_pod(kube_api, kube_ns, f"churn-{i}")
        assert bridge() == (plan.bridge_mac, "3")  # NET_ADDR_SET: the kernel leaves it alone


def test_services_route_through_kube_proxy(kubelet_cluster, kube_api, kube_ns):
    core = _core(kube_api)
    apps = client.AppsV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(kube_ns, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "web", "image": BUSYBOX, "command": ["sh", "-c", HTTPD.format(text="web $(hostname)")],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}})
    svc = core.create_namespaced_service(kube_ns, {
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    wait_for(lambda: apps.read_namespaced_deployment("web", kube_ns).status.ready_replicas == 1, 60,
             what="web ready")
    # pod -> ClusterIP (and pod -> the apiserver through the kubernetes Service). The pod
    # being Ready is not kube-proxy having synced its endpoint: a few tries, a second apart.
    core.create_namespaced_pod(kube_ns, pod_manifest("client", ["sh", "-c",
        # (busybox-static's wget crashes on this libc; a raw request through nc does the same job)
        "for try in 1 2 3 4 5 6 7 8 9 10; do "
        f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {svc.spec.cluster_ip} 80 | tail -n 1 > /tmp/out; "
        "grep -q web /tmp/out && break; sleep 1; done; "
        "grep -q web /tmp/out || exit 1; "
        "echo | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT >/dev/null || exit 2; "
        "cat /tmp/out > /dev/termination-log"]))
    pod = wait_pod(kube_api, kube_ns, "client")
    assert pod.status.phase == "Succeeded", terminated(pod)
    assert terminated(pod).message.startswith("web web-")
    # host -> NodePort on a node's address
    node_port = svc.spec.ports[0].node_port
    ip = kubelet_cluster.node_ip("node-1")

    assert "web web-" in wait_for(lambda: http_get(ip, node_port), 30, what="NodePort from the host")


def test_nothing_routes_off_the_machine_and_pulls_fail_locally(kubelet_cluster, kube_api, kube_ns):
    plan = kubelet_cluster.net_plan
    routes = subprocess.run(["ip", "-n", plan.netns, "route", "show"], capture_output=True, text=True,
                            check=True).stdout
    assert "default" not in routes, routes
    # the kernel's answer for an address outside (no packet is sent to ask it)
    probe = subprocess.run(["ip", "-n", plan.netns, "route", "get", "192.0.2.1"], capture_output=True, text=True)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower(), probe
    # a pull is refused by the proxy trap on 127.0.0.1:9 inside the namespace
    _core(kube_api).create_namespaced_pod(kube_ns, {"metadata": {"name": "pull"}, "spec": {"containers": [
        {"name": "c", "image": "docker.io/library/not-imported:1", "imagePullPolicy": "IfNotPresent"}]}})

    def pull_error():
        pod = _core(kube_api).read_namespaced_pod("pull", kube_ns)
        cs = (pod.status.container_statuses or [None])[0]
        w = cs.state.waiting if cs and cs.state else None
        return w if w and w.reason in ("ErrImagePull", "ImagePullBackOff") and w.message else None
    waiting = wait_for(pull_error, 60, what="image pull error")
    assert "127.0.0.1:9" in waiting.message, waiting.message


def test_add_node_schedules_a_pod_that_did_not_fit(kubelet_cluster, kube_api, kube_ns):
    core = _core(kube_api)
    core.create_namespaced_pod(kube_ns, pod_manifest("big", ["true"], container={
        "resources": {"requests": {"memory": "6Gi", "cpu": "100m"}}}))

    def unschedulable():
        pod = core.read_namespaced_pod("big", kube_ns)
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in pod.status.conditions or [])
    wait_for(unschedulable, 30, what="Unschedulable")
    t0 = time.monotonic()
    kubelet_cluster.add_node("node-big", cpu="2", memory="8Gi", pods=20, labels={"schedgen.test/pool": "big"})
    ready_after = time.monotonic() - t0
    pod = wait_pod(kube_api, kube_ns, "big")
    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "node-big"
    node = core.read_node("node-big")
    assert node.metadata.labels["schedgen.test/pool"] == "big"
    assert node.status.node_info.kubelet_version == "v1.37.2"
    assert node.status.addresses[0].address == kubelet_cluster.node_ip("node-big")
    assert kubelet_cluster._real_node("node-big").images()  # imported archives followed the new node
    print(f"node-big Ready {ready_after:.1f}s after add_node")


def test_node_credentials_cannot_modify_another_node(kubelet_cluster):
    if "node-2" not in kubelet_cluster.state["nodes"]:
        kubelet_cluster.add_node("node-2", cpu="1", memory="1Gi", pods=10)
    from kubernetes import config
    node2 = client.CoreV1Api(config.new_client_from_config(config_file=str(kubelet_cluster.node_kubeconfig("node-2"))))
    patch = {"metadata": {"labels": {"schedgen.test/touched": "yes"}}}
    assert node2.patch_node("node-2", patch).metadata.labels["schedgen.test/touched"] == "yes"
    # the Node authorizer lets a node patch Nodes; the NodeRestriction admission plugin stops it at
    # any Node but its own
    with pytest.raises(ApiException) as ei:
        node2.patch_node("node-1", patch)
    assert ei.value.status == 403
    assert 'node "node-2" is not allowed to modify node "node-1"' in json.loads(ei.value.body)["message"]
    with pytest.raises(ApiException) as ei:
        node2.delete_node("node-1")
    assert ei.value.status == 403, ei.value.body
    # and reading other Nodes or any Secret is denied by the Node authorizer
    with pytest.raises(ApiException) as ei:
        node2.read_node("node-1")
    assert ei.value.status == 403 and "only its own Node object" in json.loads(ei.value.body)["message"]
    with pytest.raises(ApiException) as ei:
        node2.list_secret_for_all_namespaces()
    assert ei.value.status == 403
    labels = client.CoreV1Api(kubelet_cluster.api_client()).read_node("node-1").metadata.labels
    assert "schedgen.test/touched" not in labels


def assert_nothing_left(state_dir, pids: dict, plan, cid: str) -> None:
    import psutil
    from localkube import hostfs
    assert not [k for k, pid in pids.items() if psutil.pid_exists(pid) and
                psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not hostfs.cgroup_pids(f"/schedgen/{cid}")
    assert not [h for h in hostfs.hierarchies() if (h / "schedgen" / cid).exists()]
    assert not [m for m, _, _ in hostfs.mounts() if m.startswith(str(state_dir)) or f"/schedgen/{cid}" in m]
    assert not network.exists(plan) and not (network.RUN_DIR / cid).exists()
    assert not (network.RUN_DIR / f"slot-{plan.slot}.json").exists()
    assert subprocess.run(["ip", "link", "show", plan.host_if], capture_output=True).returncode != 0


def test_down_stops_everything_and_cleans_up(tmp_path):
    """A cluster of its own: start, run a pod, ``hack/cluster down``; nothing it made is left."""
    from localkube import hostfs
    from localkube.cluster import REPO_ROOT, LocalCluster

    c = LocalCluster(state_dir=tmp_path / "c")
    t0 = time.monotonic()
    try:
        c.start()
        t_cp = time.monotonic() - t0
        c.import_image(busybox_archive())
        c.add_node("n1", cpu="1", memory="1Gi", pods=10)
        t_all = time.monotonic() - t0
        c.kubectl("run", "p", f"--image={BUSYBOX}", "--restart=Never", "--", "sleep", "600")
        wait_for(lambda: c.kubectl("get", "pod", "p", "-o", "jsonpath={.status.phase}").stdout == "Running", 60,
                 what="pod running")
        pids = {k: v["pid"] for k, v in c.state["processes"].items()}
        plan, cid = c.net_plan, c.cluster_id
        assert hostfs.cgroup_pids(f"/schedgen/{cid}")
        assert any(m.startswith(str(tmp_path)) for m, _, _ in hostfs.mounts())
    except BaseException:
        c.stop()
        raise
    done = subprocess.run([str(REPO_ROOT / "hack" / "cluster"), "--state-dir", str(tmp_path / "c"), "down"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_nothing_left(tmp_path / "c", pids, plan, cid)
    print(f"cold cluster: control plane {t_cp:.1f}s, + first node Ready {t_all:.1f}s")


def test_the_cluster_of_a_killed_session_is_stopped_by_the_next_start(tmp_path):
    """A session (here a child process) starts a cluster and dies by SIGKILL: its cluster outlives
    it, and the next cluster start on the machine (reclaim_stale_networks) stops and removes it."""
    import sys
    from localkube.cluster import HACK_DIR, LocalCluster, reclaim_stale_networks

    state = tmp_path / "s"
    script = (f"import sys, time; sys.path.insert(0, {str(HACK_DIR)!r})\n"
              "from localkube.cluster import LocalCluster\n"
              f"c = LocalCluster(state_dir={str(state)!r}, session=True).start()\n"
              "c.add_node('n1', cpu='1', memory='1Gi', pods=10)\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
    finally:
        child.kill()
        child.wait(10)
    c = LocalCluster(state_dir=state)
    pids = {k: v["pid"] for k, v in c.state["processes"].items()}
    plan, cid = c.net_plan, c.cluster_id
    assert c.is_running() and network.exists(plan)
    assert plan.slot in reclaim_stale_networks()
    assert_nothing_left(state, pids, plan, cid)


