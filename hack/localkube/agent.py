"""Node agent: stands in for kubelet (and kube-scheduler) on one Node.

* registers a Node with the given allocatable cpu/memory/pods, keeps it Ready with a Lease
  heartbeat in kube-node-lease and periodic status updates;
* binds unscheduled pods (schedulerName default-scheduler) to its node while the sum of requests
  fits allocatable; otherwise marks them PodScheduled=False/Unschedulable;
* runs each container of its pods as a local process group (command from the pod or, if empty,
  from the image map), with env resolved, a per-pod temp dir (TMPDIR/HOME), a memory cgroup
  (v1) enforcing limits.memory (RLIMIT_AS fallback), stdout/stderr to a per-container log file;
* reports container states/pod phase/conditions like kubelet, including termination messages;
* on pod deletion kills the process group (SIGTERM, then SIGKILL after the grace period, capped)
  and removes the pod object with gracePeriodSeconds=0.

Several agents (one per node) may run against the same cluster; adding one is how tests
simulate cluster autoscaling.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import fnmatch
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("node-agent")

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
MAX_GRACE_SECONDS = 5.0
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
SMP = "application/strategic-merge-patch+json"


# --------------------------------------------------------------------------- quantities
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "P": 1e15, "E": 1e18}


def parse_quantity(q) -> float:
    if q is None:
        return 0.0
    if isinstance(q, (int, float)):
        return float(q)
    m = re.fullmatch(r"\s*([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(q))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def now_ts() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------- image map
class ImageMap:
    """image -> {command, args, env, path_prepend}; reloaded when its file changes."""

    def __init__(self, data: dict | None, path: str | None = None):
        self.data = data or {}
        self.path = path
        self.mtime = None

    @classmethod
    def load(cls, path: str | None) -> "ImageMap":
        m = cls({}, path)
        m._reload()
        return m

    def _reload(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if mtime != self.mtime:
                self.data = yaml.safe_load(Path(self.path).read_text()) or {}
                self.mtime = mtime
        except (OSError, yaml.YAMLError) as e:
            log.warning("cannot (re)load image map %s: %s", self.path, e)

    def lookup(self, image: str) -> dict | None:
        self._reload()
        if not image:
            return None
        candidates = [image]
        base = image.split("@", 1)[0]
        last = base.rsplit("/", 1)[-1]
        notag = base if ":" not in last else base.rsplit(":", 1)[0]
        candidates += [base, notag, notag.rsplit("/", 1)[-1]]
        if notag.startswith("docker.io/"):
            candidates.append(notag[len("docker.io/"):])
        if notag.startswith("library/"):
            candidates.append(notag[len("library/"):])
        for c in candidates:
            if c in self.data:
                return self.data[c]
        for pattern, entry in self.data.items():
            if any(ch in pattern for ch in "*?[") and any(fnmatch.fnmatchcase(c, pattern) for c in [image, base]):
                return entry
        return None


# --------------------------------------------------------------------------- pod helpers
def pod_requests(pod: dict) -> tuple[float, float]:
    """(cpu cores, memory bytes) as the scheduler computes them (max(init, sum(containers)))."""
    def req(c, res):
        r = (c.get("resources") or {})
        v = (r.get("requests") or {}).get(res)
        if v is None:
            v = (r.get("limits") or {}).get(res)  # requests default to limits
        return parse_quantity(v) if v is not None else 0.0
    spec = pod.get("spec") or {}
    cpu = sum(req(c, "cpu") for c in spec.get("containers") or [])
    mem = sum(req(c, "memory") for c in spec.get("containers") or [])
    for ic in spec.get("initContainers") or []:
        cpu = max(cpu, req(ic, "cpu"))
        mem = max(mem, req(ic, "memory"))
    overhead = spec.get("overhead") or {}
    return cpu + parse_quantity(overhead.get("cpu")), mem + parse_quantity(overhead.get("memory"))


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_key(pod: dict) -> str:
    m = pod["metadata"]
    return f"{m['namespace']}/{m['name']}"


_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)|\$\$")


def expand(s: str, env: dict) -> str:
    """Kubernetes $(VAR) expansion; $$ escapes; unknown references are left as-is."""
    def rep(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)
    return _VAR_REF.sub(rep, s)


# --------------------------------------------------------------------------- the agent
class Agent:
    def __init__(self, args):
        self.args = args
        self.node = args.node
        self.work_dir = Path(args.work_dir or f"/tmp/schedgen-node-{self.node}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.image_map = ImageMap.load(args.image_map)
        cfg = client.Configuration()
        config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.coord = client.CoordinationV1Api(self.api)
        self.alloc_cpu = parse_quantity(args.cpu)
        self.alloc_mem = parse_quantity(args.memory)
        self.alloc_pods = int(args.pods)
        self.labels = dict(kv.split("=", 1) for kv in args.label)
        self.stop_event = threading.Event()
        self.lock = threading.RLock()
        self.pods: dict[str, dict] = {}          # uid -> latest pod object (all namespaces)
        self.assumed: dict[str, dict] = {}       # uid -> pod bound by us, not yet seen bound
        self.workers: dict[str, PodWorker] = {}  # uid -> worker for pods on this node
        self.deleted: set[str] = set()           # uids we issued a final delete for
        self.unsched_marked: dict[str, str] = {}  # uid -> message already reported
        self.sched_wakeup = threading.Event()
        self.cgroup_parent = CGROUP_ROOT / (args.cgroup_parent or f"schedgen/{self.node}")
        self.use_cgroups = self._probe_cgroups()
        self.node_uid = None

    # ----------------------------------------------------------------- setup
    def _probe_cgroups(self) -> bool:
        if self.args.no_cgroups:
            return False
        try:
            self.cgroup_parent.mkdir(parents=True, exist_ok=True)
            probe = self.cgroup_parent / "probe"
            probe.mkdir(exist_ok=True)
            (probe / "memory.limit_in_bytes").write_text(str(64 * 2**20))
            probe.rmdir()
            return True
        except OSError as e:
            log.warning("memory cgroups unavailable (%s); falling back to RLIMIT_AS", e)
            return False

    def node_status(self) -> dict:
        ts = now_ts()
        alloc = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": str(self.alloc_pods),
                 "ephemeral-storage": "100Gi"}

        def cond(t, status, reason, msg):
            return {"type": t, "status": status, "reason": reason, "message": msg,
                    "lastHeartbeatTime": ts, "lastTransitionTime": self._transition.get(t, ts)}
        return {
            "capacity": alloc, "allocatable": alloc,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "schedgen node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                         "osImage": "schedgen local processes", "containerRuntimeVersion": "local-process://1",
                         "kubeletVersion": "v0.0.0-schedgen-node-agent", "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": "amd64"},
        }

    def register(self) -> None:
        self._transition = {}
        ts = now_ts()
        for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready"):
            self._transition[t] = ts
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "node.schedgen.local/agent": "true", **self.labels}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}}
        try:
            node = self.core.create_node(body, _preload_content=False)
            node = json.loads(node.data)
        except ApiException as e:
            if e.status != 409:
                raise
            node = json.loads(self.core.patch_node(self.node, {"metadata": {"labels": labels}}, _content_type=SMP,
                                                   _preload_content=False).data)
        self.node_uid = node["metadata"]["uid"]
        self.core.patch_node_status(self.node, {"status": self.node_status()}, _content_type=SMP)
        log.info("registered node %s (cpu=%s memory=%s pods=%s, cgroups=%s)", self.node, self.args.cpu,
                 self.args.memory, self.alloc_pods, self.use_cgroups)

    def heartbeat_loop(self) -> None:
        lease_ns = "kube-node-lease"
        last_status = time.monotonic()
        while not self.stop_event.is_set():
            body = {"metadata": {"name": self.node, "namespace": lease_ns,
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node,
                                                      "uid": self.node_uid}]},
                    "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                             "renewTime": now_micro()}}
            try:
                try:
                    self.coord.patch_namespaced_lease(self.node, lease_ns, {"spec": body["spec"]},
                                                     _content_type="application/merge-patch+json")
                except ApiException as e:
                    if e.status != 404:
                        raise
                    self.coord.create_namespaced_lease(lease_ns, body)
                if time.monotonic() - last_status > 60:
                    self.core.patch_node_status(self.node, {"status": self.node_status()}, _content_type=SMP)
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat failed: %s", e)
            self.stop_event.wait(10)

    # ----------------------------------------------------------------- watch
    def watch_loop(self) -> None:
        rv = None
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    resp = self.core.list_pod_for_all_namespaces(_preload_content=False, _request_timeout=60)
                    data = json.loads(resp.data)
                    rv = data["metadata"]["resourceVersion"]
                    seen = {}
                    for item in data["items"]:
                        seen[item["metadata"]["uid"]] = item
                    with self.lock:
                        gone = [uid for uid in self.pods if uid not in seen]
                        for uid in gone:
                            self._on_event("DELETED", self.pods[uid])
                        for item in seen.values():
                            self._on_event("MODIFIED", item)
                    self.ready.set()
                resp = self.core.list_pod_for_all_namespaces(
                    watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=240,
                    _preload_content=False, _request_timeout=(10, 300))
                try:
                    for line in iter_resp_lines(resp):
                        if self.stop_event.is_set():
                            return
                        ev = json.loads(line)
                        typ, obj = ev["type"], ev["object"]
                        if typ == "ERROR":
                            if obj.get("code") == 410:
                                log.info("watch expired (410); relisting")
                            else:
                                log.warning("watch error %s; relisting", obj)
                            rv = None
                            break
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if typ == "BOOKMARK":
                            continue
                        with self.lock:
                            self._on_event(typ, obj)
                finally:
                    resp.release_conn()
            except Exception as e:  # noqa: BLE001
                if self.stop_event.is_set():
                    return
                log.warning("pod watch failed (%s: %s); relisting", type(e).__name__, e)
                rv = None
                self.stop_event.wait(1)

    def _on_event(self, typ: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        node = (pod.get("spec") or {}).get("nodeName")
        if typ == "DELETED":
            self.pods.pop(uid, None)
            self.assumed.pop(uid, None)
            self.unsched_marked.pop(uid, None)
            self.deleted.discard(uid)
            w = self.workers.pop(uid, None)
            if w:
                w.on_api_deleted()
            self.sched_wakeup.set()
            return
        self.pods[uid] = pod
        if node:
            self.assumed.pop(uid, None)
            self.unsched_marked.pop(uid, None)
        if node == self.node:
            w = self.workers.get(uid)
            if w is None:
                if pod["metadata"].get("deletionTimestamp") or is_terminal(pod):
                    if pod["metadata"].get("deletionTimestamp"):
                        self._final_delete(pod)
                else:
                    w = PodWorker(self, pod)
                    self.workers[uid] = w
                    w.start()
            else:
                w.update(pod)
        self.sched_wakeup.set()

    def _final_delete(self, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self.deleted:
            return
        self.deleted.add(uid)

        def do():
            try:
                self.core.delete_namespaced_pod(
                    pod["metadata"]["name"], pod["metadata"]["namespace"],
                    body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)),
                    _preload_content=False)
            except ApiException as e:
                if e.status not in (404, 409):
                    log.warning("final delete of %s failed: %s", pod_key(pod), e.reason)
                    with self.lock:
                        self.deleted.discard(uid)
        threading.Thread(target=do, daemon=True).start()

    # ----------------------------------------------------------------- scheduling
    def _usage(self) -> tuple[float, float, int]:
        cpu = mem = 0.0
        n = 0
        for uid, pod in {**self.pods, **self.assumed}.items():
            if (pod.get("spec") or {}).get("nodeName") != self.node:
                continue
            if is_terminal(pod):
                continue
            c, m = pod_requests(pod)
            cpu += c
            mem += m
            n += 1
        return cpu, mem, n

    def _node_matches(self, pod: dict) -> bool:
        spec = pod.get("spec") or {}
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", **self.labels}
        for k, v in (spec.get("nodeSelector") or {}).items():
            if labels.get(k) != v:
                return False
        return True

    def schedule_loop(self) -> None:
        while not self.stop_event.is_set():
            self.sched_wakeup.wait(5)
            self.sched_wakeup.clear()
            if self.stop_event.is_set():
                return
            try:
                self._schedule_once()
            except Exception:  # noqa: BLE001
                log.exception("scheduling pass failed")

    def _schedule_once(self) -> None:
        with self.lock:
            pending = [p for uid, p in self.pods.items()
                       if not (p.get("spec") or {}).get("nodeName") and uid not in self.assumed
                       and (p.get("spec") or {}).get("schedulerName", "default-scheduler") == "default-scheduler"
                       and not p["metadata"].get("deletionTimestamp") and not is_terminal(p)]
        pending.sort(key=lambda p: (-((p.get("spec") or {}).get("priority") or 0),
                                    p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        for pod in pending:
            uid = pod["metadata"]["uid"]
            with self.lock:
                cpu, mem, n = self._usage()
            rc, rm = pod_requests(pod)
            reasons = []
            if not self._node_matches(pod):
                reasons.append("node(s) didn't match Pod's node affinity/selector")
            if n + 1 > self.alloc_pods:
                reasons.append("Too many pods")
            if cpu + rc > self.alloc_cpu + 1e-9:
                reasons.append("Insufficient cpu")
            if mem + rm > self.alloc_mem:
                reasons.append("Insufficient memory")
            if reasons:
                msg = f"0/1 nodes are available: node {self.node}: " + ", ".join(reasons) + "."
                if self.unsched_marked.get(uid) != msg:
                    self.unsched_marked[uid] = msg
                    self._mark_unschedulable(pod, msg)
                continue
            with self.lock:
                self.assumed[uid] = copy.deepcopy(pod)
                self.assumed[uid].setdefault("spec", {})["nodeName"] = self.node
            try:
                self.core.create_namespaced_pod_binding(
                    pod["metadata"]["name"], pod["metadata"]["namespace"],
                    {"apiVersion": "v1", "kind": "Binding",
                     "metadata": {"name": pod["metadata"]["name"], "uid": uid},
                     "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}},
                    _preload_content=False)
                log.info("bound %s to %s", pod_key(pod), self.node)
            except ApiException as e:
                with self.lock:
                    self.assumed.pop(uid, None)
                if e.status not in (404, 409):
                    log.warning("binding %s failed: %s %s", pod_key(pod), e.status, e.reason)

    def _mark_unschedulable(self, pod: dict, msg: str) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                pod["metadata"]["name"], pod["metadata"]["namespace"],
                {"metadata": {"uid": pod["metadata"]["uid"]},
                 "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                            "message": msg, "lastProbeTime": None,
                                            "lastTransitionTime": now_ts()}]}},
                _content_type=SMP, _preload_content=False)
            log.info("%s unschedulable: %s", pod_key(pod), msg)
        except ApiException as e:
            if e.status not in (404, 409, 422):
                log.warning("marking %s unschedulable failed: %s", pod_key(pod), e.reason)

    # ----------------------------------------------------------------- main
    def run(self) -> None:
        self.ready = threading.Event()
        self.register()
        threads = [threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
                   threading.Thread(target=self.watch_loop, name="watch", daemon=True),
                   threading.Thread(target=self.schedule_loop, name="scheduler", daemon=True)]
        for t in threads:
            t.start()

        def on_signal(signum, frame):
            self.stop_event.set()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not self.stop_event.is_set():
            self.stop_event.wait(1)
        log.info("shutting down: killing %d pod worker(s)", len(self.workers))
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.kill_all(grace=0.0)
        for w in workers:
            w.join(timeout=5)
        try:
            for d in sorted(self.cgroup_parent.rglob("*"), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
            self.cgroup_parent.rmdir()
        except OSError:
            pass


# --------------------------------------------------------------------------- per pod
class ContainerRun:
    """One execution of one container."""

    def __init__(self, worker: "PodWorker", spec: dict, init: bool):
        self.w = worker
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.cgroup: Path | None = None
        self.killed_by_agent = False
        self.start_error: str | None = None

    # paths
    @property
    def log_path(self) -> Path:
        return self.w.dir / f"{self.name}.log"

    def termination_path(self) -> Path:
        p = self.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        if p == DEFAULT_TERMINATION_PATH:
            return self.w.dir / f"{self.name}.termination-log"
        mapped = self.w.dir / "rootfs" / p.lstrip("/")
        return mapped

    def build_env(self) -> dict:
        w = self.w
        env: dict[str, str] = {}
        for k in ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
            if k in os.environ:
                env[k] = os.environ[k]
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        entry = w.agent.image_map.lookup(self.spec.get("image", "")) or {}
        if entry.get("path_prepend"):
            env["PATH"] = os.pathsep.join(list(entry["path_prepend"]) + [env["PATH"]])
        for k, v in (entry.get("env") or {}).items():
            env[str(k)] = str(v)
        env["HOSTNAME"] = w.name
        env["HOME"] = str(w.home)
        env["TMPDIR"] = str(w.tmp)
        if w.agent.args.apiserver_port:
            env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
            env["KUBERNETES_SERVICE_PORT"] = str(w.agent.args.apiserver_port)
        tpath = self.termination_path()
        env["TERMINATION_MESSAGE_PATH"] = str(tpath)
        if w.sa_kubeconfig:
            env["KUBECONFIG"] = str(w.sa_kubeconfig)
        # envFrom, then env (env wins), with $(VAR) expansion against what is defined so far
        for src in self.spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = w.lookup_configmap(src["configMapRef"]["name"], src["configMapRef"].get("optional", False))
            elif "secretRef" in src:
                data = w.lookup_secret(src["secretRef"]["name"], src["secretRef"].get("optional", False))
            else:
                data = {}
            for k, v in (data or {}).items():
                env[prefix + k] = v
        for e in self.spec.get("env") or []:
            name = e["name"]
            if "valueFrom" in e and e["valueFrom"] is not None:
                v = w.resolve_value_from(e["valueFrom"], self.spec)
                if v is None:
                    continue
                env[name] = v
            else:
                env[name] = expand(e.get("value") or "", env)
        return env

    def argv(self, env: dict) -> list[str]:
        cmd = list(self.spec.get("command") or [])
        args = list(self.spec.get("args") or [])
        entry = self.w.agent.image_map.lookup(self.spec.get("image", ""))
        if not cmd:
            if entry is None or not entry.get("command"):
                raise StartError(f"image {self.spec.get('image')!r} is not in the node agent's image map "
                                 f"and the container has no command")
            cmd = list(entry["command"])
            if not args:
                args = list(entry.get("args") or [])
        return [expand(x, env) for x in cmd + args]

    def memory_limit(self) -> int | None:
        lim = ((self.spec.get("resources") or {}).get("limits") or {}).get("memory")
        return int(parse_quantity(lim)) if lim else None

    def start(self) -> None:
        self.started_at = now_ts()
        self.reason = self.message = None
        self.exit_code = None
        self.killed_by_agent = False
        try:
            env = self.build_env()
            argv = self.argv(env)
        except StartError as e:
            self._fail_start(str(e))
            return
        tpath = self.termination_path()
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_bytes(b"")
        limit = self.memory_limit()
        wrapper: list[str] = []
        if limit:
            if self.w.agent.use_cgroups:
                self.cgroup = self.w.agent.cgroup_parent / f"{self.w.uid}-{self.name}-{self.w.restart_counts.get(self.name, 0)}"
                try:
                    self.cgroup.mkdir(parents=True, exist_ok=True)
                    (self.cgroup / "memory.limit_in_bytes").write_text(str(limit))
                    sw = self.cgroup / "memory.memsw.limit_in_bytes"
                    if sw.exists():
                        try:
                            sw.write_text(str(limit))
                        except OSError:
                            pass
                    wrapper = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup)]
                except OSError as e:
                    log.warning("cgroup setup failed for %s/%s: %s", self.w.key, self.name, e)
                    self.cgroup = None
            if not wrapper:
                wrapper = ["/bin/sh", "-c", 'ulimit -v "$0" && exec "$@"', str(max(limit // 1024, 1))]
        cwd = self.spec.get("workingDir")
        if not cwd or not os.path.isdir(cwd):
            cwd = str(self.w.dir)
        try:
            with open(self.log_path, "ab") as logf:
                logf.write(f"==== {now_ts()} start: {argv!r}\n".encode())
                logf.flush()
                self.proc = subprocess.Popen(wrapper + argv, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                             start_new_session=True, close_fds=True)
            self.pid = self.proc.pid
            log.info("started %s/%s pid %d: %s", self.w.key, self.name, self.pid, argv)
        except OSError as e:
            self._cleanup_cgroup()
            self._fail_start(f"failed to start {argv[0]!r}: {e}")

    def _fail_start(self, msg: str) -> None:
        self.start_error = msg
        self.reason = "StartError"
        self.message = msg
        self.finished_at = now_ts()
        self.exit_code = 128
        log.warning("%s/%s: %s", self.w.key, self.name, msg)

    def wait(self) -> None:
        if self.proc is None:
            return
        rc = self.proc.wait()
        # the container ends when its main process ends: kill what is left of its group/cgroup
        self._kill_group(signal.SIGKILL)
        self.finished_at = now_ts()
        oom = self._oom_killed()
        if rc < 0:
            sig = -rc
            code = 128 + sig
            self.reason = "OOMKilled" if (oom and sig == signal.SIGKILL) else "Error"
        else:
            code = rc
            self.reason = "Completed" if rc == 0 else ("OOMKilled" if oom else "Error")
        self._cleanup_cgroup()
        self.message = self._termination_message(code)
        self.exit_code = code  # last: other threads treat exit_code as "finished"

    def _oom_killed(self) -> bool:
        if not self.cgroup:
            return False
        try:
            for line in (self.cgroup / "memory.oom_control").read_text().splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill" and int(v) > 0:
                    return True
            return int((self.cgroup / "memory.failcnt").read_text().strip() or 0) > 0 and \
                int((self.cgroup / "memory.max_usage_in_bytes").read_text()) >= int(
                    (self.cgroup / "memory.limit_in_bytes").read_text())
        except (OSError, ValueError):
            return False

    def _termination_message(self, exit_code: int) -> str | None:
        msg = b""
        try:
            msg = self.termination_path().read_bytes()[:MAX_TERMINATION_MESSAGE]
        except OSError:
            pass
        policy = self.spec.get("terminationMessagePolicy") or "File"
        if not msg and policy == "FallbackToLogsOnError" and exit_code != 0:
            try:
                data = self.log_path.read_bytes()
                # drop our own "==== start" marker lines
                lines = [ln for ln in data.splitlines(keepends=True) if not ln.startswith(b"==== ")]
                msg = b"".join(lines[-FALLBACK_LOG_LINES:])[-FALLBACK_LOG_BYTES:]
            except OSError:
                pass
        return msg.decode("utf-8", errors="replace") if msg else None

    def _kill_group(self, sig: int) -> None:
        if self.pid:
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if self.cgroup and self.cgroup.exists():
            try:
                for p in (self.cgroup / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(p), sig)
                    except OSError:
                        pass
            except OSError:
                pass

    def terminate(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.killed_by_agent = True
        self._kill_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=max(grace, 0.01))
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)

    def _cleanup_cgroup(self) -> None:
        if not self.cgroup:
            return
        for _ in range(50):
            try:
                self.cgroup.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                self._kill_group(signal.SIGKILL)
                time.sleep(0.02)

    def status(self, restart_count: int, last: dict | None) -> dict:
        st: dict = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
                    "restartCount": restart_count, "ready": False, "started": False,
                    "containerID": f"local://{self.pid}" if self.pid else None,
                    "lastState": last or {}}
        if self.exit_code is not None:
            term = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                    "finishedAt": self.finished_at}
            if self.message:
                term["message"] = self.message
            if self.pid:
                term["containerID"] = f"local://{self.pid}"
            if self.exit_code > 128 and self.exit_code - 128 < 65:
                term["signal"] = self.exit_code - 128
            st["state"] = {"terminated": term, "running": None, "waiting": None}
        elif self.proc is not None:
            st["state"] = {"running": {"startedAt": self.started_at}, "terminated": None, "waiting": None}
            st["ready"] = not self.init
            st["started"] = True
        else:
            st["state"] = {"waiting": {"reason": "ContainerCreating"}, "running": None, "terminated": None}
        return st


class StartError(Exception):
    pass


class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: dict):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        m = pod["metadata"]
        self.uid, self.name, self.ns = m["uid"], m["name"], m["namespace"]
        self.key = f"{self.ns}/{self.name}"
        self.dir = agent.work_dir / "pods" / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.tmp = self.dir / "tmp"
        self.home = self.dir / "home"
        self.cond = threading.Condition()
        self.deleting = False
        self.api_deleted = False
        self.runs: dict[str, ContainerRun] = {}
        self.restart_counts: dict[str, int] = {}
        self.last_states: dict[str, dict] = {}
        self.transitions: dict[str, str] = {}
        self.start_time = now_ts()
        self.phase = "Pending"
        self.init_done = False
        self.sa_kubeconfig: Path | None = None

    def write_service_account_credentials(self) -> None:
        """Stand-in for the projected service-account volume: a TokenRequest token for the pod's
        ServiceAccount in <pod dir>/serviceaccount/ and a kubeconfig using it ($KUBECONFIG)."""
        spec = self.pod.get("spec") or {}
        if spec.get("automountServiceAccountToken") is False:
            return
        sa = spec.get("serviceAccountName") or "default"
        try:
            resp = self.agent.core.create_namespaced_service_account_token(
                sa, self.ns, {"spec": {"audiences": [], "expirationSeconds": 3600,
                                       "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name,
                                                          "uid": self.uid}}},
                _preload_content=False)
            token = json.loads(resp.data)["status"]["token"]
        except Exception as e:  # noqa: BLE001
            log.warning("no service account token for %s (%s)", self.key, e)
            return
        d = self.dir / "serviceaccount"
        d.mkdir(parents=True, exist_ok=True)
        (d / "token").write_text(token)
        (d / "namespace").write_text(self.ns)
        ca = self.agent.api.configuration.ssl_ca_cert
        if ca:
            shutil.copyfile(ca, d / "ca.crt")
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "pod",
               "clusters": [{"name": "local", "cluster": {"server": self.agent.api.configuration.host,
                                                          "certificate-authority": str(d / "ca.crt")}}],
               "users": [{"name": f"system:serviceaccount:{self.ns}:{sa}", "user": {"token": token}}],
               "contexts": [{"name": "pod", "context": {"cluster": "local", "namespace": self.ns,
                                                        "user": f"system:serviceaccount:{self.ns}:{sa}"}}]}
        (d / "kubeconfig").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.sa_kubeconfig = d / "kubeconfig"

    # events from the watch thread (agent lock held)
    def update(self, pod: dict) -> None:
        with self.cond:
            self.pod = pod
            if pod["metadata"].get("deletionTimestamp") and not self.deleting:
                self.deleting = True
                self.cond.notify_all()

    def on_api_deleted(self) -> None:
        with self.cond:
            self.api_deleted = True
            self.deleting = True
            self.cond.notify_all()

    # lookups for env resolution
    def lookup_configmap(self, name: str, optional: bool) -> dict | None:
        try:
            cm = json.loads(self.agent.core.read_namespaced_config_map(name, self.ns, _preload_content=False).data)
            return cm.get("data") or {}
        except ApiException as e:
            if e.status == 404 and optional:
                return None
            raise StartError(f"configmap {self.ns}/{name} not found") from None

    def lookup_secret(self, name: str, optional: bool) -> dict | None:
        import base64
        try:
            s = json.loads(self.agent.core.read_namespaced_secret(name, self.ns, _preload_content=False).data)
            return {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (s.get("data") or {}).items()}
        except ApiException as e:
            if e.status == 404 and optional:
                return None
            raise StartError(f"secret {self.ns}/{name} not found") from None

    def resolve_value_from(self, vf: dict, cspec: dict) -> str | None:
        if vf.get("secretKeyRef"):
            r = vf["secretKeyRef"]
            data = self.lookup_secret(r["name"], r.get("optional", False))
            if data is None or r["key"] not in data:
                if r.get("optional"):
                    return None
                raise StartError(f"couldn't find key {r['key']} in Secret {self.ns}/{r['name']}")
            return data[r["key"]]
        if vf.get("configMapKeyRef"):
            r = vf["configMapKeyRef"]
            data = self.lookup_configmap(r["name"], r.get("optional", False))
            if data is None or r["key"] not in data:
                if r.get("optional"):
                    return None
                raise StartError(f"couldn't find key {r['key']} in ConfigMap {self.ns}/{r['name']}")
            return data[r["key"]]
        if vf.get("fieldRef"):
            path = vf["fieldRef"]["fieldPath"]
            m = self.pod["metadata"]
            simple = {"metadata.name": m["name"], "metadata.namespace": m["namespace"], "metadata.uid": m["uid"],
                      "spec.nodeName": self.agent.node,
                      "spec.serviceAccountName": (self.pod.get("spec") or {}).get("serviceAccountName", "default"),
                      "status.podIP": "127.0.0.1", "status.podIPs": "127.0.0.1",
                      "status.hostIP": "127.0.0.1", "status.hostIPs": "127.0.0.1"}
            if path in simple:
                return simple[path]
            mm = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if mm:
                return (m.get(mm.group(1)) or {}).get(mm.group(2), "")
            if path in ("metadata.labels", "metadata.annotations"):
                d = m.get(path.split(".")[1]) or {}
                return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
            raise StartError(f"unsupported fieldRef {path}")
        if vf.get("resourceFieldRef"):
            r = vf["resourceFieldRef"]
            cname = r.get("containerName") or cspec["name"]
            c = next((c for c in (self.pod["spec"].get("containers") or []) + (self.pod["spec"].get("initContainers") or [])
                      if c["name"] == cname), cspec)
            kind, _, res = r["resource"].partition(".")
            val = ((c.get("resources") or {}).get(kind) or {}).get(res)
            if val is None:
                val = self.agent.args.cpu if res == "cpu" else self.agent.args.memory
            divisor = parse_quantity(r.get("divisor") or "1")
            return str(int(math.ceil(parse_quantity(val) / divisor)))
        return None

    # status
    def _cond(self, t: str, ok: bool, reason: str | None = None) -> dict:
        status = "True" if ok else "False"
        prev = self.transitions.get(t)
        if prev is None or prev[0] != status:
            self.transitions[t] = (status, now_ts())
        c = {"type": t, "status": status, "lastProbeTime": None, "lastTransitionTime": self.transitions[t][1]}
        if reason:
            c["reason"] = reason
        return c

    def push_status(self) -> None:
        spec = self.pod.get("spec") or {}
        init_specs = spec.get("initContainers") or []
        main_specs = spec.get("containers") or []

        def statuses(specs, init):
            out = []
            for c in specs:
                run = self.runs.get(c["name"])
                if run is None:
                    if init or not self.init_done:
                        reason = "PodInitializing"
                    else:
                        reason = "ContainerCreating"
                    out.append({"name": c["name"], "image": c.get("image", ""), "imageID": "",
                                "restartCount": 0, "ready": False, "started": False,
                                "state": {"waiting": {"reason": reason}}, "lastState": {}})
                else:
                    out.append(run.status(self.restart_counts.get(c["name"], 0), self.last_states.get(c["name"])))
            return out
        main = statuses(main_specs, False)
        all_ready = bool(main) and all(s["ready"] for s in main) and self.phase == "Running"
        not_ready_reason = None if all_ready else ("PodCompleted" if self.phase in ("Succeeded", "Failed")
                                                   else "ContainersNotReady")
        status = {
            "phase": self.phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "qosClass": (self.pod.get("status") or {}).get("qosClass"),
            "conditions": [
                self._cond("PodReadyToStartContainers", True),
                self._cond("Initialized", self.init_done or not init_specs,
                           None if (self.init_done or not init_specs) else "ContainersNotInitialized"),
                self._cond("ContainersReady", all_ready, not_ready_reason),
                self._cond("Ready", all_ready, not_ready_reason),
            ],
            "containerStatuses": main,
        }
        if init_specs:
            status["initContainerStatuses"] = statuses(init_specs, True)
        if status["qosClass"] is None:
            del status["qosClass"]
        body = {"metadata": {"uid": self.uid}, "status": status}
        for attempt in range(5):
            try:
                self.agent.core.patch_namespaced_pod_status(self.name, self.ns, body, _content_type=SMP,
                                                            _preload_content=False)
                return
            except ApiException as e:
                if e.status in (404, 409, 422):
                    if e.status == 422:
                        log.warning("status update of %s rejected: %s", self.key, e.body)
                    return
                log.warning("status update of %s failed (%s); retrying", self.key, e.status)
            except Exception as e:  # noqa: BLE001
                log.warning("status update of %s failed (%s); retrying", self.key, e)
            time.sleep(0.2 * (attempt + 1))

    # lifecycle
    def _grace(self) -> float:
        m = self.pod["metadata"]
        g = m.get("deletionGracePeriodSeconds")
        if g is None:
            g = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return min(float(g or 0), MAX_GRACE_SECONDS)

    def kill_all(self, grace: float | None = None) -> None:
        with self.cond:
            self.deleting = True
            self.cond.notify_all()
        g = self._grace() if grace is None else grace
        runs = [r for r in self.runs.values() if r.proc is not None and r.proc.poll() is None]
        ts = [threading.Thread(target=r.terminate, args=(g,), daemon=True) for r in runs]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.exception("pod worker %s crashed", self.key)
        finally:
            for r in self.runs.values():
                if r.proc is not None and r.proc.poll() is None:
                    r.terminate(0)
                r._cleanup_cgroup()
            with self.agent.lock:
                if self.agent.workers.get(self.uid) is self:
                    # keep the entry for terminal pods so they are not restarted; drop once deleted
                    if self.api_deleted:
                        self.agent.workers.pop(self.uid, None)

    def _run(self) -> None:
        for d in (self.dir, self.tmp, self.home):
            d.mkdir(parents=True, exist_ok=True)
        self.write_service_account_credentials()
        spec = self.pod.get("spec") or {}
        policy = spec.get("restartPolicy", "Always")
        self.push_status()
        # init containers, one by one
        for c in spec.get("initContainers") or []:
            while True:
                if self.deleting:
                    return self._finish_deleted()
                r = ContainerRun(self, c, init=True)
                self.runs[c["name"]] = r
                r.start()
                self.push_status()
                self._wait_runs([r])
                if self.deleting:
                    return self._finish_deleted()
                if r.exit_code == 0:
                    break
                if policy == "Never":
                    self.phase = "Failed"
                    self.push_status()
                    return self._after_terminal()
                self._restart_delay(c["name"], r)
        self.init_done = True
        if self.deleting:
            return self._finish_deleted()
        runs = []
        for c in spec.get("containers") or []:
            r = ContainerRun(self, c, init=False)
            self.runs[c["name"]] = r
            r.start()
            runs.append(r)
        self.phase = "Running" if any(r.exit_code is None for r in runs) else self.phase
        self.push_status()
        remaining = list(runs)
        while remaining:
            done = self._wait_runs(remaining, any_=True)
            if self.deleting:
                return self._finish_deleted()
            for r in done:
                remaining.remove(r)
                restart = policy == "Always" or (policy == "OnFailure" and r.exit_code != 0)
                if restart:
                    self._restart_delay(r.name, r)
                    if self.deleting:
                        return self._finish_deleted()
                    nr = ContainerRun(self, r.spec, init=False)
                    self.runs[r.name] = nr
                    nr.start()
                    remaining.append(nr)
            if remaining:
                self.push_status()
        final = [self.runs[c["name"]] for c in spec.get("containers") or []]
        self.phase = "Succeeded" if all(r.exit_code == 0 for r in final) else "Failed"
        self.push_status()
        log.info("%s %s", self.key, self.phase)
        self._after_terminal()

    def _restart_delay(self, name: str, r: ContainerRun) -> None:
        self.last_states[name] = {"terminated": {"exitCode": r.exit_code, "reason": r.reason,
                                                 "startedAt": r.started_at, "finishedAt": r.finished_at,
                                                 **({"message": r.message} if r.message else {}),
                                                 "containerID": f"local://{r.pid}" if r.pid else None}}
        self.restart_counts[name] = self.restart_counts.get(name, 0) + 1
        self.push_status()
        delay = min(1.0 * 2 ** (self.restart_counts[name] - 1), 10.0)
        with self.cond:
            self.cond.wait_for(lambda: self.deleting, timeout=delay)

    def _wait_runs(self, runs: list[ContainerRun], any_: bool = False) -> list[ContainerRun]:
        """Wait until one (any_) or all runs exit, or deletion is requested."""
        waiters = []
        for r in runs:
            if r.exit_code is None and r.proc is not None and not getattr(r, "_waiter", None):
                def waiter(r=r):
                    r.wait()
                    with self.cond:
                        self.cond.notify_all()
                r._waiter = threading.Thread(target=waiter, daemon=True)
                r._waiter.start()
            waiters.append(r)

        def finished():
            return [r for r in runs if r.exit_code is not None]
        with self.cond:
            while True:
                done = finished()
                if self.deleting:
                    return done
                if (any_ and done) or len(done) == len(runs):
                    return done
                self.cond.wait(1.0)

    def _finish_deleted(self) -> None:
        """Pod is being deleted: kill processes, report a terminal status, remove the object."""
        self.kill_all()
        for r in self.runs.values():
            w = getattr(r, "_waiter", None)
            if w is not None:
                w.join(timeout=10)
        if not self.api_deleted:
            for r in self.runs.values():
                if r.exit_code is None:
                    r.exit_code, r.reason, r.finished_at = 137, "Error", now_ts()
            if self.phase not in ("Succeeded", "Failed"):
                spec = self.pod.get("spec") or {}
                final = [self.runs.get(c["name"]) for c in spec.get("containers") or []]
                self.phase = "Succeeded" if final and all(r is not None and r.exit_code == 0 for r in final) else "Failed"
                self.push_status()
            with self.agent.lock:
                self.agent._final_delete(self.pod)
        log.info("%s deleted; processes killed", self.key)

    def _after_terminal(self) -> None:
        """Terminal pod: processes are done; wait for deletion to remove the object."""
        with self.cond:
            self.cond.wait_for(lambda: self.deleting or self.agent.stop_event.is_set())
        if self.api_deleted or self.agent.stop_event.is_set():
            return
        with self.agent.lock:
            self.agent._final_delete(self.pod)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="schedgen node agent (kubelet + scheduler stand-in)")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--cpu", default="2")
    ap.add_argument("--memory", default="4Gi")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--label", action="append", default=[], help="node label k=v (repeatable)")
    ap.add_argument("--image-map", help="YAML/JSON file: image -> {command: [...], args: [...], env: {...}}")
    ap.add_argument("--work-dir")
    ap.add_argument("--cgroup-parent", help="memory cgroup path below /sys/fs/cgroup/memory")
    ap.add_argument("--no-cgroups", action="store_true")
    ap.add_argument("--apiserver-port", type=int)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    Agent(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
