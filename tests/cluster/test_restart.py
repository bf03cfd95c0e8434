"""``up`` -> ``down`` -> ``up`` on one state dir, with exited containers in the node's state (issue
#24): the second ``up`` returns only when the node's kubelet, started by it, reports Ready -- not on
the Ready condition kept in etcd from before ``down`` -- and a new pod runs. A failed ``up`` leaves
nothing running. Each test has a cluster of its own in a temp state dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from localkube import cri, hostfs, network
from localkube.cluster import REPO_ROOT, LocalCluster, _rfc3339
from localkube.images import BUSYBOX_REF, busybox_archive
from localkube.testing import wait_for

pytestmark = pytest.mark.cluster

NODE = "node-1"


@pytest.fixture
def short_tmp():
    """A short state dir: the kubelet's unix sockets under it must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="lk-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cluster_cli(state_dir, *args, env=None, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHEDGEN_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(REPO_ROOT / "hack" / "cluster"), "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def processes_using(state_dir) -> list[str]:
    """Command lines of running processes that name the state dir (etcd, apiserver, containerd, ...)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if str(state_dir) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            out.append(f"{p.pid}: {cmd[:160]}")
    return out


def ready_condition(c: LocalCluster) -> dict:
    node = json.loads(c.kubectl("get", "node", NODE, "-o", "json").stdout)
    return next(x for x in node["status"]["conditions"] if x["type"] == "Ready")


def run_pod(c: LocalCluster, name: str) -> None:
    c.kubectl("run", name, f"--image={BUSYBOX_REF}", "--restart=Never", "--image-pull-policy=Never",
              "--overrides", json.dumps({"spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1}}),
              "--", "sh", "-c", f"echo {name} done")
    phase = wait_for(lambda: c.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
                     in ("Succeeded", "Failed") and
                     c.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}").stdout, 90,
                     what=f"pod {name} to finish")
    assert phase == "Succeeded", c.kubectl("describe", "pod", name, check=False).stdout
    assert c.kubectl("logs", name).stdout.strip() == f"{name} done"


def test_up_down_up_with_exited_containers_on_the_node(short_tmp):
    state = short_tmp / "c"
    c = LocalCluster(state_dir=state)
    try:
        c.start()
        c.import_image(busybox_archive())
        c.add_node(NODE, cpu="1", memory="1Gi", pods=20)
        # pods run to completion: their exited containers stay in the node's containerd
        for i in range(6):
            run_pod(c, f"first-{i}")
        exited = c._real_node(NODE).ctr("containers", "ls", "-q").stdout.split()
        assert len(exited) >= 12, exited  # 6 pods: a sandbox and a container each
        before = ready_condition(c)
        assert before["status"] == "True"
    finally:
        c.stop()
    assert not processes_using(state)

    t_up = time.time()
    up = cluster_cli(state, "up", "--nodes", "1", "--node-cpu", "1", "--node-memory", "1Gi",
                     "--image", str(busybox_archive()))
    c = LocalCluster(state_dir=state)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        # the node came up with the containers of the first run in containerd's state ...
        node = c._real_node(NODE)
        assert set(exited) <= set(node.ctr("containers", "ls", "-q").stdout.split())
        # ... its CRI answers, and its kubelet (started by this 'up') runs
        assert cri.runtime_version(str(node.sock))["runtime_name"] == "containerd"
        with pytest.raises(cri.CRIError, match="no response message"):  # how a failing call looks
            cri.unary(str(node.sock), "/runtime.v1.RuntimeService/NoSuchMethod")
        kubelet = c.state["processes"][f"kubelet-{NODE}"]
        assert psutil.Process(kubelet["pid"]).is_running() and kubelet["create_time"] >= t_up - 1
        assert not c.dead_processes()
        # Ready as written by that kubelet, after the start: not the condition kept in etcd
        now = ready_condition(c)
        assert now["status"] == "True"
        assert _rfc3339(now["lastHeartbeatTime"]) >= int(t_up)
        assert _rfc3339(now["lastHeartbeatTime"]) > _rfc3339(before["lastHeartbeatTime"])
        lease = json.loads(c.kubectl("get", "lease", "-n", "kube-node-lease", NODE, "-o", "json").stdout)
        assert _rfc3339(lease["spec"]["renewTime"]) >= int(t_up)
        # and a new pod runs there
        run_pod(c, "after-restart")
        time.sleep(2)
        assert not c.dead_processes()
    finally:
        down = cluster_cli(state, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not processes_using(state)


def test_a_failed_up_stops_everything_it_started(short_tmp):
    """The node's first step after containerd fails (a broken pause image archive): 'up' exits
    non-zero and leaves no etcd, apiserver, containerd, ... running, and no network slot."""
    state = short_tmp / "f"
    broken = short_tmp / "broken-pause.tar"
    broken.write_bytes(b"not an image archive")
    up = cluster_cli(state, "up", "--nodes", "1", "--node-cpu", "1", "--node-memory", "1Gi",
                     env={"SCHEDGEN_PAUSE_ARCHIVE": str(broken)})
    try:
        assert up.returncode == 1, up.stdout + up.stderr
        assert "cluster up failed" in up.stderr and "stopping what it started" in up.stderr
        assert (state / "logs" / f"containerd-{NODE}.log").exists()  # it got as far as the node
        st = json.loads((state / "state.json").read_text())
        assert st["processes"] == {} and "network" not in st
        assert not processes_using(state)
        cid = LocalCluster(state_dir=state).cluster_id
        assert not hostfs.cgroup_pids(f"/schedgen/{cid}")
        assert not (network.RUN_DIR / cid).exists()
        assert not [m for m, _, _ in hostfs.mounts() if m.startswith(str(state))]
        slots = [s for s, o in network.slots_with_owners().items() if o and o.get("state_dir") == str(state)]
        assert not slots
    finally:
        if processes_using(state):
            LocalCluster(state_dir=state).stop()
