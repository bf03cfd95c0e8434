"""A real local Kubernetes cluster: etcd + kube-apiserver + kube-controller-manager +
kube-scheduler, and nodes.

Real nodes: kube-proxy and per node its own containerd + kubelet v1.37.2 running pods as
containers (runc) and a NetworkPolicy enforcer (kube-network-policies, netpol.py), in a network
namespace of the cluster's own (network.py, node.py). The apiserver listens on the cluster's host
address. Simulated nodes (many, for benchmarks and
scale tests): KWOK as one more process of the cluster (kwok.py), with the executor
(executor.py) doing the runner's work for the pods that land on them.

Everything is tracked by pid in ``<state_dir>/state.json`` so that a different process
(``hack/cluster down``) can stop it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import build as _build
from . import hostfs, netpol, network
from .certs import APISERVER_KUBELET_CLIENT, generate_pki

HACK_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = HACK_DIR.parent
SERVICE_CIDR = network.SERVICE_CIDR
SERVICE_IP = network.SERVICE_IP
# Controllers the project needs (canonical names; old aliases also work): Jobs and their
# clean-up, namespaces and service accounts; Services (EndpointSlices for kube-proxy),
# Deployments, node health (NotReady when a kubelet stops, taint-based eviction), and
# finished-pod GC.
CONTROLLERS = [
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "cronjob-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "daemonset-controller",
    "disruption-controller",
    "resourcequota-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
]


def default_state_dir() -> Path:
    return _build.cache_root() / "cluster"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int, create_time: float | None = None) -> bool:
    try:
        import psutil
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(p.create_time() - create_time) > 1.0:
            return False
        return True
    except ImportError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    except Exception:
        return False


def _create_time(pid: int) -> float | None:
    try:
        import psutil
        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _rfc3339(value: str) -> float:
    """Seconds since the epoch of an API timestamp (``2026-01-02T03:04:05Z``)."""
    from datetime import datetime
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _log(msg: str) -> None:
    print(f"[localkube] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class ControlPlaneLimits:
    """What a real cluster raises for a large workload (LocalCluster(limits=...)): the
    apiserver's inflight limits (defaults 400 / 200), the controller-manager's and the
    scheduler's client QPS/burst (here 200/400 by default), the Job controller's workers
    (10 here, 5 upstream) and how long Events live (30m here: a long run needs them to the end)."""

    max_requests_inflight: int = 1600
    max_mutating_requests_inflight: int = 800
    controller_manager_qps: int = 500
    controller_manager_burst: int = 1000
    scheduler_qps: int = 500
    scheduler_burst: int = 1000
    concurrent_job_syncs: int = 20
    event_ttl: str = "4h"


AUDIT_WRITES_POLICY = {
    # one line per finished write (Metadata level: who, verb, resource, code; no bodies);
    # reads (get/list/watch) are not logged
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "None", "verbs": ["get", "list", "watch"]},
              {"level": "None", "nonResourceURLs": ["/*"]},
              {"level": "Metadata"}],
}


def reclaim_stale_networks(log=_log, sessions_only: bool = False) -> list[int]:
    """Clean up after clusters that were not stopped: a slot whose creating process is gone gets
    the full stop + host cleanup (processes, leftovers in its cgroups, mounts, cgroups, network
    namespace) if that process was a test session (the cluster was its own), or if none of the
    cluster's processes runs any more (a ``hack/cluster up`` cluster that died).

    ``sessions_only`` (what a test session's start uses): only clusters of test sessions; a
    ``hack/cluster up`` cluster (the demo's, say) is left alone even when it died -- its own next
    ``up`` or ``down`` cleans up after it."""
    reclaimed = []
    for slot, owner in sorted(network.slots_with_owners().items()):
        if not owner or network.owner_alive(owner) or not owner.get("state_dir"):
            continue
        if sessions_only and not owner.get("session"):
            continue
        other = LocalCluster(state_dir=owner["state_dir"], log=log)
        procs = other.state.get("processes", {})
        alive = any(_pid_alive(p["pid"], p.get("create_time")) for p in procs.values())
        if (other.state.get("network") or {}).get("slot") != slot:
            if alive:  # the state dir runs another cluster now: only this slot's network is stale
                log(f"removing stale network slot {slot} (its state dir {owner['state_dir']} moved on)")
                network.teardown(network.Plan(slot))
                reclaimed.append(slot)
                continue
            other.state = {"network": {"slot": slot}}
        if alive and not owner.get("session"):
            continue
        if alive:
            log(f"stopping the cluster of a test session that is gone ({owner['state_dir']})")
            other.stop()
        else:
            log(f"cleaning up after a cluster that was not stopped ({owner['state_dir']}, slot {slot})")
            other._cleanup_host()
            if other.state_file.exists():
                other.state["processes"] = {}
                other._save_state()
        reclaimed.append(slot)
    return reclaimed


class LocalCluster:
    """Local control plane + real nodes (simulated ones: kwok.Kwok).

    >>> c = LocalCluster(state_dir=tmp).start()
    >>> c.import_image("busybox.tar")           # into every node, and nodes added later
    >>> c.add_node("node-1", cpu="2", memory="4Gi")
    >>> c.kubeconfig, c.host_address           # admin kubeconfig path; host as seen from pods
    >>> c.stop()
    """

    def __init__(self, state_dir: str | os.PathLike | None = None, bin_dir: str | os.PathLike | None = None,
                 log=_log, fresh: bool = False, session: bool = False, network_policy: bool = True,
                 limits: "ControlPlaneLimits | None" = None, audit_policy: str | os.PathLike | None = None):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        # raised API limits for scale runs (None: the defaults below), and an audit log
        # (``<state_dir>/audit.log``) written by the apiserver with this policy file
        self.limits = limits
        self.audit_policy = Path(audit_policy) if audit_policy else None
        self.bin_dir = Path(bin_dir) if bin_dir else _build.bin_dir()
        self.log = log
        self.fresh = fresh
        self.session = session  # lives only as long as this process (a test session)
        # NetworkPolicy enforced on real nodes (netpol.py); a started cluster keeps its setting
        # in state.json, so nodes added by another process follow it
        self.network_policy = network_policy
        self.pki = self.state_dir / "pki"
        self.logs = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.state_file = self.state_dir / "state.json"
        self.state: dict = {}
        self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        if self.state_file.exists():
            try:
                self.state = json.loads(self.state_file.read_text())
            except ValueError:
                self.state = {}

    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)

    @property
    def cluster_id(self) -> str:
        return hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:10]

    @property
    def net_plan(self) -> network.Plan:
        net = self.state.get("network")
        if not net:
            raise ClusterError("this cluster has no node network (not started)")
        return network.Plan(net["slot"])

    @property
    def host_address(self) -> str:
        """The address pods use to reach services on this machine (test Postgres, S3, ...).

        The host end of the cluster's veth pair (``10.200.<slot>.1``); such services must listen
        there (or on 0.0.0.0) and accept clients from :attr:`host_network`."""
        return self.net_plan.host_address

    @property
    def host_network(self) -> str:
        """The network pod traffic to :attr:`host_address` comes from (``10.200.<slot>.0/24``)."""
        return self.net_plan.host_network

    @property
    def api_address(self) -> str:
        return self.state.get("api_address", "127.0.0.1")

    @property
    def server(self) -> str:
        return f"https://{self.api_address}:{self.state['ports']['apiserver']}"

    @property
    def processes(self) -> dict:
        return self.state.setdefault("processes", {})

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ------------------------------------------------------------------ helpers
    def _write_kubeconfig(self, path: Path, cert: str, user: str) -> None:
        cfg = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "schedgen-local", "cluster": {
                "server": self.server, "certificate-authority": str(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": {
                "client-certificate": str(self.pki / f"{cert}.crt"),
                "client-key": str(self.pki / f"{cert}.key")}}],
            "contexts": [{"name": "schedgen-local", "context": {"cluster": "schedgen-local", "user": user}}],
            "current-context": "schedgen-local",
        }
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        path.chmod(0o600)

    def _spawn(self, key: str, argv: list[str], env: dict | None = None, cgroup: str | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        logf = open(self.logs / f"{key}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env or os.environ.copy(), cwd=str(self.state_dir),
                                preexec_fn=hostfs.cgroup_joiner(cgroup) if cgroup else None)
        logf.close()
        self.processes[key] = {"pid": proc.pid, "create_time": _create_time(proc.pid), "argv": argv}
        self._popen = getattr(self, "_popen", {})
        self._popen[key] = proc
        self._save_state()
        return proc.pid

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, path: str, timeout: float = 2.0, method: str = "GET", body: dict | None = None
             ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self._ssl_context()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _check_alive(self, key: str) -> None:
        proc = getattr(self, "_popen", {}).get(key)
        if proc is not None and proc.poll() is not None:
            tail = (self.logs / f"{key}.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"{key} exited with {proc.returncode}; log tail:\n{tail}")

    def _wait(self, what: str, fn, timeout: float, watch: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for k in watch:
                self._check_alive(k)
            try:
                if fn():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ processes of add-ons (kwok.py)
    def save_state(self) -> None:
        self._save_state()

    def start_process(self, key: str, argv: list[str], env: dict | None = None) -> int:
        """Start one more process of this cluster (log ``<state-dir>/logs/<key>.log``), recorded in
        ``state.json`` so that :meth:`stop` (``hack/cluster down``, from any process) stops it."""
        return self._spawn(key, argv, env=env)

    def process_alive(self, key: str) -> bool:
        info = self.state.get("processes", {}).get(key)
        return bool(info and _pid_alive(info["pid"], info.get("create_time")))

    def stop_process(self, key: str, timeout: float = 10.0) -> None:
        """Stop one recorded process (SIGTERM, SIGKILL after ``timeout``) and forget it."""
        if key in self.state.get("processes", {}):
            self._terminate([key], timeout)
            self.processes.pop(key, None)
            self._save_state()

    def wait_until(self, what: str, fn, timeout: float, watch: tuple[str, ...] = ()) -> None:
        """Poll ``fn`` until it is true (exceptions count as false); ClusterError after ``timeout``
        or as soon as one of the ``watch`` processes (started by this object) has exited."""
        self._wait(what, fn, timeout, watch)

    # ------------------------------------------------------------------ lifecycle
    def is_running(self) -> bool:
        p = self.state.get("processes", {}).get("kube-apiserver")
        return bool(p and _pid_alive(p["pid"], p.get("create_time")))

    def dead_processes(self) -> list[str]:
        """The recorded processes that no longer run (a kubelet that exited, ...)."""
        return [k for k, p in self.state.get("processes", {}).items()
                if not _pid_alive(p["pid"], p.get("create_time"))]

    @property
    def enforces_network_policy(self) -> bool:
        """Whether real nodes get a NetworkPolicy enforcer (netpol.py): the started cluster's setting."""
        return bool((self.state.get("network_policy") or {}).get("enabled", self.network_policy))

    def preflight(self) -> None:
        """Fail early, with the fix, when something real nodes need is missing."""
        need = ["etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "kube-scheduler", "kubelet",
                "kube-proxy"]
        for n in need:
            if not (self.bin_dir / n).exists():
                raise ClusterError(f"missing binary {self.bin_dir / n}; run 'hack/cluster build'")
        if self.network_policy and not netpol.binary().exists():
            raise ClusterError(f"missing binary {netpol.binary()}; run 'hack/cluster build'")
        from . import node as _node
        missing = [p for p in (_node.CONTAINERD, _node.CTR, _node.RUNC, f"{_node.CNI_BIN_DIR}/bridge",
                               f"{_node.CNI_BIN_DIR}/host-local", f"{_node.CNI_BIN_DIR}/loopback")
                   if not Path(p).exists()]
        missing += [t for t in ("iptables", "iptables-restore", "conntrack", "nsenter", "unshare", "ip", "gcc")
                    if shutil.which(t) is None]
        if missing:
            raise ClusterError(f"real nodes need {', '.join(missing)}: run hack/setup.sh (Debian packages "
                               "containerd runc containernetworking-plugins iptables conntrack busybox-static gcc)")
        if os.geteuid() != 0:
            raise ClusterError("real nodes need root (network namespaces, cgroups, containerd)")

    def start(self, timeout: float = 90.0, build: bool = True) -> "LocalCluster":
        t0 = time.monotonic()
        if self.is_running():
            raise ClusterError(f"cluster in {self.state_dir} is already running (pid "
                               f"{self.processes['kube-apiserver']['pid']}); run 'down' first")
        if build:
            _build.build()
            if self.network_policy:
                netpol.build(log=self.log)
        self.preflight()
        prev_slot = (self.state.get("network") or {}).get("slot") or self.state.get("last_slot")
        if self.state.get("network") or self.state.get("processes"):
            self.stop()  # leftovers of a cluster that was not stopped cleanly
        if self.fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.state = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler")}
        self.state = {"ports": ports, "processes": {}, "nodes": {}, "images": [],
                      "cluster_id": self.cluster_id, "bin_dir": str(self.bin_dir), "started_at": time.time(),
                      "network_policy": {"enabled": self.network_policy, "enforcer": netpol.BINARY_NAME,
                                         "version": netpol.VERSION}}
        try:
            t1 = time.monotonic()
            reclaim_stale_networks(self.log, sessions_only=self.session)
            plan = network.setup(self.state_dir, prefer=prev_slot, session=self.session)
            self.state["network"] = plan.as_dict()
            self.state["api_address"] = plan.host_address
            self._save_state()
            self.log(f"node network {plan.netns}: host address {plan.host_address}, pods {network.POD_CIDR}, "
                     f"services {SERVICE_CIDR} ({time.monotonic() - t1:.2f}s)")
            generate_pki(self.pki, SERVICE_IP, (plan.host_address,))
            self._write_kubeconfig(self.kubeconfig, "admin", "schedgen-admin")
            self._write_kubeconfig(self.state_dir / "controller-manager.kubeconfig", "controller-manager",
                                   "system:kube-controller-manager")
            self._write_kubeconfig(self.state_dir / "scheduler.kubeconfig", "scheduler", "system:kube-scheduler")
            self._write_kubeconfig(self.state_dir / "kube-proxy.kubeconfig", "kube-proxy", "system:kube-proxy")
            self.log(f"state dir {self.state_dir}; ports {ports}")
            self._start_etcd(ports)
            t1 = time.monotonic()
            self._wait("etcd", lambda: self._tcp_ok(ports["etcd"]), 30, ("etcd",))
            self.log(f"etcd listening after {time.monotonic() - t1:.1f}s")
            self._start_apiserver(ports)
            t1 = time.monotonic()
            self._wait("kube-apiserver /readyz", lambda: self._get("/readyz")[0] == 200, timeout,
                       ("etcd", "kube-apiserver"))
            self.log(f"kube-apiserver ready after {time.monotonic() - t1:.1f}s")
            self._bind_apiserver_kubelet_client()
            # controller-manager exits if the apiserver is not reachable at startup
            self._start_controller_manager(ports)
            self._start_scheduler(ports)
            t1 = time.monotonic()
            watch = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
            self._wait("default serviceaccount", lambda: self._get(
                "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, timeout, watch)
            self.log(f"default serviceaccount after {time.monotonic() - t1:.1f}s")
        except BaseException:
            self.stop()
            raise
        self.state["ready_seconds"] = round(time.monotonic() - t0, 2)
        self._save_state()
        self.log(f"control plane ready in {self.state['ready_seconds']:.1f}s; "
                 f"export KUBECONFIG={self.kubeconfig}")
        return self

    @staticmethod
    def _tcp_ok(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _start_etcd(self, ports: dict) -> None:
        p = self.pki
        c, pp = ports["etcd"], ports["etcd_peer"]
        self._spawn("etcd", [
            self.bin("etcd"), "--name=local", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls=https://127.0.0.1:{c}", f"--advertise-client-urls=https://127.0.0.1:{c}",
            f"--listen-peer-urls=https://127.0.0.1:{pp}", f"--initial-advertise-peer-urls=https://127.0.0.1:{pp}",
            f"--initial-cluster=local=https://127.0.0.1:{pp}", "--initial-cluster-state=new",
            f"--cert-file={p / 'etcd-server.crt'}", f"--key-file={p / 'etcd-server.key'}",
            f"--trusted-ca-file={p / 'ca.crt'}", "--client-cert-auth",
            f"--peer-cert-file={p / 'etcd-peer.crt'}", f"--peer-key-file={p / 'etcd-peer.key'}",
            f"--peer-trusted-ca-file={p / 'ca.crt'}", "--peer-client-cert-auth",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
            "--snapshot-count=10000",
        ])

    def _start_apiserver(self, ports: dict) -> None:
        p = self.pki
        addr = self.api_address
        # pods reach it through the kubernetes Service (kube-proxy -> the host address); the
        # apiserver reaches kubelets with a client cert of its own and checks their serving certs
        net = [f"--bind-address={addr}", f"--advertise-address={addr}",
               f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
               f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
               f"--kubelet-certificate-authority={p / 'ca.crt'}",
               "--kubelet-preferred-address-types=InternalIP"]
        self._spawn("kube-apiserver", [
            self.bin("kube-apiserver"),
            f"--etcd-servers=https://127.0.0.1:{ports['etcd']}",
            f"--etcd-cafile={p / 'ca.crt'}", f"--etcd-certfile={p / 'apiserver-etcd-client.crt'}",
            f"--etcd-keyfile={p / 'apiserver-etcd-client.key'}",
            *net, f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--enable-admission-plugins=NodeRestriction,PodSecurity",
            "--allow-privileged=true",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            "--profiling=false",
            "--event-ttl=30m",
            "--v=1",
            *self._apiserver_extra_args(),
        ])

    @property
    def audit_log(self) -> Path:
        """The apiserver's audit log (only written when started with ``audit_policy``)."""
        return self.state_dir / "audit.log"

    def _apiserver_extra_args(self) -> list[str]:
        args: list[str] = []
        lim = self.limits
        if lim is not None:
            args += [f"--max-requests-inflight={lim.max_requests_inflight}",
                     f"--max-mutating-requests-inflight={lim.max_mutating_requests_inflight}",
                     f"--event-ttl={lim.event_ttl}"]
        if self.audit_policy is not None:
            # batch mode: requests never wait for the log; no rotation (one file to read)
            args += [f"--audit-policy-file={self.audit_policy}", f"--audit-log-path={self.audit_log}",
                     "--audit-log-format=json", "--audit-log-mode=batch", "--audit-log-maxsize=0",
                     "--audit-log-batch-max-size=1000", "--audit-log-batch-buffer-size=100000"]
        return args

    def _start_controller_manager(self, ports: dict) -> None:
        p = self.pki
        kc = str(self.state_dir / "controller-manager.kubeconfig")
        self._spawn("kube-controller-manager", [
            self.bin("kube-controller-manager"),
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['controller_manager']}",
            f"--tls-cert-file={p / 'controller-manager-serving.crt'}",
            f"--tls-private-key-file={p / 'controller-manager-serving.key'}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--leader-elect=false",
            "--concurrent-job-syncs=10",
            "--concurrent-gc-syncs=20",
            "--concurrent-ttl-after-finished-syncs=10",
            "--concurrent-namespace-syncs=10",
            "--namespace-sync-period=30s",
            "--min-resync-period=30s",
            f"--kube-api-qps={self.limits.controller_manager_qps if self.limits else 200}",
            f"--kube-api-burst={self.limits.controller_manager_burst if self.limits else 400}",
            *([f"--concurrent-job-syncs={self.limits.concurrent_job_syncs}"] if self.limits else []),
            "--profiling=false",
            "--v=1",
        ])

    def _start_scheduler(self, ports: dict) -> None:
        p = self.pki
        kc = str(self.state_dir / "scheduler.kubeconfig")
        cfg = self.state_dir / "scheduler.yaml"
        cfg.write_text(yaml.safe_dump({
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": kc, "qps": self.limits.scheduler_qps if self.limits else 200,
                                 "burst": self.limits.scheduler_burst if self.limits else 400},
            "leaderElection": {"leaderElect": False},
        }, sort_keys=False))
        self._spawn("kube-scheduler", [
            self.bin("kube-scheduler"), f"--config={cfg}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['scheduler']}",
            f"--tls-cert-file={p / 'scheduler-serving.crt'}", f"--tls-private-key-file={p / 'scheduler-serving.key'}",
            "--profiling=false", "--v=1",
        ])

    def _bind_apiserver_kubelet_client(self) -> None:
        """Let the apiserver's kubelet-client identity use the kubelet API (logs, exec, ...)."""
        body = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "schedgen:kube-apiserver-kubelet-client"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:kubelet-api-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                              "name": APISERVER_KUBELET_CLIENT}]}
        deadline = time.monotonic() + 30
        while True:
            code, out = self._get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", method="POST",
                                  body=body)
            if code in (201, 409):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"cannot create the apiserver's kubelet-client binding: {code} {out[:300]!r}")
            time.sleep(0.2)

    def _start_kube_proxy(self, node_name: str, node_ip: str) -> None:
        """One kube-proxy per cluster: all nodes share the cluster's network namespace."""
        plan = self.net_plan
        cfg = self.state_dir / "kube-proxy.yaml"
        cfg.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.state_dir / "kube-proxy.kubeconfig"), "qps": 50, "burst": 100},
            "mode": "iptables",
            "hostnameOverride": node_name,
            "bindAddress": node_ip,
            "clusterCIDR": network.POD_CIDR,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [plan.host_network],
            "oomScoreAdj": 0,  # a negative one needs CAP_SYS_RESOURCE
            "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s", "localhostNodePorts": False},
            # leave the (machine-wide) conntrack table settings alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, sort_keys=False))
        self._spawn("kube-proxy", [*network.ns_exec(plan), self.bin("kube-proxy"), f"--config={cfg}", "--v=1"])
        self.state["kube_proxy_node"] = node_name
        self._save_state()

    # ------------------------------------------------------------------ images
    def sandbox_archive(self) -> Path:
        """The pause image archive every node imports before its kubelet starts."""
        env = os.environ.get("SCHEDGEN_PAUSE_ARCHIVE")
        if env:
            return Path(env)
        from .images import pause_archive
        return pause_archive()

    def import_image(self, archive: str | os.PathLike) -> dict:
        """Import an image archive (docker-archive or OCI layout tar) into every node's containerd,
        and remember it so nodes added later import it too. Returns {node: ctr output}."""
        archive = Path(archive).resolve()
        if not archive.is_file():
            raise ClusterError(f"no image archive {archive}")
        images = self.state.setdefault("images", [])
        if str(archive) not in images:
            images.append(str(archive))
            self._save_state()
        return {name: self._real_node(name).import_image(archive) for name in self.kubelet_nodes()}

    # ------------------------------------------------------------------ nodes
    def kubelet_nodes(self) -> list[str]:
        return [n for n, info in self.state.get("nodes", {}).items() if info.get("kind") == "kubelet"]

    def _real_node(self, name: str):
        from .node import RealNode
        return RealNode(self, name, self.state["nodes"][name]["index"])

    def node_ip(self, name: str) -> str:
        info = self.state.get("nodes", {}).get(name) or {}
        return info.get("ip", "127.0.0.1")

    def node_kubeconfig(self, name: str) -> Path:
        """The kubeconfig with the node's own credentials (``system:node:<name>``)."""
        return self.state_dir / f"node-{name}.kubeconfig"

    def add_node(self, name: str, cpu: str = "2", memory: str = "4Gi", pods: int = 110,
                 labels: dict | None = None, wait: float = 90.0) -> int:
        """Start one more real node (its own containerd + kubelet); returns the kubelet's pid.
        Adding one is how autoscaling is simulated (many simulated nodes: kwok.Kwok)."""
        if not self.is_running():
            raise ClusterError("cluster is not running")
        for key in (f"kubelet-{name}", f"containerd-{name}"):
            info = self.processes.get(key)
            if info and _pid_alive(info["pid"], info.get("create_time")):
                raise ClusterError(f"node {name} is already running ({key} pid {info['pid']})")
        t0 = time.monotonic()
        spawned = [f"containerd-{name}", f"kubelet-{name}", netpol.process_key(name)]
        try:
            return self._add_node(name, cpu, memory, pods, labels, wait, t0)
        except BaseException:
            # a node that did not come up leaves nothing running (its pods were never started
            # by a kubelet of this run; kill_pods covers containers containerd restarted)
            self.log(f"node {name} did not come up; stopping its processes")
            keys = [k for k in spawned if k in self.processes]
            if keys:
                self._terminate(keys, 10.0)
                for k in keys:
                    self.processes.pop(k, None)
                self._save_state()
            if name in self.kubelet_nodes():
                try:
                    self._real_node(name).kill_pods()
                except Exception as e:  # noqa: BLE001 - the original error matters more
                    self.log(f"node {name}: killing pods failed: {e}")
            raise

    def _add_node(self, name: str, cpu: str, memory: str, pods: int, labels: dict | None, wait: float,
                  t0: float) -> int:
        from .node import RealNode
        nodes = self.state.setdefault("nodes", {})
        used = {v.get("index") for k, v in nodes.items() if k != name}
        index = (nodes.get(name) or {}).get("index") or next(i for i in range(1, network.MAX_NODES + 1)
                                                            if i not in used)
        node = RealNode(self, name, index)
        network.add_node_address(self.net_plan, index)
        for w in node.prepare(cpu, memory, pods):
            self.log(f"node {name}: {w}")
        nodes[name] = {"kind": "kubelet", "index": index, "ip": node.ip, "cpu": cpu, "memory": memory,
                       "pods": pods, "labels": labels or {}}
        self._save_state()
        enforce = self.enforces_network_policy
        if enforce:  # starts syncing while containerd starts; bound before the kubelet runs a pod
            netpol.start(self, name, index, node.ip)
        self._spawn(f"containerd-{name}", node.containerd_argv(), env=node.containerd_env(),
                    cgroup=node.system_cgroup)
        self._wait(f"containerd of {name}", lambda: node.sock.exists() and node.ctr("version", timeout=5),
                   30, (f"containerd-{name}",))
        self._wait_cri(node)
        t1 = time.monotonic()
        for archive in [str(self.sandbox_archive()), *self.state.get("images", [])]:
            node.import_image(archive)
        t_import = time.monotonic() - t1
        netpol_note = ""
        if enforce:
            waited = netpol.wait_bound(self, name, index)
            netpol.hook(self.net_plan, index)
            nodes[name]["nfqueue"] = netpol.queue_id(index)
            self._save_state()
            netpol_note = f"; NetworkPolicy enforcer on NFQUEUE {netpol.queue_id(index)} (+{waited:.1f}s wait)"
        started = time.time()
        pid = self._spawn(f"kubelet-{name}", node.kubelet_argv(labels), cgroup=node.system_cgroup)
        if wait:
            # Ready as reported by this kubelet: a Node kept in etcd from before a restart still
            # says Ready (with an old heartbeat) while no kubelet runs
            self._wait(f"node {name} Ready (a heartbeat of the kubelet started now)",
                       lambda: self._node_ready(name, since=started), wait,
                       (f"containerd-{name}", f"kubelet-{name}"))
        if "kube-proxy" not in self.processes or not _pid_alive(self.processes["kube-proxy"]["pid"],
                                                                self.processes["kube-proxy"].get("create_time")):
            self._start_kube_proxy(name, node.ip)
        nodes[name]["ready_seconds"] = round(time.monotonic() - t0, 2)
        self._save_state()
        self.log(f"node {name} Ready in {nodes[name]['ready_seconds']:.1f}s (kubelet pid {pid}, ip {node.ip}, "
                 f"cpu={cpu}, memory={memory}, pods={pods}; image imports {t_import:.1f}s{netpol_note})")
        return pid

    def _wait_cri(self, node, timeout: float = 600.0) -> float:
        """Wait until the node's containerd serves the CRI (RuntimeService/Version answers).
        containerd listens at once but its CRI plugin first recovers the node's old sandboxes
        and containers: with hundreds of exited ones, a kubelet started before that exits with
        ``server is not initialized yet``. Returns the seconds waited."""
        from . import cri
        key, t0 = f"containerd-{node.name}", time.monotonic()
        last: list = [None]

        def answers() -> bool:
            try:
                cri.runtime_version(str(node.sock), timeout=5)
                return True
            except cri.CRIError as e:
                last[0] = e
                return False

        next_note = t0 + 10
        while not answers():
            self._check_alive(key)
            if not self.process_alive(key):
                raise ClusterError(f"{key} is not running")
            now = time.monotonic()
            if now - t0 > timeout:
                raise ClusterError(f"the CRI of node {node.name} did not answer within {timeout:.0f}s: {last[0]}")
            if now >= next_note:
                self.log(f"node {node.name}: waiting for containerd's CRI ({now - t0:.0f}s; it recovers the "
                         f"node's old containers first): {last[0]}")
                next_note = now + 10
            time.sleep(0.2)
        waited = time.monotonic() - t0
        if waited > 1:
            self.log(f"node {node.name}: containerd's CRI answers after {waited:.1f}s")
        return waited

    def _node_ready(self, name: str, since: float | None = None) -> bool:
        """The Node's Ready condition is True -- and, with ``since`` (a time.time()), written after
        it: its lastHeartbeatTime (whole seconds) is not older than ``since``."""
        code, body = self._get(f"/api/v1/nodes/{name}")
        if code != 200:
            return False
        conds = json.loads(body).get("status", {}).get("conditions") or []
        ready = next((c for c in conds if c.get("type") == "Ready"), None)
        if not ready or ready.get("status") != "True":
            return False
        if since is None:
            return True
        beat = ready.get("lastHeartbeatTime")
        return bool(beat) and _rfc3339(beat) >= int(since)

    def kubelet_pid(self, name: str) -> int | None:
        p = self.processes.get(f"kubelet-{name}")
        return p["pid"] if p else None

    # ------------------------------------------------------------------ clients
    def api_client(self):
        from kubernetes import client, config
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 16
        return client.ApiClient(cfg)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([self.bin("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                              capture_output=True, text=True, check=check, timeout=timeout)

    # ------------------------------------------------------------------ stop
    @staticmethod
    def _stop_rank(key: str) -> int:
        if key.startswith("kubelet-") or key in ("kwok", "karpenter"):
            return 0  # the simulated nodes' controller and their autoscaler go first, with the kubelets
        if key.startswith(netpol.BINARY_NAME + "-"):
            return 1  # with kube-proxy, once the pods are gone
        return {"kube-proxy": 1, "kube-scheduler": 3, "kube-controller-manager": 4, "kube-apiserver": 5,
                "etcd": 6}.get(key, 2 if key.startswith("containerd-") else 6)

    def _terminate(self, keys: list[str], timeout: float) -> None:
        """SIGTERM the recorded processes together, SIGKILL what is left after ``timeout``."""
        procs = self.state.get("processes", {})
        live = {}
        for key in keys:
            pid, ct = procs[key]["pid"], procs[key].get("create_time")
            if _pid_alive(pid, ct):
                try:
                    os.kill(pid, signal.SIGTERM)
                    live[key] = (pid, ct)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        while live and time.monotonic() < deadline:
            for key in list(live):
                popen = getattr(self, "_popen", {}).get(key)
                if popen is not None:
                    popen.poll()
                if not _pid_alive(*live[key]):
                    del live[key]
            time.sleep(0.05)
        for key, (pid, _) in live.items():
            self.log(f"{key} (pid {pid}) did not stop in {timeout}s; SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for key in keys:
            popen = getattr(self, "_popen", {}).get(key)
            if popen is not None:
                try:
                    popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

    def stop(self, timeout: float = 15.0) -> None:
        """Stop everything this cluster started, by recorded pid: kubelets and kwok, the pods' container
        processes, kube-proxy and the NetworkPolicy enforcers, containerds, scheduler, controller-manager, apiserver, etcd; then
        kill what is left in its cgroups (shims), unmount what its nodes mounted, remove its
        cgroups and its network namespace (with the bridge, veth pair and iptables rules)."""
        self._load_state_if_empty()
        procs = self.state.get("processes", {})
        ranks = sorted({self._stop_rank(k) for k in procs})
        for rank in ranks:
            self._terminate([k for k in procs if self._stop_rank(k) == rank], timeout)
            if rank == 0:
                for name in self.kubelet_nodes():
                    try:
                        self._real_node(name).kill_pods()
                    except Exception as e:  # noqa: BLE001 - keep stopping the rest
                        self.log(f"node {name}: killing pods failed: {e}")
        self._cleanup_host()
        if self.state:
            self.state["processes"] = {}
            self.state["stopped_at"] = time.time()
            self._save_state()

    def _load_state_if_empty(self) -> None:
        if not self.state:
            self._load_state()

    def _cleanup_host(self) -> None:
        rel = f"/schedgen/{self.cluster_id}"
        killed = hostfs.cgroup_kill(rel)
        if killed:
            self.log(f"killed {killed} leftover process(es) in cgroup {rel}")
        run_dir = network.RUN_DIR / self.cluster_id
        nodes_dir = self.state_dir / "nodes"
        unmounted = hostfs.unmount_under(nodes_dir, run_dir)
        if unmounted:
            self.log(f"unmounted {len(unmounted)} mount(s) of the nodes")
        left = hostfs.cgroup_remove(rel)
        if left:
            self.log(f"could not remove cgroups: {left[:5]}")
        hostfs.cgroup_prune_empty_parents(rel + "/x")
        net = self.state.get("network")
        if net:
            network.teardown(network.Plan(net["slot"]))
            self.state["last_slot"] = net["slot"]
            self.state.pop("network", None)
        shutil.rmtree(run_dir, ignore_errors=True)
        logs = Path("/var/log/containers")
        if logs.is_dir() and nodes_dir.exists():
            prefix = str(nodes_dir.resolve()) + "/"
            for link in logs.iterdir():
                try:
                    if link.is_symlink() and os.readlink(link).startswith(prefix):
                        link.unlink()
                except OSError:
                    pass

    def status(self) -> dict:
        out = {"state_dir": str(self.state_dir), "kubeconfig": str(self.kubeconfig), "processes": {}}
        for key, info in self.state.get("processes", {}).items():
            out["processes"][key] = {"pid": info["pid"], "alive": _pid_alive(info["pid"], info.get("create_time"))}
        out["nodes"] = self.state.get("nodes", {})
        if self.state.get("kwok"):
            out["kwok"] = self.state["kwok"]
        if self.state.get("network_policy"):
            out["network_policy"] = self.state["network_policy"]
        if self.state.get("network"):
            out["network"] = self.state["network"]
            out["host_address"] = self.host_address
        if self.is_running():
            out["server"] = self.server
            try:
                out["readyz"] = self._get("/readyz")[0]
            except Exception as e:  # noqa: BLE001
                out["readyz"] = repr(e)
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
