"""The measuring parts of bench/autoscale.py (and of tests/cluster/test_autoscaling.py): what
happened to the runner pool's nodes, the runner pods and the ParseJobs, and the figures of a
burst on an autoscaled pool.

Pure functions first (unit-tested in tests/bench/test_autoscale_units.py), then the Recorder,
which watches a running cluster.

Definitions (all times in seconds on this machine's clock, which is the apiserver's):

* **time to first node**: from the burst's start (its first ParseJob created) to the first node
  of the pool Ready (``first_claim`` is when Karpenter launched the first NodeClaim: the
  difference is the instance's boot time, the KWOKNodeClass's registration delay);
* **peak nodes**: the most nodes of the pool that existed at once (a node counts from its Node
  object's creation to its deletion);
* **node-seconds used**: the sum over the pool's nodes of their lifetime, NodeClaim launch to
  Node gone (what a cloud bills: from the instance's launch, its boot included);
  ``node_seconds_registered`` counts from the Node's registration instead;
* **ideal node-seconds**: the runner pods' requested CPU-seconds (each pod's CPU request times
  its running time, container start to end) divided by one node's allocatable CPU: what a pool
  that packed the pods perfectly and appeared and disappeared with them would have used;
  ``efficiency`` = ideal / used;
* **drain time**: from the burst's start to its last ParseJob final; ``scale_down`` from then to
  the pool's last node gone.
"""

from __future__ import annotations

import json
import threading
import time
from calendar import timegm
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


def epoch(value: str | None) -> float | None:
    """RFC 3339 as the API server writes it -> epoch seconds (None for None/empty)."""
    if not value:
        return None
    text = value.rstrip("Z").split("+")[0]
    frac = 0.0
    if "." in text:
        text, digits = text.split(".", 1)
        frac = float("0." + digits)
    return timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")) + frac


def cpu(quantity: str | int | float | None) -> float:
    """A CPU quantity ("4", "250m", "1.5") in cores."""
    if quantity is None or quantity == "":
        return 0.0
    text = str(quantity)
    if text.endswith("m"):
        return float(text[:-1]) / 1000.0
    return float(text)


# ---------------------------------------------------------------- what happened
@dataclass
class NodeLife:
    """One node of the pool: its NodeClaim's launch, the Node's registration, first Ready, gone."""

    name: str
    claimed: float | None = None
    created: float | None = None
    ready: float | None = None
    gone: float | None = None
    cpu: float = 0.0  # allocatable
    # first seen leaving: deleting, or tainted karpenter.sh/disrupted (Karpenter's disruption
    # marks it so before it launches replacements; a node marked so no longer counts towards
    # the NodePool's limits)
    leaving: float | None = None


@dataclass
class PodLife:
    """One runner pod: where, its CPU request, when its container started and ended."""

    name: str
    node: str | None = None
    cpu: float = 0.0
    created: float | None = None
    started: float | None = None
    finished: float | None = None


@dataclass
class Sample:
    t: float
    waiting: int = 0  # ParseJobs not yet Running (the backlog)
    running: int = 0
    final: int = 0
    claims: int = 0  # NodeClaims of the pool
    nodes: int = 0  # Nodes of the pool
    active: int = 0  # of which not leaving (what counts towards the NodePool's limits)
    ready: int = 0  # of which Ready
    pods_pending: int = 0  # runner pods without a node


@dataclass
class Figures:
    count: int
    succeeded: int
    start: float
    first_claim: float | None
    first_node: float | None
    peak_nodes: int
    peak_active_nodes: int  # not leaving (deleting or disrupted): what the NodePool's limits bound
    node_seconds: float
    node_seconds_registered: float
    ideal_node_seconds: float
    efficiency: float
    drain: float | None
    scale_down: float | None
    pods: int
    node_cpu: float
    extra: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        def s(v, fmt="{:.1f} s"):
            return "n/a" if v is None else fmt.format(v)
        return [
            f"ParseJobs: {self.succeeded}/{self.count} Succeeded; runner pods: {self.pods}",
            f"time to first NodeClaim: {s(self.first_claim)}; to first node Ready: {s(self.first_node)}",
            f"peak nodes: {self.peak_nodes} ({self.node_cpu:g} CPU each; {self.peak_active_nodes} not leaving)",
            f"node-seconds used: {self.node_seconds:.0f} (from launch; {self.node_seconds_registered:.0f} from "
            f"registration); ideal {self.ideal_node_seconds:.0f}; efficiency {self.efficiency:.0%}",
            f"drain: {s(self.drain)}; last node gone {s(self.scale_down)} after the drain",
        ]


def peak_concurrent(intervals: Iterable[tuple[float, float | None]], end: float | None = None) -> int:
    """The most intervals (start, stop; stop None: still open at `end`) that overlap at once."""
    points = []
    for start, stop in intervals:
        points.append((start, 1))
        stop = stop if stop is not None else end
        if stop is not None:
            points.append((stop, -1))
    best = current = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):  # a stop before a start at the same time
        current += step
        best = max(best, current)
    return best


def node_seconds(nodes: Iterable[NodeLife], end: float, registered: bool = False) -> float:
    """Sum of the nodes' lifetimes up to `end` for the ones not gone: from their NodeClaim's launch
    (or, with `registered`, from the Node's creation) to gone."""
    total = 0.0
    for n in nodes:
        start = n.created if registered else (n.claimed if n.claimed is not None else n.created)
        if start is None:
            continue
        total += max(0.0, (n.gone if n.gone is not None else end) - start)
    return total


def ideal_node_seconds(pods: Iterable[PodLife], node_cpu: float) -> float:
    """The pods' requested CPU-seconds over one node's allocatable CPU."""
    if node_cpu <= 0:
        return float("nan")
    return sum(p.cpu * (p.finished - p.started) for p in pods
               if p.started is not None and p.finished is not None and p.finished >= p.started) / node_cpu


def figures(start: float, finals: list[float | None], succeeded: int, nodes: list[NodeLife], pods: list[PodLife],
            end: float, node_cpu: float | None = None) -> Figures:
    """The burst's figures (see the module doc). `finals`: each ParseJob's final time (None if
    it never ended); `end`: the end of observation."""
    claims = [n.claimed for n in nodes if n.claimed is not None]
    readies = [n.ready for n in nodes if n.ready is not None]
    node_cpu = node_cpu or max((n.cpu for n in nodes), default=0.0)
    used = node_seconds(nodes, end)
    ideal = ideal_node_seconds(pods, node_cpu)
    done = [f for f in finals if f is not None]
    last_final = max(done) if len(done) == len(finals) and done else None
    gone = [n.gone for n in nodes]
    last_gone = max(gone) if gone and all(g is not None for g in gone) else None
    return Figures(
        count=len(finals), succeeded=succeeded, start=start,
        first_claim=min(claims) - start if claims else None,
        first_node=min(readies) - start if readies else None,
        peak_nodes=peak_concurrent(((n.created, n.gone) for n in nodes if n.created is not None), end),
        peak_active_nodes=peak_concurrent(((n.created, n.leaving if n.leaving is not None else n.gone)
                                           for n in nodes if n.created is not None), end),
        node_seconds=used, node_seconds_registered=node_seconds(nodes, end, registered=True),
        ideal_node_seconds=ideal, efficiency=(ideal / used) if used > 0 else float("nan"),
        drain=(last_final - start) if last_final is not None else None,
        scale_down=(last_gone - last_final) if last_gone is not None and last_final is not None else None,
        pods=len(pods), node_cpu=node_cpu)


def is_pool_node(obj: dict, pool: str) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get("karpenter.sh/nodepool") == pool


def node_is_leaving(obj: dict) -> bool:
    """Deleting, or marked by Karpenter's disruption (taint karpenter.sh/disrupted)."""
    taints = (obj.get("spec") or {}).get("taints") or []
    return bool((obj.get("metadata") or {}).get("deletionTimestamp")) or any(
        t.get("key") == "karpenter.sh/disrupted" for t in taints)


def node_is_ready(obj: dict) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    taints = (obj.get("spec") or {}).get("taints") or []
    blocking = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable", "karpenter.sh/unregistered"}
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions) and not any(
        t.get("key") in blocking for t in taints)


def pod_life(obj: dict) -> PodLife:
    """A runner pod's PodLife from the pod object (container state timestamps)."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    request = sum(cpu(((c.get("resources") or {}).get("requests") or {}).get("cpu")) for c in spec.get("containers") or [])
    started = finished = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "running" in state:
            started = epoch(state["running"].get("startedAt"))
        if "terminated" in state:
            started = epoch(state["terminated"].get("startedAt")) or started
            finished = epoch(state["terminated"].get("finishedAt"))
    return PodLife(name=meta.get("name", ""), node=spec.get("nodeName"), cpu=request,
                   created=epoch(meta.get("creationTimestamp")), started=started, finished=finished)


# ---------------------------------------------------------------- watching a cluster
FINAL = ("Succeeded", "Failed", "Cancelled")


class Recorder:
    """Watches the pool's NodeClaims and Nodes, the runner pods and the ParseJobs (one thread
    each, raw JSON) and samples the counts every `interval` seconds.

    ``nodes``: NodeLife by node name; ``pods``: PodLife by pod uid (their last state seen);
    ``parsejobs``: uid -> (phase, first seen final at); ``samples``: the Sample time series."""

    def __init__(self, api_client, pool: str, interval: float = 1.0, runner_selector: str =
                 "app.kubernetes.io/managed-by=schedgen-operator", clock: Callable[[], float] = time.time):
        self.api, self.pool, self.interval, self.clock = api_client, pool, interval, clock
        self.runner_selector = runner_selector
        self.nodes: dict[str, NodeLife] = {}
        self.claim_of_node: dict[str, float] = {}  # node name -> its NodeClaim's creation
        self.claims: dict[str, dict] = {}  # claim name -> {"created", "node", "gone"}
        self.pods: dict[str, PodLife] = {}
        self.pods_pending: set[str] = set()
        self.parsejobs: dict[str, dict] = {}
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: list = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Recorder":
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)
        self._watch("nodes", lambda **kw: core.list_node(label_selector=f"karpenter.sh/nodepool={self.pool}",
                                                          _preload_content=False, **kw), self._on_node)
        self._watch("nodeclaims", lambda **kw: custom.list_cluster_custom_object(
            "karpenter.sh", "v1", "nodeclaims", label_selector=f"karpenter.sh/nodepool={self.pool}",
            _preload_content=False, **kw), self._on_claim)
        self._watch("pods", lambda **kw: core.list_pod_for_all_namespaces(
            label_selector=self.runner_selector, _preload_content=False, **kw), self._on_pod)
        self._watch("parsejobs", lambda **kw: custom.list_cluster_custom_object(
            "schedgen.io", "v1alpha1", "parsejobs", _preload_content=False, **kw), self._on_parsejob)
        t = threading.Thread(target=self._sample_loop, name="recorder-samples", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for resp in list(self._responses):
            try:
                resp.shutdown()
            except Exception:  # noqa: BLE001
                pass
        for t in self._threads:
            t.join(5)

    def _watch(self, name: str, call, handle) -> None:
        def loop():
            from kubernetes.watch.watch import iter_resp_lines

            rv = None
            while not self._stop.is_set():
                try:
                    if rv is None:
                        resp = call(limit=500)
                        try:
                            body = json.loads(resp.data)
                        finally:
                            resp.release_conn()
                        for item in body.get("items") or []:
                            handle("ADDED", item)
                        rv = body["metadata"]["resourceVersion"]
                    resp = call(watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=60,
                                _request_timeout=(10, 90))
                    self._responses.append(resp)
                    try:
                        for line in iter_resp_lines(resp):
                            if self._stop.is_set():
                                break
                            if not line:
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":
                                rv = None if obj.get("code") == 410 else rv
                                break
                            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                                handle(event["type"], obj)
                    finally:
                        self._responses.remove(resp)
                        resp.close()
                        resp.release_conn()
                except Exception as exc:  # noqa: BLE001 - watch again
                    if self._stop.is_set():
                        break
                    self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    rv = None if "410" in str(exc) else rv
                    self._stop.wait(0.5)

        t = threading.Thread(target=loop, name=f"recorder-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ handlers
    def _on_claim(self, kind: str, obj: dict) -> None:
        meta = obj["metadata"]
        now = self.clock()
        with self._lock:
            claim = self.claims.setdefault(meta["name"], {"created": epoch(meta.get("creationTimestamp")) or now,
                                                          "node": None, "gone": None})
            node = (obj.get("status") or {}).get("nodeName")
            if node:
                claim["node"] = node
                self.claim_of_node[node] = claim["created"]
                if node in self.nodes and self.nodes[node].claimed is None:
                    self.nodes[node].claimed = claim["created"]
            if kind == "DELETED" and claim["gone"] is None:
                claim["gone"] = now

    def _on_node(self, kind: str, obj: dict) -> None:
        meta = obj["metadata"]
        now = self.clock()
        name = meta["name"]
        with self._lock:
            life = self.nodes.get(name)
            if life is None:
                hostname = (meta.get("labels") or {}).get("kubernetes.io/hostname")  # the NodeClaim's name
                claimed = self.claim_of_node.get(name)
                if claimed is None and hostname in self.claims:
                    claimed = self.claims[hostname]["created"]
                life = self.nodes[name] = NodeLife(name=name, claimed=claimed,
                                                   created=epoch(meta.get("creationTimestamp")) or now)
            life.cpu = cpu(((obj.get("status") or {}).get("allocatable") or {}).get("cpu")) or life.cpu
            if life.ready is None and node_is_ready(obj):
                life.ready = now
            if life.leaving is None and (kind == "DELETED" or node_is_leaving(obj)):
                life.leaving = now
            if kind == "DELETED" and life.gone is None:
                life.gone = now

    def _on_pod(self, kind: str, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        life = pod_life(obj)
        with self._lock:
            old = self.pods.get(uid)
            if old is not None:  # keep what was seen (a deleted pod's last state may lack it)
                life.started = life.started or old.started
                life.finished = life.finished or old.finished
                life.node = life.node or old.node
            if kind == "DELETED" and life.finished is None and life.started is not None:
                life.finished = self.clock()
            self.pods[uid] = life
            phase = (obj.get("status") or {}).get("phase")
            if kind != "DELETED" and not life.node and phase == "Pending":
                self.pods_pending.add(uid)
            else:
                self.pods_pending.discard(uid)

    def _on_parsejob(self, kind: str, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        phase = (obj.get("status") or {}).get("phase") or "Queued"
        now = self.clock()
        with self._lock:
            if kind == "DELETED":
                return  # cleanup: keep its last phase
            rec = self.parsejobs.setdefault(uid, {"phase": phase, "created": epoch(obj["metadata"].get(
                "creationTimestamp")) or now, "final": None, "attempts": 0, "name": obj["metadata"]["name"],
                "namespace": obj["metadata"].get("namespace"), "transitions": []})
            status = obj.get("status") or {}
            rec["phase"] = phase
            rec["attempts"] = status.get("attempts") or rec["attempts"]
            seq = status.get("transitionSeq")
            seen = {t[0] for t in rec["transitions"]}
            if seq is not None and seq not in seen:  # every transition as it was written
                entry = next((h for h in status.get("history") or [] if h.get("seq") == seq), {})
                rec["transitions"].append((seq, phase, entry.get("reason"), status.get("attempts")))
            if phase in FINAL and rec["final"] is None:
                rec["final"] = now

    # ------------------------------------------------------------------ samples
    def sample(self) -> Sample:
        with self._lock:
            phases = [r["phase"] for r in self.parsejobs.values()]
            s = Sample(t=self.clock(),
                       waiting=sum(1 for p in phases if p not in FINAL and p != "Running"),
                       running=sum(1 for p in phases if p == "Running"),
                       final=sum(1 for p in phases if p in FINAL),
                       claims=sum(1 for c in self.claims.values() if c["gone"] is None),
                       nodes=sum(1 for n in self.nodes.values() if n.gone is None),
                       active=sum(1 for n in self.nodes.values() if n.gone is None and n.leaving is None),
                       ready=sum(1 for n in self.nodes.values() if n.gone is None and n.ready is not None),
                       pods_pending=len(self.pods_pending))
        return s

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())

    def node_lives(self) -> list[NodeLife]:
        with self._lock:
            for name, life in self.nodes.items():
                if life.claimed is None and name in self.claim_of_node:
                    life.claimed = self.claim_of_node[name]
            return [NodeLife(**vars(n)) for n in self.nodes.values()]

    def pod_lives(self, on_pool: bool = True) -> list[PodLife]:
        with self._lock:
            pods = [PodLife(**vars(p)) for p in self.pods.values()]
            names = set(self.nodes)
        return [p for p in pods if not on_pool or p.node in names]


# ---------------------------------------------------------------- the plot
def plot(path, samples: list[Sample], start: float, title: str, marks: dict[str, float] | None = None,
         cpu_limit_nodes: float | None = None):
    """Backlog (waiting ParseJobs), Running ParseJobs and the pool's nodes over time (seconds
    since `start`), nodes on a second axis; `marks`: label -> time (epoch) drawn as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t - start for s in samples]
    fig, ax = plt.subplots(figsize=(11, 5.4))
    ax.plot(t, [s.waiting for s in samples], label="backlog (ParseJobs waiting)", color="tab:blue")
    ax.plot(t, [s.running for s in samples], label="ParseJobs running", color="tab:cyan", lw=1)
    ax.plot(t, [s.final for s in samples], label="ParseJobs final", color="tab:gray", lw=1, ls="--")
    ax.set_xlabel("seconds since the burst started")
    ax.set_ylabel("ParseJobs")
    right = ax.twinx()
    right.step(t, [s.claims for s in samples], where="post", label="NodeClaims (launched)", color="tab:orange",
               lw=1, ls=":")
    right.step(t, [s.ready for s in samples], where="post", label="nodes Ready", color="tab:red", lw=2)
    right.step(t, [s.pods_pending for s in samples], where="post", label="runner pods waiting for a node",
               color="tab:purple", lw=1, alpha=0.6)
    if cpu_limit_nodes:
        right.axhline(cpu_limit_nodes, color="tab:red", lw=0.8, ls="--", alpha=0.5, label="NodePool CPU limit (nodes)")
    right.set_ylabel("nodes, pods")
    right.set_ylim(bottom=0)
    for label, at in (marks or {}).items():
        ax.axvline(at - start, color="black", lw=0.7, ls=":")
        ax.annotate(label, (at - start, ax.get_ylim()[1]), rotation=90, va="top", ha="right", fontsize=8)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4,
              fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
