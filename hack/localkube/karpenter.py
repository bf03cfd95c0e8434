"""A real autoscaler for the local cluster: Karpenter with its KWOK cloud provider, as a process.

Karpenter v1.15.0's KWOK cloud provider (``sigs.k8s.io/karpenter/kwok``, the binary the Karpenter
project tests itself with) is built once with ``go install`` from the Go module proxy -- its
go.mod asks for Go 1.26.9, so the build runs with ``GOTOOLCHAIN=go1.26.9`` (the proxy serves that
toolchain) -- and kept as ``~/.cache/schedgen/karpenter-v1.15.0/bin/karpenter-kwok`` (the package
builds a binary named ``kwok``, renamed so it is not taken for KWOK itself). ``hack/cluster build``
(so ``hack/setup.sh``) builds it; :meth:`Karpenter.start` builds it lazily. Its CRDs (NodePool,
NodeClaim, NodeOverlay, CapacityBuffer and KWOKNodeClass) come from the same module's source in
the Go module cache (``go mod download -json``: ``kwok/charts/crds`` and ``kwok/apis/crds``) and
are kept next to the binary, ``~/.cache/schedgen/karpenter-v1.15.0/crds/``.

It runs as one more process of a :class:`~localkube.cluster.LocalCluster` (``state.json`` key
``karpenter``, stopped first with the kubelets and kwok) against the admin kubeconfig, with
``DISABLE_LEADER_ELECTION=true``, its metrics and health probe on free ports (health:
``/readyz``).

What the KWOK cloud provider does, and what localkube gives it:

* **It creates the Nodes itself.** A cloud's instance would boot and its kubelet register the
  Node; KWOK nodes have no kubelet, so the provider's ``Create`` waits the KWOKNodeClass's
  ``nodeRegistrationDelay`` (a goroutine: the instance's boot time) and then creates the Node:
  annotation and label ``kwok.x-k8s.io/node=fake``, the NodeClaim's labels, provider id
  ``kwok://<name>``, taint ``karpenter.sh/unregistered:NoExecute``, capacity and allocatable of
  the instance type, no conditions. **Our kwok process (kwok.py) manages it** -- it selects nodes
  by exactly that annotation -- and its stages make it Ready and keep its Lease; Karpenter
  registers it (the NodePool's labels and taints, the unregistered taint lifted) and the
  scheduler binds pods there. So :class:`~localkube.kwok.Kwok` must be running;
  :meth:`Karpenter.start` starts it if need be. The executor (executor.py) runs the runner pods
  there like on any fake node.
* **Instance types**: the provider ships a generated list (``kwok/cloudprovider/
  instance_types.json``: families c/m/r, 1 to 256 CPUs, amd64/arm64, linux/windows, spot and
  on-demand in three zones, prices linear in size). :func:`node_pool` narrows a NodePool to one
  or a few of them by the provider's labels (``karpenter.kwok.sh/instance-family``,
  ``.../instance-cpu``), by default ``c-4x-amd64-linux`` on-demand: 4 CPU, 8 GiB, 64 pods -- one
  size, so the figures read simply.
* **No scheduler configuration** is needed: Karpenter simulates the default kube-scheduler
  profile, which is what the cluster runs (``SCHEDULER_CONFIG`` only matters for default topology
  spread constraints).
* Deletion: Karpenter's own termination (finalizer ``karpenter.sh/termination``: taint
  ``karpenter.sh/disrupted:NoSchedule``, drain through the eviction API -- pods annotated
  ``karpenter.sh/do-not-disrupt`` wait, unless the NodePool's ``terminationGracePeriod`` runs out
  and they are deleted) and then the provider's ``Delete``, which deletes the Node.

    >>> karpenter = Karpenter(cluster).start()        # CRDs, kwok, the process; /readyz
    >>> karpenter.apply(node_class("runners", registration_delay="30s"), node_pool("runners", cpu_limit=64))
    >>> karpenter.nodes(), karpenter.nodeclaims()
    >>> karpenter.delete_node_pools(wait=120)           # nodes drained and gone
    >>> karpenter.stop()                                # or cluster.stop()

Runner pods reach the pool with the operator's placement: :data:`RUNNER_PLACEMENT_ENV`
(``SCHEDGEN_NODE_SELECTOR`` / ``SCHEDGEN_RUNNER_TOLERATIONS``; the chart's ``runner.nodeSelector``
/ ``runner.tolerations``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from .gotool import GoTool, go_env, log_stderr
from . import kwok as _kwok

KARPENTER_VERSION = "v1.15.0"
KARPENTER_MODULE = "sigs.k8s.io/karpenter"
KARPENTER_PACKAGE = f"{KARPENTER_MODULE}/kwok"
GO_TOOLCHAIN = "go1.26.9"  # the module's go.mod: `go 1.26.9`
BINARY_NAME = "karpenter-kwok"
PROCESS_KEY = "karpenter"

API_GROUP, API_VERSION = "karpenter.sh", "v1"
KWOK_GROUP, KWOK_VERSION = "karpenter.kwok.sh", "v1alpha1"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DISRUPTED_TAINT_KEY = "karpenter.sh/disrupted"

# The runner pool: its nodes carry this label and taint, so only runner pods (which select and
# tolerate them) land there, and Karpenter provisions for nothing else.
POOL_KEY = "schedgen.io/pool"
POOL_VALUE = "runners"
POOL_SELECTOR = f"{POOL_KEY}={POOL_VALUE}"
POOL_TAINT = {"key": POOL_KEY, "value": POOL_VALUE, "effect": "NoSchedule"}
POOL_TOLERATION = {"key": POOL_KEY, "operator": "Equal", "value": POOL_VALUE, "effect": "NoSchedule"}
RUNNER_PLACEMENT_ENV = {"SCHEDGEN_NODE_SELECTOR": POOL_SELECTOR,
                        "SCHEDGEN_RUNNER_TOLERATIONS": json.dumps([POOL_TOLERATION])}
DEFAULT_INSTANCE = {"family": "c", "cpu": ("4",)}  # c-4x-amd64-linux: 4 CPU, 8Gi, 64 pods


_log = log_stderr


# ------------------------------------------------------------------------------------- build
TOOL = GoTool("karpenter", KARPENTER_PACKAGE, KARPENTER_VERSION, BINARY_NAME, toolchain=GO_TOOLCHAIN, minutes=2,
              after_build=lambda: _copy_crds(), extra_ready=lambda: any(crd_dir().glob("*.yaml")))
bin_dir, binary, is_built, build = TOOL.bin_dir, TOOL.binary, TOOL.is_built, TOOL.build


def crd_dir() -> Path:
    """The CRDs, copied from the module's source next to the binary (no Go needed to use them)."""
    return bin_dir().parent / "crds"


_MODULE_DIR: Path | None = None


def module_dir() -> Path:
    """The Karpenter module's source in the Go module cache (downloaded if need be)."""
    global _MODULE_DIR
    if _MODULE_DIR is None or not _MODULE_DIR.is_dir():
        done = subprocess.run(["go", "mod", "download", "-json", f"{KARPENTER_MODULE}@{KARPENTER_VERSION}"],
                              env=go_env(GO_TOOLCHAIN), cwd=str(Path.home()), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"go mod download {KARPENTER_MODULE}@{KARPENTER_VERSION} failed:\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        _MODULE_DIR = Path(json.loads(done.stdout)["Dir"])
    return _MODULE_DIR


def _module_crds() -> list[Path]:
    mod = module_dir()
    files = sorted((mod / "kwok" / "charts" / "crds").glob("*.yaml")) + sorted(
        (mod / "kwok" / "apis" / "crds").glob("*.yaml"))
    if not files:
        raise RuntimeError(f"no CRDs found under {mod}/kwok")
    return files


def _copy_crds() -> None:
    """Keep the module's CRDs in the cache, next to the binary (written whole, then renamed)."""
    target = crd_dir()
    tmp = Path(tempfile.mkdtemp(prefix="crds-", dir=target.parent))
    for i, path in enumerate(_module_crds()):
        shutil.copyfile(path, tmp / f"{i:02d}-{path.name}")  # the order: Karpenter's, then KWOK's
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def crd_files() -> list[Path]:
    """Karpenter's CRDs as its KWOK chart installs them (NodePool and NodeClaim with the
    karpenter.kwok.sh label rules, NodeOverlay, CapacityBuffer) and the KWOKNodeClass CRD, as
    :func:`build` keeps them in the cache."""
    files = sorted(crd_dir().glob("*.yaml"))
    if not files:
        build()
        files = sorted(crd_dir().glob("*.yaml"))
    return files


def install_crds(cluster, timeout: float = 60.0) -> list[str]:
    """Apply the CRDs (server-side: they are too big for the last-applied annotation) and wait
    until they are Established; returns their names."""
    names = []
    for path in crd_files():
        names.append(f"crd/{yaml_name(path)}")
        done = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl apply {path.name}: {done.stderr}")
    done = cluster.kubectl("wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names,
                           check=False, timeout=timeout + 10)
    if done.returncode != 0:
        raise RuntimeError(f"Karpenter CRDs not Established: {done.stderr}")
    return names


def yaml_name(path: Path) -> str:
    import yaml

    return yaml.safe_load(path.read_text())["metadata"]["name"]


# ------------------------------------------------------------------------------------- objects
def node_class(name: str = POOL_VALUE, registration_delay: str = "30s") -> dict:
    """A KWOKNodeClass: ``registration_delay`` is the instance's boot time -- how long after its
    NodeClaim is launched its Node registers (a cloud's VM: about 20 to 60 s)."""
    return {"apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}", "kind": "KWOKNodeClass", "metadata": {"name": name},
            "spec": {"nodeRegistrationDelay": registration_delay}}


def node_pool(name: str = POOL_VALUE, node_class_name: str = POOL_VALUE, cpu_limit: int | str = 64,
              consolidate_after: str = "15s", consolidation_policy: str = "WhenEmptyOrUnderutilized",
              instance_family: str = DEFAULT_INSTANCE["family"],
              instance_cpus: Iterable[str] = DEFAULT_INSTANCE["cpu"], capacity_type: str = "on-demand",
              termination_grace_period: str | None = None, labels: dict | None = None,
              taints: list[dict] | None = None, budgets: list[dict] | None = None) -> dict:
    """A NodePool for runner pods: nodes labelled and tainted ``schedgen.io/pool=runners`` (only
    pods that select and tolerate it go there), of the KWOK instance types of ``instance_family``
    and ``instance_cpus``, at most ``cpu_limit`` CPUs in all; consolidation
    ``WhenEmptyOrUnderutilized`` after ``consolidate_after``; empty nodes may all go at once,
    underutilized ones 20 % at a time. ``termination_grace_period``: how long a deleted node
    waits for pods that block its drain (``karpenter.sh/do-not-disrupt``) before it deletes them
    (None: it waits until they end)."""
    spec: dict[str, Any] = {
        "nodeClassRef": {"group": KWOK_GROUP, "kind": "KWOKNodeClass", "name": node_class_name},
        "taints": [dict(t) for t in (taints if taints is not None else [POOL_TAINT])],
        "requirements": [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [capacity_type]},
            {"key": f"{KWOK_GROUP}/instance-family", "operator": "In", "values": [instance_family]},
            {"key": f"{KWOK_GROUP}/instance-cpu", "operator": "In", "values": [str(c) for c in instance_cpus]},
        ],
        "expireAfter": "Never",
    }
    if termination_grace_period:
        spec["terminationGracePeriod"] = termination_grace_period
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "NodePool", "metadata": {"name": name},
        "spec": {
            "template": {"metadata": {"labels": {POOL_KEY: POOL_VALUE, **(labels or {})}}, "spec": spec},
            "limits": {"cpu": str(cpu_limit)},
            "disruption": {"consolidationPolicy": consolidation_policy, "consolidateAfter": consolidate_after,
                           "budgets": budgets if budgets is not None else [
                               {"nodes": "100%", "reasons": ["Empty"]},
                               {"nodes": "20%", "reasons": ["Underutilized", "Drifted"]}]},
        },
    }


class KarpenterError(RuntimeError):
    pass


class Karpenter:
    """Karpenter (KWOK provider) for one running :class:`LocalCluster`: CRDs, process, objects.

    ``log_level``: Karpenter's (debug, info, error; log in ``<state-dir>/logs/karpenter.log``);
    ``batch_idle``/``batch_max``: its provisioning batch window (defaults 1 s / 10 s, Karpenter's);
    ``instance_types_file``: a JSON list of instance types instead of the provider's own."""

    def __init__(self, cluster, log_level: str = "info", batch_idle: str = "1s", batch_max: str = "10s",
                 instance_types_file: str | os.PathLike | None = None, log=None):
        self.cluster = cluster
        self.log_level = log_level
        self.batch_idle, self.batch_max = batch_idle, batch_max
        self.instance_types_file = instance_types_file
        self.log = log or cluster.log
        self._api = None

    # ------------------------------------------------------------------ process
    @property
    def running(self) -> bool:
        return self.cluster.process_alive(PROCESS_KEY)

    @property
    def log_path(self) -> Path:
        return self.cluster.logs / f"{PROCESS_KEY}.log"

    def env(self, metrics_port: int, health_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBERNETES_"))}
        env.update({"KUBECONFIG": str(self.cluster.kubeconfig), "DISABLE_LEADER_ELECTION": "true",
                    "METRICS_PORT": str(metrics_port), "HEALTH_PROBE_PORT": str(health_port),
                    "LOG_LEVEL": self.log_level, "BATCH_IDLE_DURATION": self.batch_idle,
                    "BATCH_MAX_DURATION": self.batch_max})
        if self.instance_types_file:
            env["INSTANCE_TYPES_FILE_PATH"] = str(self.instance_types_file)
        return env

    def start(self, timeout: float = 90.0) -> "Karpenter":
        """Build if need be, install the CRDs, make sure kwok runs, start Karpenter and wait for its
        /readyz (its caches synced, its CRDs known). A running one is kept."""
        if not self.cluster.is_running():
            raise KarpenterError("the cluster is not running")
        if self.running:
            return self
        build(log=self.log)
        t0 = time.monotonic()
        install_crds(self.cluster)
        _kwok.Kwok(self.cluster).start()  # it runs the Nodes Karpenter creates
        from .cluster import free_port

        metrics_port, health_port = free_port(), free_port()
        pid = self.cluster.start_process(PROCESS_KEY, [str(binary())], env=self.env(metrics_port, health_port))
        self.cluster.state[PROCESS_KEY] = {"version": KARPENTER_VERSION, "metrics_port": metrics_port,
                                           "health_port": health_port}
        self.cluster.save_state()

        self.cluster.wait_until("Karpenter /readyz", lambda: _kwok.local_http_ok(health_port, "/readyz"), timeout,
                                watch=(PROCESS_KEY,))
        self.log(f"Karpenter {KARPENTER_VERSION} (KWOK provider) running (pid {pid}) after "
                 f"{time.monotonic() - t0:.1f}s; metrics :{metrics_port}, log {self.log_path}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process. Its nodes stay (with their finalizers) until :meth:`delete_node_pools`
        -- call that first -- or until the cluster goes."""
        self.cluster.stop_process(PROCESS_KEY, timeout)

    def metrics(self) -> str:
        port = self.cluster.state.get(PROCESS_KEY, {}).get("metrics_port")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    # ------------------------------------------------------------------ objects
    def _client(self):
        if self._api is None:
            self._api = self.cluster.api_client()
        return self._api

    def _custom(self):
        from kubernetes import client
        return client.CustomObjectsApi(self._client())

    def apply(self, *objects: dict) -> None:
        """Create or replace NodePools and KWOKNodeClasses (cluster-scoped)."""
        from kubernetes.client.rest import ApiException

        custom = self._custom()
        for obj in objects:
            group, version = obj["apiVersion"].split("/")
            plural = {"NodePool": "nodepools", "KWOKNodeClass": "kwoknodeclasses"}[obj["kind"]]
            name = obj["metadata"]["name"]
            try:
                custom.create_cluster_custom_object(group, version, plural, obj)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = custom.get_cluster_custom_object(group, version, plural, name)
                body = dict(obj, metadata={**obj["metadata"],
                                           "resourceVersion": current["metadata"]["resourceVersion"]})
                custom.replace_cluster_custom_object(group, version, plural, name, body)

    def nodeclaims(self, pool: str | None = None) -> list[dict]:
        items = self._custom().list_cluster_custom_object(
            API_GROUP, API_VERSION, "nodeclaims", label_selector=f"{NODEPOOL_LABEL}={pool}" if pool else None)["items"]
        return items

    def nodes(self, pool: str | None = None) -> list[dict]:
        """The Nodes of a NodePool (or of all), as dicts with name, ready (kwok.node_ready),
        created, deleting, allocatable."""
        from kubernetes import client

        selector = f"{NODEPOOL_LABEL}={pool}" if pool else NODEPOOL_LABEL
        resp = client.CoreV1Api(self._client()).list_node(label_selector=selector, _preload_content=False)
        out = []
        for n in json.loads(resp.data)["items"]:
            meta = n["metadata"]
            out.append({"name": meta["name"], "ready": _kwok.node_ready(n), "created": meta["creationTimestamp"],
                        "deleting": bool(meta.get("deletionTimestamp")),
                        "allocatable": (n.get("status") or {}).get("allocatable") or {},
                        "taints": (n.get("spec") or {}).get("taints") or []})
        return out

    def delete_node_pools(self, wait: float = 180.0, force_after: float | None = 120.0) -> None:
        """Delete every NodePool and KWOKNodeClass; Karpenter drains and deletes their nodes. With
        ``wait``, return once no NodeClaim or Karpenter Node is left; nodes still there after
        ``force_after`` (pods that block their drain) are let go: finalizers removed, deleted."""
        custom = self._custom()
        for plural in ("nodepools",):
            for item in custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural)["items"]:
                _ignore_404(custom.delete_cluster_custom_object, API_GROUP, API_VERSION, plural,
                            item["metadata"]["name"])
        if not wait:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            if not self.nodeclaims() and not self.nodes():
                break
            if force_after is not None and time.monotonic() - t0 > force_after:
                self.force_remove()
            time.sleep(1)
        else:
            raise KarpenterError(f"Karpenter nodes still there after {wait}s: "
                                 f"{[n['name'] for n in self.nodes()]}, claims "
                                 f"{[c['metadata']['name'] for c in self.nodeclaims()]}")
        for item in custom.list_cluster_custom_object(KWOK_GROUP, KWOK_VERSION, "kwoknodeclasses")["items"]:
            _ignore_404(custom.delete_cluster_custom_object, KWOK_GROUP, KWOK_VERSION, "kwoknodeclasses",
                        item["metadata"]["name"])

    def force_remove(self) -> None:
        """Let every NodeClaim and Karpenter Node go now (finalizers removed), as when Karpenter is
        not there to finish their termination."""
        from kubernetes import client

        core, custom = client.CoreV1Api(self._client()), self._custom()
        strip = {"metadata": {"finalizers": None}}
        for claim in self.nodeclaims():
            name = claim["metadata"]["name"]
            _ignore_404(custom.patch_cluster_custom_object, API_GROUP, API_VERSION, "nodeclaims", name, strip)
            _ignore_404(custom.delete_cluster_custom_object, API_GROUP, API_VERSION, "nodeclaims", name)
        for node in self.nodes():
            _ignore_404(core.patch_node, node["name"], strip)
            _ignore_404(core.delete_node, node["name"])

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def _ignore_404(fn, *args) -> None:
    from kubernetes.client.rest import ApiException

    try:
        fn(*args)
    except ApiException as exc:
        if exc.status != 404:
            raise
