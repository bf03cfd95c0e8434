"""A real local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager)
plus node agents standing in for kubelet/kube-scheduler.

Everything binds to 127.0.0.1 on free ports, uses TLS with generated certificates, and is
tracked by pid in ``<state_dir>/state.json`` so that a different process (``hack/cluster
down``) can stop it.
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
from pathlib import Path

import yaml

from . import build as _build
from .certs import generate_pki

HACK_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = HACK_DIR.parent
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"

# Controllers the project needs (canonical names; old aliases also work).
CONTROLLERS = [
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "cronjob-controller",
]


def default_state_dir() -> Path:
    return _build.cache_root() / "cluster"


def default_image_map() -> dict:
    """Image -> local command map used by the node agent unless overridden."""
    venv_bin = REPO_ROOT / ".venv" / "bin"
    py = str(venv_bin / "python") if (venv_bin / "python").exists() else sys.executable
    return {
        "schedgen-runner": {"command": [str(venv_bin / "schedgen-runner")], "path_prepend": [str(venv_bin)]},
        "schedgen-operator": {"command": [str(venv_bin / "schedgen-operator")],
                              "path_prepend": [str(venv_bin)]},
        "schedgen": {"command": [str(venv_bin / "schedgen")], "path_prepend": [str(venv_bin)]},
        "busybox": {"command": ["sh"]},
        "alpine": {"command": ["sh"]},
        "python": {"command": [py], "path_prepend": [str(venv_bin)]},
    }


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


def _log(msg: str) -> None:
    print(f"[localkube] {msg}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    pass


class LocalCluster:
    """Local control plane + node agents.

    >>> c = LocalCluster(state_dir=tmp).start()
    >>> c.add_node("node-1", cpu="2", memory="4Gi")
    >>> c.kubeconfig  # admin kubeconfig path
    >>> c.stop()
    """

    def __init__(self, state_dir: str | os.PathLike | None = None, bin_dir: str | os.PathLike | None = None,
                 image_map: dict | None = None, log=_log, fresh: bool = False):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.bin_dir = Path(bin_dir) if bin_dir else _build.bin_dir()
        self.image_map = dict(default_image_map() if image_map is None else image_map)
        self.log = log
        self.fresh = fresh
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
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state['ports']['apiserver']}"

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

    def _spawn(self, key: str, argv: list[str], env: dict | None = None) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        logf = open(self.logs / f"{key}.log", "ab")
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env or os.environ.copy(), cwd=str(self.state_dir))
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

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.server + path)
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

    # ------------------------------------------------------------------ lifecycle
    def is_running(self) -> bool:
        p = self.state.get("processes", {}).get("kube-apiserver")
        return bool(p and _pid_alive(p["pid"], p.get("create_time")))

    def start(self, timeout: float = 90.0, build: bool = True) -> "LocalCluster":
        t0 = time.monotonic()
        if self.is_running():
            raise ClusterError(f"cluster in {self.state_dir} is already running (pid "
                               f"{self.processes['kube-apiserver']['pid']}); run 'down' first")
        if build:
            _build.build()
        for n in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not (self.bin_dir / n).exists():
                raise ClusterError(f"missing binary {self.bin_dir / n}; run 'hack/cluster build'")
        if self.fresh and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            self.state = {}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        generate_pki(self.pki, SERVICE_IP)
        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "controller_manager")}
        self.state = {"ports": ports, "processes": {}, "nodes": {}, "cluster_id": self.cluster_id,
                      "bin_dir": str(self.bin_dir), "started_at": time.time()}
        self._save_state()
        self._write_kubeconfig(self.kubeconfig, "admin", "schedgen-admin")
        self._write_kubeconfig(self.state_dir / "controller-manager.kubeconfig", "controller-manager",
                               "system:kube-controller-manager")
        self._write_kubeconfig(self.state_dir / "node-agent.kubeconfig", "node-agent", "schedgen:node-agent")
        self.log(f"state dir {self.state_dir}; ports {ports}")
        try:
            self._start_etcd(ports)
            t1 = time.monotonic()
            self._wait("etcd", lambda: self._tcp_ok(ports["etcd"]), 30, ("etcd",))
            self.log(f"etcd listening after {time.monotonic() - t1:.1f}s")
            self._start_apiserver(ports)
            t1 = time.monotonic()
            self._wait("kube-apiserver /readyz", lambda: self._get("/readyz")[0] == 200, timeout,
                       ("etcd", "kube-apiserver"))
            self.log(f"kube-apiserver ready after {time.monotonic() - t1:.1f}s")
            # controller-manager exits if the apiserver is not reachable at startup
            self._start_controller_manager(ports)
            t1 = time.monotonic()
            self._wait("default serviceaccount", lambda: self._get(
                "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, timeout,
                ("etcd", "kube-apiserver", "kube-controller-manager"))
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
        self._spawn("kube-apiserver", [
            self.bin("kube-apiserver"),
            f"--etcd-servers=https://127.0.0.1:{ports['etcd']}",
            f"--etcd-cafile={p / 'ca.crt'}", f"--etcd-certfile={p / 'apiserver-etcd-client.crt'}",
            f"--etcd-keyfile={p / 'apiserver-etcd-client.key'}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['apiserver']}", "--advertise-address=127.0.0.1",
            # 127.0.0.1 may not be stored in the kubernetes Endpoints; nothing in-cluster needs it
            "--endpoint-reconciler-type=none",
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
        ])

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
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--profiling=false",
            "--v=1",
        ])

    # ------------------------------------------------------------------ nodes
    def image_map_file(self) -> Path:
        """Write ``self.image_map`` to the file all node agents read (they reload it on change)."""
        f = self.state_dir / "image-map.yaml"
        tmp = f.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.image_map, sort_keys=True))
        tmp.replace(f)
        return f

    def set_image(self, image: str, command: list[str], args: list[str] | None = None,
                  env: dict | None = None, path_prepend: list[str] | None = None) -> None:
        """Map ``image`` (with or without tag, or a glob) to a local command, for running agents too."""
        entry: dict = {"command": list(command)}
        if args:
            entry["args"] = list(args)
        if env:
            entry["env"] = {str(k): str(v) for k, v in env.items()}
        if path_prepend:
            entry["path_prepend"] = list(path_prepend)
        self.image_map[image] = entry
        if self.state_dir.exists():
            self.image_map_file()

    def add_node(self, name: str, cpu: str = "2", memory: str = "4Gi", pods: int = 110,
                 labels: dict | None = None, wait: float = 30.0) -> int:
        """Register a Node backed by a new node-agent process; returns the agent's pid."""
        if not self.is_running():
            raise ClusterError("cluster is not running")
        key = f"node-agent-{name}"
        if key in self.processes and _pid_alive(self.processes[key]["pid"], self.processes[key].get("create_time")):
            raise ClusterError(f"node {name} already has a running agent")
        argv = [sys.executable, "-m", "localkube.agent",
                f"--kubeconfig={self.state_dir / 'node-agent.kubeconfig'}",
                f"--node={name}", f"--cpu={cpu}", f"--memory={memory}", f"--pods={pods}",
                f"--image-map={self.image_map_file()}",
                f"--work-dir={self.state_dir / 'nodes' / name}",
                f"--cgroup-parent=schedgen/{self.cluster_id}/{name}",
                f"--apiserver-port={self.state['ports']['apiserver']}"]
        for k, v in (labels or {}).items():
            argv.append(f"--label={k}={v}")
        env = os.environ.copy()
        env["PYTHONPATH"] = os.pathsep.join([str(HACK_DIR)] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
        env["PYTHONUNBUFFERED"] = "1"
        pid = self._spawn(key, argv, env=env)
        self.state.setdefault("nodes", {})[name] = {"cpu": cpu, "memory": memory, "pods": pods}
        self._save_state()
        if wait:
            def node_ready() -> bool:
                code, body = self._get(f"/api/v1/nodes/{name}")
                if code != 200:
                    return False
                conds = json.loads(body).get("status", {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            self._wait(f"node {name} Ready", node_ready, wait, (key,))
        self.log(f"node {name} registered (agent pid {pid}, cpu={cpu}, memory={memory}, pods={pods})")
        return pid

    def agent_pid(self, name: str) -> int | None:
        p = self.processes.get(f"node-agent-{name}")
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
    def stop(self, timeout: float = 15.0) -> None:
        """Stop node agents first, then controller-manager, apiserver, etcd -- by recorded pid."""
        self._load_state_if_empty()
        procs = self.state.get("processes", {})
        order = sorted(procs, key=lambda k: (0 if k.startswith("node-agent") else
                                             1 if k == "kube-controller-manager" else
                                             2 if k == "kube-apiserver" else 3))
        for key in order:
            info = procs[key]
            pid, ct = info["pid"], info.get("create_time")
            if not _pid_alive(pid, ct):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _pid_alive(pid, ct):
                popen = getattr(self, "_popen", {}).get(key)
                if popen is not None:
                    popen.poll()
                time.sleep(0.05)
            if _pid_alive(pid, ct):
                self.log(f"{key} (pid {pid}) did not stop in {timeout}s; SIGKILL")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            popen = getattr(self, "_popen", {}).get(key)
            if popen is not None:
                try:
                    popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._sweep_cgroups()
        if self.state:
            self.state["processes"] = {}
            self.state["stopped_at"] = time.time()
            self._save_state()

    def _load_state_if_empty(self) -> None:
        if not self.state:
            self._load_state()

    def _sweep_cgroups(self) -> None:
        """Kill leftovers in this cluster's cgroups (if an agent died hard) and remove them."""
        root = Path("/sys/fs/cgroup/memory/schedgen") / self.cluster_id
        if not root.exists():
            return
        for d in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
            if not d.is_dir():
                continue
            try:
                for pid in (d / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
            except OSError:
                pass
        for d in sorted([root.parent, root, *root.rglob("*")], key=lambda p: -len(p.parts)):
            if d.is_dir():
                for _ in range(1 if d == root.parent else 20):
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:  # busy, or (parent) another cluster's cgroups are in it
                        time.sleep(0.05)

    def status(self) -> dict:
        out = {"state_dir": str(self.state_dir), "kubeconfig": str(self.kubeconfig), "processes": {}}
        for key, info in self.state.get("processes", {}).items():
            out["processes"][key] = {"pid": info["pid"], "alive": _pid_alive(info["pid"], info.get("create_time"))}
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
