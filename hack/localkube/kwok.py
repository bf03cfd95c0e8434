"""Simulated nodes for the local cluster: KWOK (sigs.k8s.io/kwok) as a process of the cluster.

KWOK v0.8.0 is built once with ``go install`` from the Go module proxy into
``~/.cache/schedgen/kwok-v0.8.0/bin/kwok`` (``SCHEDGEN_K8S_CACHE`` moves the root), like the
Kubernetes binaries (build.py); ``hack/cluster build`` builds it too, and :func:`build` is called
lazily by :meth:`Kwok.start`.

It runs as one more process of a :class:`~localkube.cluster.LocalCluster` (recorded in its
``state.json`` as ``kwok``, stopped with the cluster, first), with the stages of
``kwok-stages.yaml`` beside this file. It manages only the nodes annotated
``kwok.x-k8s.io/node=fake`` -- the ones :meth:`Kwok.add_fake_nodes` creates -- and the pods bound
to them; real kubelet nodes are left alone. Fake nodes carry the label and the NoSchedule taint
``kwok.x-k8s.io/node=fake``, so only pods that select and tolerate them land there
(:data:`RUNNER_PLACEMENT_ENV`: the operator's ``SCHEDGEN_NODE_SELECTOR`` /
``SCHEDGEN_RUNNER_TOLERATIONS``; the chart's ``runner.nodeSelector`` / ``runner.tolerations``).

A pod on a fake node becomes Running at once and stays Running until it is annotated with
``schedgen.io/exit-code`` and ``schedgen.io/termination-message`` (the executor, executor.py,
does that after doing the runner's work); then it ends Succeeded (exit 0) or Failed with that
exit code and message in its container's ``state.terminated``.

    >>> kwok = Kwok(cluster).start()
    >>> kwok.add_fake_nodes(3, cpu="8", memory="32Gi", pods=110, labels={"pool": "runners"})
    ['kwok-node-1', 'kwok-node-2', 'kwok-node-3']
    >>> kwok.stop()          # or cluster.stop(): kwok is one of the cluster's processes

Addresses: fake nodes get the InternalIP ``127.0.0.1`` (nothing is ever sent to a fake node:
``kubectl logs`` on one of its pods fails at once, locally) and their pods IPs from
``10.246.0.0/16``, a range the real cluster network does not use (pods 10.244.0.0/16, Services
10.0.0.0/24, host network 10.200.0.0/16); nothing routes to those pod IPs.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from .gotool import GoTool, log_stderr

KWOK_VERSION = "v0.8.0"
KWOK_PACKAGE = "sigs.k8s.io/kwok/cmd/kwok"
STAGES_FILE = Path(__file__).resolve().with_name("kwok-stages.yaml")

FAKE_KEY = "kwok.x-k8s.io/node"
FAKE_VALUE = "fake"
FAKE_SELECTOR = f"{FAKE_KEY}={FAKE_VALUE}"  # label selector of the fake nodes (and their annotation)
FAKE_TAINT = {"key": FAKE_KEY, "value": FAKE_VALUE, "effect": "NoSchedule"}
FAKE_TOLERATION = {"key": FAKE_KEY, "operator": "Equal", "value": FAKE_VALUE, "effect": "NoSchedule"}
# The operator's settings that put its runner pods on the fake nodes (and only there).
RUNNER_PLACEMENT_ENV = {"SCHEDGEN_NODE_SELECTOR": FAKE_SELECTOR,
                        "SCHEDGEN_RUNNER_TOLERATIONS": json.dumps([FAKE_TOLERATION])}

# What the executor writes and the pod-complete stage reads.
ANN_EXIT_CODE = "schedgen.io/exit-code"
ANN_TERMINATION_MESSAGE = "schedgen.io/termination-message"

DEFAULT_CIDR = "10.246.0.0/16"
DEFAULT_NODE_IP = "127.0.0.1"
PROCESS_KEY = "kwok"
NODE_LEASE_SECONDS = 40  # like a kubelet's; kwok renews the Lease (the node-lifecycle controller reads it)


_log = log_stderr


def local_http_ok(port: int, path: str, timeout: float = 2.0) -> bool:
    """A local process's probe (kwok's /healthz, Karpenter's /readyz) answers 200."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status == 200


# ------------------------------------------------------------------------------------- build
TOOL = GoTool("kwok", KWOK_PACKAGE, KWOK_VERSION, "kwok", minutes=2)
bin_dir, binary, is_built, build = TOOL.bin_dir, TOOL.binary, TOOL.is_built, TOOL.build


# ------------------------------------------------------------------------------------- nodes
def fake_node(name: str, cpu: str = "32", memory: str = "256Gi", pods: int = 110, labels: dict | None = None,
              taints: list[dict] | None = None) -> dict:
    """The Node object of one fake node: KWOK's annotation, our label and taint (or ``taints``),
    and the capacity = allocatable asked for (kept by the node-initialize stage)."""
    resources = {"cpu": str(cpu), "memory": str(memory), "pods": str(pods), "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_KEY: FAKE_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                       "node.kubernetes.io/instance-type": "kwok", "type": "kwok", FAKE_KEY: FAKE_VALUE,
                       **(labels or {})},
        },
        "spec": {"taints": [dict(t) for t in (taints if taints is not None else [FAKE_TAINT])]},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def node_ready(node: dict) -> bool:
    """Ready, and the node-lifecycle controller has lifted the taints it put on the new node
    (``node.kubernetes.io/not-ready``, ``.../unreachable``): pods can be scheduled there."""
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in (node.get("status") or {}).get("conditions") or [])
    lifecycle = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    return ready and not any(t.get("key") in lifecycle for t in (node.get("spec") or {}).get("taints") or [])


class KwokError(RuntimeError):
    pass


class Kwok:
    """KWOK for one running :class:`LocalCluster`: start/stop its process, add/remove fake nodes.

    ``cidr``: pod IPs of the fake nodes (a /16 the cluster network does not use); ``node_ip``:
    their InternalIP; ``stages``: the stages file; ``parallelism``: kwok's workers playing pod
    and node stages (its default 4 is slow for thousands of pods); ``verbosity``: its log level
    (log in ``<state-dir>/logs/kwok.log``)."""

    def __init__(self, cluster, cidr: str = DEFAULT_CIDR, node_ip: str = DEFAULT_NODE_IP,
                 stages: str | os.PathLike = STAGES_FILE, parallelism: int = 16, verbosity: str = "INFO", log=None):
        self.cluster = cluster
        self.cidr = cidr
        self.node_ip = node_ip
        self.stages = Path(stages)
        self.parallelism = parallelism
        self.verbosity = verbosity  # kwok's -v: DEBUG, INFO (a line per stage played), WARN, ERROR
        self.log = log or cluster.log

    # ------------------------------------------------------------------ process
    @property
    def running(self) -> bool:
        return self.cluster.process_alive(PROCESS_KEY)

    @property
    def log_path(self) -> Path:
        return self.cluster.logs / f"{PROCESS_KEY}.log"

    def argv(self, health_port: int, options_file: Path) -> list[str]:
        return [str(binary()), f"--kubeconfig={self.cluster.kubeconfig}",
                "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_SELECTOR}",
                f"--cidr={self.cidr}", f"--node-ip={self.node_ip}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--server-address=127.0.0.1:{health_port}",
                f"--config={self.stages}", f"--config={options_file}", f"-v={self.verbosity}"]

    def start(self, timeout: float = 60.0) -> "Kwok":
        """Start kwok (built first if need be) and wait for its /healthz; a running one is kept."""
        if not self.cluster.is_running():
            raise KwokError("the cluster is not running")
        if self.running:
            return self
        build(log=self.log)
        from .cluster import free_port

        port = free_port()
        options = self.cluster.state_dir / "kwok-options.yaml"
        p = self.parallelism
        options.write_text(yaml.safe_dump({
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
            "options": {"podPlayStageParallelism": p, "nodePlayStageParallelism": max(4, p // 4),
                        "nodeLeaseParallelism": max(4, p // 4)}}, sort_keys=False))
        t0 = time.monotonic()
        # HOME: kwok also reads ~/.kwok/kwok.yaml when it exists; this keeps it to our files
        home = self.cluster.state_dir / "kwok-home"
        home.mkdir(exist_ok=True)
        pid = self.cluster.start_process(PROCESS_KEY, self.argv(port, options),
                                         env={**os.environ, "HOME": str(home)})
        self.cluster.state["kwok"] = {"cidr": self.cidr, "node_ip": self.node_ip, "health_port": port,
                                      "stages": str(self.stages)}
        self.cluster.save_state()

        self.cluster.wait_until("kwok /healthz", lambda: local_http_ok(port, "/healthz"), timeout,
                                watch=(PROCESS_KEY,))
        self.log(f"kwok running (pid {pid}) after {time.monotonic() - t0:.1f}s: fake nodes {FAKE_SELECTOR}, "
                 f"pod CIDR {self.cidr}, node IP {self.node_ip}, stages {self.stages.name}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the kwok process (fake nodes stay registered; they turn NotReady once their
        Lease runs out -- :meth:`delete_fake_nodes` removes them)."""
        self.cluster.stop_process(PROCESS_KEY, timeout)

    # ------------------------------------------------------------------ nodes
    def _core(self):
        from kubernetes import client
        if getattr(self, "_api", None) is None:
            self._api = self.cluster.api_client()
        return client.CoreV1Api(self._api)

    def fake_nodes(self) -> list[dict]:
        """The fake nodes as dicts (name, ready: see :func:`node_ready`, allocatable)."""
        nodes = self._core().list_node(label_selector=FAKE_SELECTOR, _preload_content=False)
        return [{"name": n["metadata"]["name"], "ready": node_ready(n),
                 "allocatable": (n.get("status") or {}).get("allocatable") or {}}
                for n in json.loads(nodes.data)["items"]]

    def add_fake_nodes(self, count: int, cpu: str = "32", memory: str = "256Gi", pods: int = 110,
                       labels: dict | None = None, taints: list[dict] | None = None, prefix: str = "kwok-node",
                       wait: float = 60.0) -> list[str]:
        """Register ``count`` more fake nodes ``<prefix>-<n>`` (numbered after the ones there are)
        of this size; with ``wait``, return once all are Ready. ``taints`` replaces the default
        ``kwok.x-k8s.io/node=fake:NoSchedule`` (``[]``: none, any pod may land there)."""
        if not self.running:
            raise KwokError("kwok is not running: start() first")
        core = self._core()
        existing = {n["name"] for n in self.fake_nodes()}
        names, i = [], 0
        while len(names) < count:
            i += 1
            if f"{prefix}-{i}" not in existing:
                names.append(f"{prefix}-{i}")
        t0 = time.monotonic()

        def create(name: str) -> None:
            core.create_node(fake_node(name, cpu, memory, pods, labels, taints), _preload_content=False).data

        with ThreadPoolExecutor(min(8, max(1, count))) as pool:
            list(pool.map(create, names))
        if wait:
            want = set(names)
            self.cluster.wait_until(
                f"{count} fake node(s) Ready", lambda: want <= {n["name"] for n in self.fake_nodes() if n["ready"]},
                wait, watch=(PROCESS_KEY,))
        span = names[0] if count == 1 else f"{names[0]}..{names[-1]}"
        self.log(f"{count} fake node(s) {span} {'Ready' if wait else 'created'} in "
                 f"{time.monotonic() - t0:.1f}s (cpu={cpu}, memory={memory}, pods={pods})")
        return names

    def delete_fake_nodes(self, names: list[str] | None = None) -> int:
        """Delete these fake nodes (default: all); returns how many were deleted."""
        core = self._core()
        names = [n["name"] for n in self.fake_nodes()] if names is None else list(names)
        for name in names:
            core.delete_node(name, _preload_content=False).data
        return len(names)

    def close(self) -> None:
        if getattr(self, "_api", None) is not None:
            self._api.close()
            self._api = None
