"""Semester start across a cluster: N uploads from T tenants on K simulated nodes, schedgen's
operator and Kueue side by side on the same control plane.

    PYTHONPATH=src .venv/bin/python bench/scale.py [--system schedgen|kueue|both] [--count 15000]
        [--tenants 120] [--nodes 250] [--out docs/scale/run]

What runs (all on this machine, started and stopped by pid):

* the real control plane of hack/localkube (etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler) with raised limits (localkube.cluster.ControlPlaneLimits: apiserver
  --max-requests-inflight 1600 / --max-mutating-requests-inflight 800, controller-manager
  and scheduler client QPS 500 / burst 1000, 20 Job workers, Events kept 4 h) and an audit log
  of every write (Metadata level, localkube.cluster.AUDIT_WRITES_POLICY);
* KWOK v0.8.0 with ``--nodes`` simulated nodes (32 CPU, 256Gi, 110 pods each; label and
  NoSchedule taint kwok.x-k8s.io/node=fake) and the executor (hack/localkube/executor.py, a
  subprocess of its own) doing the runner's work for every runner pod on them: GET the PDF
  from MinIO by its presigned URL, parse it with schedgen's parser (cached per document:
  the copies differ only after %%EOF), PUT the result object, annotate the pod;
* Postgres and MinIO (hack/devservices);
* schedgen: the operator (``python -m schedgen.operator``) and the API (``python -m
  schedgen.api serve``) as processes on this machine -- not pods on a real kubelet node:
  the stack is the same, the node's containerd/kubelet would only add CPU on 2 cores -- with
  the runner placement the chart's runner.nodeSelector/tolerations set
  (SCHEDGEN_NODE_SELECTOR / SCHEDGEN_RUNNER_TOLERATIONS: the fake nodes), one API key per
  tenant, uploads through the API (POST /api/v1/uploads) at ``--concurrency`` in flight;
* Kueue v0.17.0 (``go install sigs.k8s.io/kueue/cmd/kueue@v0.17.0``, cached in
  ~/.cache/schedgen/kueue-v0.17.0): its manager binary with its CRDs, no webhooks
  registered, batch/job only, leader election off; one ResourceFlavor, a ``cpu`` quota of
  250m x maxConcurrent (every runner Job requests 250m: the quota is the same
  concurrency), a LocalQueue per tenant namespace, WorkloadPriorityClasses
  high/normal/low. ``--kueue-layout`` (``cohort``, the default): the layout Kueue's
  documentation and its own scheduler performance test use for tenants sharing a cap -- a
  Cohort holding the quota and one ClusterQueue per tenant (nominal 0, borrowing it all),
  fair sharing on (Kueue admits one head per ClusterQueue per scheduling cycle).
  ``one-queue``: the issue's literal setup, one ClusterQueue with the quota and admission
  fair sharing between the LocalQueues; in v0.17.0 that path has a bug (entry penalties
  are never subtracted: the workload reconciler gets no AFS config, fixed in v0.17.1,
  kubernetes-sigs/kueue#10455), which rebuilds the whole queue on every pop -- 0.65
  admissions/s at 3,000 Jobs here. The same uploads as runner-shaped Jobs (the operator's
  labels, a run-file Secret each, placement on the fake nodes) created suspended with
  ``kueue.x-k8s.io/queue-name``.

Every component talks to the apiserver as its own identity (a ServiceAccount token:
schedgen-operator, schedgen-api, executor, harness, kueue; kwok is the admin user), so the
audit log says who wrote what.

The workload (bench/scale_lib.workload): ``--count`` uploads, tenants of Zipf-like sizes
(``--tenant-skew``, 1.0: the k-th tenant has 1/(k+1) of the weight), priorities high /
normal / low 10 / 20 / 70 % (Kueue's scheduler baseline), arrivals at a rate decaying as
exp(-t/tau) (``--arrival-tau`` 120 s) within ``--arrival-window`` (600 s): 40 % in the first
minute, 87 % in four. An upload is sent at its time or as soon as one of the
``--concurrency`` clients is free. The three fixtures of ../shared/fixtures/up, each copy with
a unique comment after %%EOF.

Caps sized to the nodes: maxConcurrent = nodes x ``--slots-per-node`` (1: 250 runner slots
on 250 nodes), maxPerTenant = ceil(4 x maxConcurrent / tenants); admissionsPerSecond
``--rate`` (200). Batch mode at the operator's defaults (batchSize 10, threshold 4).

What it measures (JSON ``<out>/report.json``, PNG ``<out>/scale.png``):

* loss and duplicates: every ParseJob ends exactly once (its final phase, the final
  transitions seen by a watch and in Postgres), its row is in that phase, its events rows =
  status.result.events, Kubernetes Events per ParseJob;
* admission delay after a slot frees, p50/p99 per priority (scale_lib.admission_delays),
  from the statuses (operator clock) and, for both systems alike, from a watch (first seen
  Running / unsuspended, first seen final / Complete);
* fairness: Jain's index per minute among the tenants that waited the whole minute
  (scale_lib.fairness_per_minute), x_i = slot-seconds held;
* caps: running per tenant and in total from the watch every second, and exactly from the
  statuses' [startedAt, completedAt) intervals;
* API writes by component (audit log, within the burst window) per ParseJob, Events by
  component; apiserver_request_total writes too;
* CPU-s and peak RSS per component (psutil: operator, API, executor, kueue, apiserver, etcd,
  controller-manager, scheduler, kwok, Postgres, MinIO, this process), etcd's db file size;
* drain time: first upload sent to last job final; admissions per second.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "hack", ROOT / "tests" / "support", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import scale_lib as sl  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
PDFS = ("UP_MOD_XLS.pdf", "UP_TST_PDF.pdf", "UP_EXAM_SS.pdf")
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
API_NS = "scale"
OPERATOR_NS = "schedgen-system"
CONFIGMAP = "schedgen-operator"
BUCKET = "schedgen-scale"
KUEUE_VERSION = "v0.17.0"
KUEUE_NS = "kueue-system"
RUNNER_CPU = "250m"
MANAGED = ("app.kubernetes.io/managed-by", "schedgen-operator")


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ============================================================================ processes
class Meter(threading.Thread):
    """CPU seconds (user+system of the process, its live descendants and the children it
    reaped) and peak RSS (the process and its descendants) of named pids, every second."""

    def __init__(self):
        super().__init__(daemon=True, name="meter")
        self.pids: dict[str, int] = {}
        self.base: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.peak_rss: dict[str, int] = defaultdict(int)
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def _read(self, pid: int) -> tuple[float, int]:
        import psutil

        p = psutil.Process(pid)
        # this process started every other one: itself only (its own threads)
        procs = [p] if pid == os.getpid() else [p] + p.children(recursive=True)
        cpu, rss = 0.0, 0
        for q in procs:
            try:
                t = q.cpu_times()
                reaped = t.children_user + t.children_system if q is p and pid != os.getpid() else 0.0
                cpu += t.user + t.system + reaped
                rss += q.memory_info().rss
            except Exception:  # noqa: BLE001 - gone meanwhile
                pass
        return cpu, rss

    def add(self, name: str, pid: int) -> None:
        with self.lock:
            self.pids[name] = pid
            try:
                self.base[name] = self._read(pid)[0]
            except Exception:  # noqa: BLE001
                self.base[name] = 0.0

    def remove(self, name: str) -> None:
        self.sample_one(name)
        with self.lock:
            self.pids.pop(name, None)

    def sample_one(self, name: str) -> None:
        pid = self.pids.get(name)
        if pid is None:
            return
        try:
            cpu, rss = self._read(pid)
        except Exception:  # noqa: BLE001
            return
        with self.lock:
            self.last[name] = cpu
            self.peak_rss[name] = max(self.peak_rss[name], rss)

    def run(self) -> None:
        self.loads: list[float] = []
        while not self.stopping.wait(1.0):
            for name in list(self.pids):
                self.sample_one(name)
            self.loads.append(os.getloadavg()[0])

    def load_summary(self, since: int = 0) -> dict:
        xs = getattr(self, "loads", [])[since:]
        return {"min": round(min(xs), 1), "mean": round(sum(xs) / len(xs), 1), "max": round(max(xs), 1)} if xs else {}

    def mark(self) -> dict[str, float]:
        for name in list(self.pids):
            self.sample_one(name)
        with self.lock:
            return dict(self.last)

    def reset_peaks(self, names) -> None:
        with self.lock:
            for n in names:
                self.peak_rss[n] = 0


def kubeconfig_for_token(cluster, path: Path, token: str, user: str) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server,
                                                    "certificate-authority": str(cluster.pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local"}, sort_keys=False))
    path.chmod(0o600)
    return path


def api_client_for(kubeconfig: Path, pool: int = 32):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


# ============================================================================ watches
class RawWatch(threading.Thread):
    """List + watch one resource as raw JSON (no models); calls on_event(type, obj, now)."""

    def __init__(self, name: str, list_call, on_event):
        super().__init__(daemon=True, name=name)
        self.list_call, self.on_event = list_call, on_event
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.restarts = 0

    def run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    cont = None
                    while True:
                        resp = self.list_call(limit=500, _preload_content=False, **({"_continue": cont} if cont else {}))
                        body = json.loads(resp.data)
                        resp.release_conn()
                        now = time.time()
                        for obj in body.get("items") or []:
                            self.on_event("ADDED", obj, now)
                        cont = (body.get("metadata") or {}).get("continue")
                        if not cont:
                            rv = body["metadata"]["resourceVersion"]
                            break
                    self.synced.set()
                resp = self.list_call(watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=60,
                                      _preload_content=False, _request_timeout=(10, 90))
                try:
                    for line in iter_resp_lines(resp):
                        if self.stopping.is_set():
                            break
                        if not line:
                            continue
                        ev = json.loads(line)
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                rv = None
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if ev.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.on_event(ev["type"], obj, time.time())
                finally:
                    resp.close()
                    resp.release_conn()
            except Exception as exc:  # noqa: BLE001 - a dropped stream: watch again from rv
                if getattr(exc, "status", None) == 410:
                    rv = None
                self.restarts += 1
                self.stopping.wait(0.5)


class Tracker:
    """What the watch saw of each job (ParseJob or Job), by name, plus running/waiting counts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs: dict[str, dict] = {}
        self.running_by_tenant: Counter = Counter()
        self.waiting = 0
        self.final = 0
        self.ignored: set[str] = set()  # the warm-up's: a later event of it (retention's delete) is no job

    def restart(self, ignore: str) -> dict | None:
        """Forget everything seen so far and ignore ``ignore`` from now on (the warm-up);
        its record. Counting it again would end the drain one job early."""
        with self.lock:
            self.ignored.add(ignore)
            rec = self.jobs.pop(ignore, None)
            self.final = self.waiting = 0
            self.running_by_tenant.clear()
            return rec

    def _state(self, rec: dict) -> str:
        if rec.get("seen_final") is not None:
            return "final"
        if rec.get("seen_running") is not None:
            return "running"
        return "waiting"

    def update(self, name: str, tenant: str, fields: dict, now: float) -> None:
        with self.lock:
            if name in self.ignored:
                return
            rec = self.jobs.get(name)
            if rec is None:
                rec = self.jobs[name] = {"tenant": tenant, "finals": set(), "first_seen": now}
                self.waiting += 1
            before = self._state(rec)
            running, final = fields.pop("_running", False), fields.pop("_final", False)
            rec.update({k: v for k, v in fields.items() if v is not None})
            if running and rec.get("seen_running") is None:
                rec["seen_running"] = now
            if final and rec.get("seen_final") is None:
                rec["seen_final"] = now
                if rec.get("seen_running") is None:
                    rec["seen_running"] = now
            after = self._state(rec)
            if before != after:
                if before == "waiting":
                    self.waiting -= 1
                elif before == "running":
                    self.running_by_tenant[tenant] -= 1
                if after == "waiting":
                    self.waiting += 1
                elif after == "running":
                    self.running_by_tenant[tenant] += 1
                else:
                    self.final += 1

    def snapshot(self) -> tuple[dict[str, int], int, int]:
        with self.lock:
            return {t: n for t, n in self.running_by_tenant.items() if n}, self.waiting, self.final


def parsejob_event(tracker: Tracker):
    from schedgen.parsejob import FINAL_PHASES, RUNNING

    def on(kind: str, obj: dict, now: float) -> None:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        phase = status.get("phase")
        fields = {"uid": meta.get("uid"), "priority": spec.get("priority", "normal"), "phase": phase,
                  "created_at": ts((meta.get("annotations") or {}).get("schedgen.io/created-at")),
                  "started": ts(status.get("startedAt")), "done": ts(status.get("completedAt")),
                  "events": (status.get("result") or {}).get("events"), "batch": status.get("batchSize"),
                  "reason": (status.get("error") or {}).get("reason"),
                  "_running": phase == RUNNING or phase in FINAL_PHASES, "_final": phase in FINAL_PHASES}
        if kind == "DELETED":
            fields["deleted"] = now
        tenant = spec.get("tenant") or meta.get("namespace")
        tracker.update(meta["name"], tenant, fields, now)
        if phase in FINAL_PHASES:
            with tracker.lock:
                tracker.jobs[meta["name"]]["finals"].add((status.get("transitionSeq"), phase))
    return on


def job_event(tracker: Tracker):
    def on(kind: str, obj: dict, now: float) -> None:
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        final = "Complete" in conds or "Failed" in conds
        labels = meta.get("labels") or {}
        fields = {"uid": meta.get("uid"), "priority": labels.get("kueue.x-k8s.io/priority-class", "normal"),
                  "phase": "Succeeded" if "Complete" in conds else "Failed" if "Failed" in conds else
                  ("Running" if spec.get("suspend") is False else "Queued"),
                  "_running": spec.get("suspend") is False or final, "_final": final}
        if kind == "DELETED":
            fields["deleted"] = now
        tracker.update(meta["name"], meta["namespace"], fields, now)
    return on


def workload_event(tracker: Tracker):
    """Kueue's Workloads, by their Job's name: running from QuotaReserved+Admitted, final at Finished."""
    def on(kind: str, obj: dict, now: float) -> None:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        owner = next((o.get("name") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"), None)
        if not owner:
            return
        conds = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        fields = {"uid": meta.get("uid"), "priority": (obj.get("spec") or {}).get("priorityClassName", "normal"),
                  "_running": "Admitted" in conds or "Finished" in conds, "_final": "Finished" in conds}
        tracker.update(owner, meta["namespace"], fields, now)
    return on


class CapSampler(threading.Thread):
    def __init__(self, tracker: Tracker, caps: dict, t0: float):
        super().__init__(daemon=True, name="caps")
        self.tracker, self.caps, self.t0 = tracker, caps, t0
        self.samples = sl.CapSamples()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            running, waiting, _ = self.tracker.snapshot()
            self.samples.add(time.time() - self.t0, running, waiting, self.caps["maxConcurrent"],
                             self.caps.get("maxPerTenant", 10**9))


# ============================================================================ the stack
class Stack:
    def __init__(self, args):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="schedgen-scale-"))
        os.chmod(self.base, 0o711)
        self.meter = Meter()
        self.children: list = []
        self.kueue_proc = None

    # --------------------------------------------------------------- start
    def start(self) -> "Stack":
        import boto3
        import yaml
        from kubernetes import client

        import devservices
        from localkube.cluster import AUDIT_WRITES_POLICY, ControlPlaneLimits, LocalCluster
        from localkube.kwok import Kwok

        a = self.args
        self.pg = devservices.PostgresServer(self.base / "pg")
        self.s3srv = devservices.S3Server(self.base / "s3")
        self.pg.start()
        self.s3srv.start()
        self.s3 = boto3.client("s3", endpoint_url=self.s3srv.endpoint_url, region_name="us-east-1",
                               aws_access_key_id=self.s3srv.access_key, aws_secret_access_key=self.s3srv.secret_key)
        self.s3.create_bucket(Bucket=BUCKET)
        self.s3srv.create_component_users(BUCKET)  # the operator and the API as their own S3 users
        policy = self.base / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_WRITES_POLICY, sort_keys=False))
        self.limits = ControlPlaneLimits()
        log("starting the control plane (raised limits, audit log of writes) ...")
        self.cluster = LocalCluster(state_dir=self.base / "kube", session=True, limits=self.limits,
                                    audit_policy=policy)
        self.cluster.start()
        for key in ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler"):
            self.meter.add(key, self.cluster.processes[key]["pid"])
        self.admin = self.cluster.api_client()
        self.core = client.CoreV1Api(self.admin)
        self.cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        self.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")
        for ns in (OPERATOR_NS, API_NS):
            self.core.create_namespace({"metadata": {"name": ns}})
        self.kubeconfigs = {who: self.identity(who) for who in ("schedgen-operator", "schedgen-api", "executor",
                                                                "harness", "kueue")}
        self.api = api_client_for(self.kubeconfigs["harness"], pool=a.concurrency + 8)
        self.kwok = Kwok(self.cluster, verbosity="WARN", parallelism=a.kwok_parallelism).start()
        self.meter.add("kwok", self.cluster.processes["kwok"]["pid"])
        log(f"adding {a.nodes} KWOK nodes (32 CPU, 256Gi, 110 pods) ...")
        self.kwok.add_fake_nodes(a.nodes, cpu="32", memory="256Gi", pods=110, wait=max(120.0, a.nodes * 0.5))
        self.start_executor()
        self.meter.add("postgres", self.pg.pid)
        self.meter.add("minio", self.s3srv.pid)
        self.meter.add("harness", os.getpid())
        self.meter.start()
        return self

    def identity(self, name: str) -> Path:
        """A ServiceAccount in schedgen-system bound to cluster-admin, and a kubeconfig with its token."""
        from kubernetes import client

        rbac = client.RbacAuthorizationV1Api(self.admin)
        self.core.create_namespaced_service_account(OPERATOR_NS, {"metadata": {"name": name}})
        rbac.create_cluster_role_binding({
            "metadata": {"name": f"scale:{name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NS}]})
        tok = self.core.create_namespaced_service_account_token(name, OPERATOR_NS, {
            "spec": {"expirationSeconds": 48 * 3600}}).status.token
        return kubeconfig_for_token(self.cluster, self.base / f"{name}.kubeconfig", tok, name)

    def start_executor(self) -> None:
        from child_process import ChildProcess

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "hack")])}
        self.executor_stats = self.base / "executor-stats.json"
        self.executor = ChildProcess([PYTHON, str(Path(__file__).resolve()), "_executor",
                                      str(self.kubeconfigs["executor"]), str(self.executor_stats),
                                      str(self.args.executor_workers), str(self.args.run_seconds)], env,
                                     self.base / "executor.log")
        self.executor.spawn()
        self.children.append(self.executor)
        self.meter.add("executor", self.executor.proc.pid)

    def executor_report(self) -> dict:
        os.kill(self.executor.proc.pid, signal.SIGUSR1)
        for _ in range(50):
            time.sleep(0.1)
            try:
                return json.loads(self.executor_stats.read_text())
            except (OSError, ValueError):
                continue
        return {}

    # --------------------------------------------------------------- measuring helpers
    def audit(self, since: float, until: float) -> dict:
        with open(self.cluster.audit_log, errors="replace") as f:
            return sl.audit_counts(sl.audit_events(f), since, until)

    def apiserver_writes(self) -> dict[str, float]:
        from spike_lib import write_requests

        code, body = self.cluster._get("/metrics", timeout=30)
        return write_requests(body.decode()) if code == 200 else {}

    def etcd_db_bytes(self) -> int:
        db = self.cluster.state_dir / "etcd" / "member" / "snap" / "db"
        return db.stat().st_size if db.exists() else 0

    def stop(self) -> None:
        self.meter.stopping.set()
        if self.kueue_proc is not None:
            self.kueue_proc.stop()
        for c in reversed(self.children):
            try:
                c.stop()
            except Exception:  # noqa: BLE001
                pass
        for name in ("cluster", "s3srv", "pg"):
            thing = getattr(self, name, None)
            if thing is not None:
                try:
                    thing.stop()
                except Exception as exc:  # noqa: BLE001
                    print(f"stopping {name}: {exc}", file=sys.stderr)
        if self.args.keep:
            log(f"state dir kept: {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


# ============================================================================ the workload
def plan_and_pdfs(args) -> tuple[list[sl.Upload], list[bytes]]:
    from spike_lib import distinct_pdf

    tenants = sl.tenant_names(args.tenants)
    plan = sl.workload(args.count, tenants, args.arrival_tau, args.arrival_window, args.tenant_skew, len(PDFS),
                       args.seed)
    sources = [(FIXTURES / n).read_bytes() for n in PDFS]
    tag = uuid.uuid4().hex[:8]
    return plan, [distinct_pdf(sources[u.pdf], f"{tag}-{u.index}") for u in plan]


def paced(plan: list[sl.Upload], concurrency: int, send, t0: float) -> dict:
    """Send each upload at t0 + its time, or as soon as one of `concurrency` senders is free.
    `send(u)` returns the job's name; returns {index: (name, sent, answered)}."""
    sem = threading.BoundedSemaphore(concurrency)
    out: dict[int, tuple] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def one(u: sl.Upload) -> None:
        try:
            sent = time.time()
            for attempt in range(5):
                try:
                    name = send(u)
                    break
                except Exception as exc:  # noqa: BLE001
                    if attempt == 4:
                        raise
                    time.sleep(0.5 * (attempt + 1))
                    last = exc  # noqa: F841
            with lock:
                out[u.index] = (name, sent, time.time())
        except Exception as exc:  # noqa: BLE001
            with lock:
                errors.append(f"upload {u.index}: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            sem.release()

    last_log = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for u in plan:
            delay = t0 + u.at - time.time()
            if delay > 0:
                time.sleep(delay)
            sem.acquire()
            pool.submit(one, u)
            if time.monotonic() - last_log > 15:
                last_log = time.monotonic()
                log(f"  sent {u.index + 1}/{len(plan)} (planned {u.at:.0f} s, now {time.time() - t0:.0f} s)")
    if errors:
        log(f"{len(errors)} uploads failed; first: {errors[0]}")
    return {"sent": out, "errors": errors}


def wait_drained(tracker: Tracker, count: int, deadline_at: float, alive, label: str) -> tuple[float, bool]:
    """Until every job is final (True) or the wall clock reaches ``deadline_at`` (False: the
    report then covers what had happened by then)."""
    last = 0.0
    while True:
        running, waiting, final = tracker.snapshot()
        if final >= count:
            return time.time(), True
        if time.time() > deadline_at:
            log(f"{label}: deadline: {final}/{count} final, {sum(running.values())} running, {waiting} waiting")
            return time.time(), False
        problem = alive()
        if problem:
            raise RuntimeError(f"{label}: {problem}")
        if time.monotonic() - last > 15:
            last = time.monotonic()
            log(f"  {label}: {final}/{count} final, {sum(running.values())} running, {waiting} waiting")
        time.sleep(0.5)


def caps_for(args) -> dict:
    mc = args.max_concurrent or args.nodes * args.slots_per_node
    mpt = args.max_per_tenant or max(1, math.ceil(4 * mc / args.tenants))
    return {"maxConcurrent": mc, "maxPerTenant": mpt}


def lives_from(tracker: Tracker, created_from: dict[str, float], use: str) -> list[sl.Life]:
    """use='status': the statuses' startedAt/completedAt (schedgen, operator clock);
    'watch': first seen running/final by the harness' watch (both systems alike)."""
    out = []
    with tracker.lock:
        for name, r in tracker.jobs.items():
            created = r.get("created_at") or created_from.get(name) or r["first_seen"]
            if use == "status":
                started, done = r.get("started"), r.get("done")
            else:
                started, done = r.get("seen_running"), r.get("seen_final")
            out.append(sl.Life(name, r["tenant"], r.get("priority", "normal"), created, started, done))
    return out


def timeline(lives: list[sl.Life], t0: float, step: float = 5.0) -> dict:
    end = max((j.done or j.created) for j in lives)
    n = int((end - t0) / step) + 2
    t = [i * step for i in range(n)]
    created = sorted(j.created - t0 for j in lives)
    started = sorted(j.started - t0 for j in lives if j.started)
    done = sorted(j.done - t0 for j in lives if j.done)
    import bisect

    c = [bisect.bisect_right(created, x) for x in t]
    s = [bisect.bisect_right(started, x) for x in t]
    d = [bisect.bisect_right(done, x) for x in t]
    return {"t": t, "waiting": [ci - si for ci, si in zip(c, s)], "running": [si - di for si, di in zip(s, d)],
            "completed": d, "arrived": c}


def derived(lives: list[sl.Life], t0: float, t_end: float, caps: dict) -> dict:
    """What is computed from the jobs' lives alone (also by --recompute, from raw-*.json)."""
    return {
        "admission_delay": sl.delay_summary(sl.admission_delays(lives, caps["maxConcurrent"])),
        # a slot the job may take: also below its tenant's cap (schedgen's maxPerTenant; Kueue's run has none)
        "admission_delay_own_slot": sl.delay_summary(sl.admission_delays(lives, caps["maxConcurrent"],
                                                                         caps.get("maxPerTenant"))),
        "fairness_within_priority": sl.fairness_summary(sl.fairness_within_priority(lives, t0, t_end)),
        "fairness": sl.fairness_summary(sl.fairness_per_minute(lives, t0, t_end)),
        "caps_exact": sl.cap_check(lives, caps["maxConcurrent"], caps.get("maxPerTenant", 10**9), t_end),
        "timeline": timeline(lives, t0),
    }


def common_report(stack: Stack, system: str, lives: list[sl.Life], t0: float, t_end: float, caps: dict,
                  cpu0: dict, cpu1: dict, audit: dict, writes0: dict, writes1: dict, sampler: CapSampler,
                  actor: str, n: int, etcd0: int) -> dict:
    from spike_lib import delta

    starts = sorted(j.started for j in lives if j.started)
    per_sec = Counter(int(s - t0) for s in starts)
    cpu = {k: round(cpu1.get(k, 0.0) - cpu0.get(k, 0.0), 1) for k in cpu1}
    loads = stack.meter.load_summary(int(getattr(stack, "load_mark", 0)))
    w = delta(writes1, writes0)
    return {
        "system": system, "jobs": n, "caps": caps, "machine_load_avg_1m": loads,
        "drain_s": round(t_end - t0, 1),
        "admissions_per_s": round(len(starts) / (starts[-1] - starts[0]), 2) if len(starts) > 1 else None,
        "admissions_per_s_peak": max(per_sec.values(), default=0),
        **derived(lives, t0, t_end, caps),
        "caps_sampled": sampler.samples.summary(),
        "audit": audit,
        "writes_per_job_by_component": sl.per_job(audit["writes_by_component"], n),
        "events_per_job_by_component": sl.per_job(audit["events_by_component"], n),
        f"{actor}_writes_per_job": round(audit["writes_by_component"].get(actor, 0) / n, 2),
        "apiserver_request_total_writes_per_job": round(sum(w.values()) / n, 2),
        "apiserver_request_total_writes_by_resource": {k: int(v) for k, v in sorted(w.items(), key=lambda kv: -kv[1])},
        "cpu_s": cpu,
        f"{actor}_cpu_s_per_job": round(cpu.get(actor, 0.0) / n, 4),
        "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in stack.meter.peak_rss.items()},
        "etcd_db_bytes": {"before": etcd0, "after": stack.etcd_db_bytes()},
        "cap_series": sampler.samples.series[::5],
    }


# ============================================================================ schedgen
def run_schedgen(stack: Stack, plan: list[sl.Upload], pdfs: list[bytes]) -> dict:
    import httpx
    import psycopg
    from kubernetes import client

    from api_testlib import ApiProcess, api_env
    from localkube.kwok import RUNNER_PLACEMENT_ENV
    from operator_e2e import OperatorProcess
    from schedgen import db
    from schedgen.api.backends import postgres as api_db
    from schedgen.parsejob import GROUP, PLURAL, VERSION

    a = stack.args
    caps = caps_for(a)
    tenants = sorted({u.tenant for u in plan})
    keys: dict[str, str] = {}
    with db.connect(stack.pg.dsn) as conn:
        db.migrate(conn)
        for t in tenants:
            keys[t] = api_db.add_key_sync(conn, t, "bench/scale", max_priority="high")
    runtime = {"maxConcurrent": caps["maxConcurrent"], "maxPerTenant": caps["maxPerTenant"],
               "admissionsPerSecond": a.rate, "admissionBurst": int(a.rate), "guardMaxUnschedulable": -1,
               **({"batchSize": a.batch_size} if a.batch_size else {})}
    stack.core.create_namespaced_config_map(OPERATOR_NS, {"metadata": {"name": CONFIGMAP},
                                                          "data": {k: str(v) for k, v in runtime.items()}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
    env.update({"KUBECONFIG": str(stack.kubeconfigs["schedgen-operator"]), "SCHEDGEN_OPERATOR_NAMESPACE": OPERATOR_NS,
                "SCHEDGEN_OPERATOR_CONFIGMAP": CONFIGMAP, "SCHEDGEN_DATABASE_URL": stack.pg.dsn,
                "SCHEDGEN_S3_ENDPOINT_URL": stack.s3srv.endpoint_url, **stack.s3srv.credentials_for("operator"),
                "SCHEDGEN_RUNNER_IMAGE": "localhost/schedgen-runner:kwok", "SCHEDGEN_IMAGE_PULL_POLICY": "Never",
                "SCHEDGEN_DEFAULT_BUCKET": BUCKET, "SCHEDGEN_API_NAMESPACES": API_NS,
                "SCHEDGEN_METRICS_PORT": str(free_port()), "SCHEDGEN_LIVENESS_PORT": str(free_port()),
                "SCHEDGEN_STANDALONE": "1", "SCHEDGEN_LOG_FORMAT": "json", "SCHEDGEN_CPU_REQUEST": RUNNER_CPU,
                "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "src"), **RUNNER_PLACEMENT_ENV})
    operator = OperatorProcess(stack.cluster, env, stack.base / "operator.log").start()
    stack.children.append(operator)
    stack.meter.add("schedgen-operator", operator.proc.pid)
    api_proc = ApiProcess(api_env(
        database_url=stack.pg.dsn, s3_endpoint_url=stack.s3srv.endpoint_url, s3_credentials=stack.s3srv.credentials_for("api", API_NS),
        bucket=BUCKET, namespace=API_NS, kubeconfig=str(stack.kubeconfigs["schedgen-api"]),
        SCHEDGEN_API_UPLOADS_PER_MINUTE=10**7, SCHEDGEN_API_READS_PER_MINUTE=10**7,
        SCHEDGEN_API_MAX_UPLOAD_BYTES=1024 * 1024, PYTHONPATH=str(ROOT / "src")), stack.base / "api.log").start()
    stack.children.append(api_proc)
    stack.meter.add("schedgen-api", api_proc.proc.pid)

    tracker = Tracker()
    custom = client.CustomObjectsApi(stack.api)
    watch = RawWatch("parsejobs", lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, API_NS, PLURAL,
                                                                                     **kw), parsejob_event(tracker))
    watch.start()
    watch.synced.wait(30)

    # warm-up: one upload end to end (imports, connections), not measured
    local = threading.local()

    def http() -> httpx.Client:
        if getattr(local, "c", None) is None:
            local.c = httpx.Client(base_url=api_proc.url, timeout=120)
        return local.c

    def send(u: sl.Upload, data: bytes | None = None) -> str:
        r = http().post("/api/v1/uploads", headers={"X-API-Key": keys[u.tenant]},
                        data={"priority": u.priority},
                        files={"file": (f"scale-{u.index}.pdf", data if data is not None else pdfs[u.index],
                                        "application/pdf")})
        if r.status_code != 202:
            raise RuntimeError(f"HTTP {r.status_code} {r.text[:200]}")
        return r.json()["id"]

    warm = send(plan[0], pdfs[0] + b"% warm-up\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and tracker.jobs.get(warm, {}).get("seen_final") is None:
        time.sleep(0.2)
    time.sleep(2)
    warm_uid = (tracker.restart(ignore=warm) or {}).get("uid")

    stack.meter.reset_peaks(["schedgen-operator", "schedgen-api"])
    cpu0, writes0, etcd0 = stack.meter.mark(), stack.apiserver_writes(), stack.etcd_db_bytes()
    stack.load_mark = len(getattr(stack.meter, "loads", []))
    t0 = time.time()
    sampler = CapSampler(tracker, caps, t0)
    sampler.start()
    log(f"schedgen: {len(plan)} uploads from {len(tenants)} tenants, caps {caps}, rate {a.rate}/s ...")
    sent = paced(plan, a.concurrency, send, t0)
    t_sent = time.time()
    log(f"schedgen: uploads sent in {t_sent - t0:.0f} s ({len(sent['errors'])} failed)")

    def alive():
        return None if operator.running else f"the operator exited:\n{operator.log_tail(30)}"

    t_end, drained = wait_drained(tracker, len(sent["sent"]), t0 + a.deadline, alive, "schedgen")
    time.sleep(5)  # trailing writes: events, rows
    sampler.stopping.set()
    cpu1, writes1 = stack.meter.mark(), stack.apiserver_writes()
    time.sleep(3)  # the audit log's batches
    dump_raw(stack, "schedgen", tracker, sent, {"t0": t0, "t_end": t_end, "drained": drained, "caps": caps, "cpu0": cpu0, "cpu1": cpu1,
                                                "cap_samples": sampler.samples.summary()})
    audit = stack.audit(t0, t_end + 5)

    # Postgres: rows, events, final transitions; wait a little for the records daemon
    names = {v[0] for v in sent["sent"].values()}
    with tracker.lock:
        seen = {n: dict(r) for n, r in tracker.jobs.items() if n in names}
    uids = {r["uid"]: n for n, r in seen.items() if r.get("uid")}
    finals = ("Succeeded", "Failed", "Cancelled")
    for _ in range(60):
        with psycopg.connect(stack.pg.dsn, autocommit=True) as conn:
            rows = {str(u): (p, c) for u, p, c in conn.execute(
                "SELECT uid, phase, event_count FROM parse_jobs WHERE namespace = %s", (API_NS,))}
            ev = {str(u): c for u, c in conn.execute("SELECT job_uid, count(*) FROM events GROUP BY job_uid")}
            ft = {str(u): c for u, c in conn.execute(
                "SELECT job_uid, count(*) FROM parse_job_transitions WHERE phase = ANY(%s) GROUP BY job_uid",
                (list(finals),))}
        if all(rows.get(u, ("",))[0] == seen[n].get("phase") for u, n in uids.items()
               if seen[n].get("phase") in finals):
            break
        time.sleep(1)
    statuses = {r["uid"]: sl.Observed(r["uid"], r.get("phase"), r.get("events"), len(r["finals"]))
                for r in seen.values() if r.get("uid")}
    rows.pop(warm_uid, None)  # the warm-up's row aside
    consistency = sl.consistency(statuses, rows, ev, ft)
    consistency["uploads_failed"] = len(sent["errors"])
    consistency["phases"] = dict(Counter(r.get("phase") for r in seen.values()))
    consistency["reasons"] = dict(Counter(r.get("reason") for r in seen.values() if r.get("reason")))
    # Kubernetes Events per ParseJob (Events live 4 h here)
    events_k8s: Counter = Counter()
    cont = None
    while True:
        resp = stack.core.list_namespaced_event(API_NS, field_selector="involvedObject.kind=ParseJob", limit=1000,
                                                _preload_content=False, **({"_continue": cont} if cont else {}))
        body = json.loads(resp.data)
        for e in body["items"]:
            events_k8s[(e.get("involvedObject") or {}).get("uid")] += max(1, int(e.get("count") or 1))
        cont = body["metadata"].get("continue")
        if not cont:
            break
    per_job_events = Counter(events_k8s.get(u, 0) for u in uids)
    consistency["k8s_events_per_parsejob"] = {str(k): v for k, v in sorted(per_job_events.items())}
    created_from = {v[0]: v[2] for v in sent["sent"].values()}
    lives_status = [j for j in lives_from(tracker, created_from, "status") if j.name in names]
    lives_watch = [j for j in lives_from(tracker, created_from, "watch") if j.name in names]
    report = common_report(stack, "schedgen", lives_status, t0, t_end, caps, cpu0, cpu1, audit, writes0, writes1,
                           sampler, "schedgen-operator", len(names), etcd0)
    report["admission_delay_watch"] = sl.delay_summary(sl.admission_delays(lives_watch, caps["maxConcurrent"]))
    report["drained"] = drained
    report["final_at_end"] = sum(1 for r in seen.values() if r.get("phase") in finals)
    report["consistency"] = consistency
    report["uploads"] = {"sent": len(sent["sent"]), "failed": len(sent["errors"]),
                         "send_s": round(t_sent - t0, 1),
                         "answered_by_minute": minute_counts([v[2] - t0 for v in sent["sent"].values()])}
    report["batches"] = dict(Counter(r.get("batch") or 1 for r in seen.values()))
    try:
        m = operator.metrics()

        def by(name: str, label: str) -> dict:
            return {dict(lab)[label]: v for (n_, lab), v in m.items() if n_ == name}

        report["operator_metrics"] = {
            "admission_latency_le": by("schedgen_admission_latency_seconds_bucket", "le"),
            "api_requests": {f"{dict(lab).get('client')}:{dict(lab).get('method')}": v for (n_, lab), v in m.items()
                             if n_ == "schedgen_operator_api_requests_total"},
            "tick_seconds_le": by("schedgen_scheduler_tick_seconds_bucket", "le"),
            "tick_phase_seconds_sum": by("schedgen_scheduler_tick_phase_seconds_sum", "phase"),
            "tick_seconds_sum": m.get(("schedgen_scheduler_tick_seconds_sum", ()), None),
            "ticks": m.get(("schedgen_scheduler_tick_seconds_count", ()), None),
            "batches_started": m.get(("schedgen_batches_started_total", ()), None),
            "retention_deleted": sum(v for (n_, _), v in m.items() if n_ == "schedgen_retention_deleted_total")}
    except OSError:
        pass
    report["executor"] = stack.executor_report()
    watch.stopping.set()
    # schedgen's processes leave before Kueue's run (their watches would cost CPU there)
    for proc, name in ((api_proc, "schedgen-api"), (operator, "schedgen-operator")):
        stack.meter.remove(name)
        proc.stop()
    if not drained:  # runner Jobs left behind would load the next system's run
        client.BatchV1Api(stack.api).delete_collection_namespaced_job(API_NS, propagation_policy="Background")
        time.sleep(10)
    return report


def dump_raw(stack: Stack, system: str, tracker: Tracker, sent: dict, extra: dict) -> None:
    """What was observed, before anything is computed from it (recompute offline if need be)."""
    with tracker.lock:
        jobs = {n: {k: (sorted(map(list, v)) if isinstance(v, set) else v) for k, v in r.items()}
                for n, r in tracker.jobs.items()}
    path = stack.args.out / f"raw-{system}.json"
    path.write_text(json.dumps({"jobs": jobs, "sent": sent["sent"], "errors": sent["errors"][:50], **extra},
                               default=str))


def minute_counts(offsets: list[float]) -> list[int]:
    if not offsets:
        return []
    out = [0] * (int(max(offsets) // 60) + 1)
    for o in offsets:
        out[int(o // 60)] += 1
    return out


def free_port() -> int:
    from devservices import free_port as fp

    return fp()


# ============================================================================ Kueue
def build_kueue() -> Path:
    """``go install sigs.k8s.io/kueue/cmd/kueue@v0.17.0`` once (about 3 min); its CRDs are the
    module's own (GOMODCACHE, :func:`kueue_crds`)."""
    from localkube.gotool import GoTool

    return GoTool("kueue", "sigs.k8s.io/kueue/cmd/kueue", KUEUE_VERSION, "kueue", toolchain=None,
                  minutes=3).build(log=log)


def kueue_crds() -> Path:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    modcache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    return Path(modcache) / f"sigs.k8s.io/kueue@{KUEUE_VERSION}" / "config" / "components" / "crd" / "bases"


def self_signed(dirpath: Path) -> None:
    """tls.crt/tls.key for Kueue's webhook and metrics servers (never called: no webhook is
    registered; the binary wants the files)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kueue",
                    "-keyout", str(dirpath / "tls.key"), "-out", str(dirpath / "tls.crt")],
                   check=True, capture_output=True)


def start_kueue(stack: Stack, caps: dict, tenants: list[str]):
    import yaml
    from kubernetes import client

    from child_process import ChildProcess
    from localkube.testing import wait_for

    binary = build_kueue()
    crds = kueue_crds()
    stack.cluster.kubectl("apply", "--server-side", "-f", str(crds), timeout=120)
    stack.cluster.kubectl("wait", "--for=condition=Established", "--timeout=300s", "crd", "--all", timeout=330)  # slow under load
    stack.core.create_namespace({"metadata": {"name": KUEUE_NS}})
    certs = stack.base / "kueue-certs"
    self_signed(certs)
    metrics_certs = Path("/etc/kueue/metrics/certs")  # where cmd/kueue reads them without internal certs
    if not (metrics_certs / "tls.crt").exists():
        self_signed(metrics_certs)
    health, webhook = free_port(), free_port()
    cfg = stack.base / "kueue-config.yaml"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration", "namespace": KUEUE_NS,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook, "host": "127.0.0.1", "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "clientConnection": {"qps": stack.args.kueue_qps, "burst": stack.args.kueue_qps * 2},
        "integrations": {"frameworks": ["batch/job"]},
        "fairSharing": {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]},
        **({"admissionFairSharing": {"usageHalfLifeTime": "5m", "usageSamplingInterval": "5s"}}
           if stack.args.kueue_layout == "one-queue" else {}),
        "featureGates": {"VisibilityOnDemand": False},
    }, sort_keys=False))
    env = {**os.environ, "KUBECONFIG": str(stack.kubeconfigs["kueue"])}
    proc = ChildProcess([str(binary), f"--config={cfg}", "--zap-log-level=error"], env, stack.base / "kueue.log")
    proc.spawn()
    stack.kueue_proc = proc

    def ready():
        import urllib.request

        if not proc.running:
            raise RuntimeError(f"kueue exited:\n{proc.log_tail(40)}")
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1) as r:
            return r.status == 200

    wait_for(ready, 120, what="kueue /readyz")
    stack.meter.add("kueue", proc.proc.pid)
    co = client.CustomObjectsApi(stack.admin)
    g, v = "kueue.x-k8s.io", "v1beta2"
    co.create_cluster_custom_object(g, v, "resourceflavors", {"apiVersion": f"{g}/{v}", "kind": "ResourceFlavor",
                                                              "metadata": {"name": "default"}})
    def quota(cpu: str, memory: str) -> list[dict]:
        return [{"coveredResources": ["cpu", "memory"], "flavors": [{"name": "default", "resources": [
            {"name": "cpu", "nominalQuota": cpu}, {"name": "memory", "nominalQuota": memory}]}]}]

    cap = quota(f"{caps['maxConcurrent'] * 250}m", f"{caps['maxConcurrent'] * 256}Mi")
    if stack.args.kueue_layout == "one-queue":
        co.create_cluster_custom_object(g, v, "clusterqueues", {
            "apiVersion": f"{g}/{v}", "kind": "ClusterQueue", "metadata": {"name": "runners"},
            "spec": {"namespaceSelector": {}, "queueingStrategy": "BestEffortFIFO",
                     "admissionScope": {"admissionMode": "UsageBasedAdmissionFairSharing"},
                     "resourceGroups": cap}})
    else:  # the cap in a Cohort; a ClusterQueue per tenant with nothing of its own borrows from it
        co.create_cluster_custom_object(g, v, "cohorts", {
            "apiVersion": f"{g}/{v}", "kind": "Cohort", "metadata": {"name": "runners"}, "spec": {"resourceGroups": cap}})
        for t in tenants:
            co.create_cluster_custom_object(g, v, "clusterqueues", {
                "apiVersion": f"{g}/{v}", "kind": "ClusterQueue", "metadata": {"name": kueue_queue(stack, t)},
                "spec": {"cohortName": "runners", "queueingStrategy": "BestEffortFIFO",
                         "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"kq-{t}"}},
                         "resourceGroups": quota("0", "0")}})
    for name, value in (("high", 1000), ("normal", 500), ("low", 100)):
        co.create_cluster_custom_object(g, v, "workloadpriorityclasses", {
            "apiVersion": f"{g}/{v}", "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value})
    return proc


def kueue_queue(stack: Stack, tenant: str) -> str:
    """The ClusterQueue a tenant's LocalQueue points at (--kueue-layout)."""
    return "runners" if stack.args.kueue_layout == "one-queue" else f"runners-{tenant}"


def kueue_job(ns: str, name: str, priority: str) -> dict:
    """A runner-shaped Job (the operator's labels, a run-file Secret of its name, placement on
    the fake nodes, 250m), suspended, in the tenant's LocalQueue."""
    from localkube.kwok import FAKE_KEY, FAKE_TOLERATION, FAKE_VALUE
    from schedgen.parsejob import EXIT_BAD_INPUT, RUNNER_CONTAINER

    labels = {MANAGED[0]: MANAGED[1], "kueue.x-k8s.io/queue-name": "runners",
              "kueue.x-k8s.io/priority-class": priority, "schedgen.io/scale": "kueue"}
    container = {"name": RUNNER_CONTAINER, "image": "localhost/schedgen-runner:kwok", "imagePullPolicy": "Never",
                 "env": [{"name": "SCHEDGEN_RUN_FILE", "value": "/run/schedgen/run.json"},
                         {"name": "SCHEDGEN_MAX_BYTES", "value": "10485760"},
                         {"name": "SCHEDGEN_MAX_PAGES", "value": "100"}],
                 "volumeMounts": [{"name": "run", "mountPath": "/run/schedgen", "readOnly": True}],
                 "resources": {"requests": {"cpu": RUNNER_CPU, "memory": "256Mi"},
                               "limits": {"cpu": "1", "memory": "512Mi"}}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"suspend": True, "backoffLimit": 0, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 300,
                     "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                         "containerName": RUNNER_CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}}]},
                     "template": {"metadata": {"labels": {MANAGED[0]: MANAGED[1]}},
                                  "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                                           "containers": [container], "nodeSelector": {FAKE_KEY: FAKE_VALUE},
                                           "tolerations": [FAKE_TOLERATION],
                                           "volumes": [{"name": "run", "secret": {"secretName": name}}]}}}}


def run_kueue(stack: Stack, plan: list[sl.Upload], pdfs: list[bytes]) -> dict:
    import boto3
    from botocore.config import Config
    from kubernetes import client

    from schedgen.parsejob import result_key

    a = stack.args
    caps = caps_for(a)
    caps = {"maxConcurrent": caps["maxConcurrent"]}  # Kueue: the ClusterQueue's quota; no per-tenant cap
    tenants = sorted({u.tenant for u in plan})
    co = client.CustomObjectsApi(stack.admin)
    start_kueue(stack, caps, tenants)
    for t in tenants:
        stack.core.create_namespace({"metadata": {"name": f"kq-{t}"}})
        co.create_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", f"kq-{t}", "localqueues", {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue", "metadata": {"name": "runners"},
            "spec": {"clusterQueue": kueue_queue(stack, t)}})
    log(f"kueue: uploading {len(pdfs)} PDFs to MinIO and presigning their URLs ...")
    signer = boto3.client("s3", endpoint_url=stack.s3srv.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=stack.s3srv.access_key, aws_secret_access_key=stack.s3srv.secret_key,
                          config=Config(signature_version="s3v4"))

    def put(u: sl.Upload) -> None:
        stack.s3.put_object(Bucket=BUCKET, Key=f"kueue/{u.index}.pdf", Body=pdfs[u.index])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, plan))
    runs = {}
    for u in plan:
        ns, name, uid = f"kq-{u.tenant}", f"kq-{u.index:05d}", str(uuid.uuid4())
        runs[u.index] = json.dumps([{
            "SCHEDGEN_JOB_NAMESPACE": ns, "SCHEDGEN_JOB_NAME": name, "SCHEDGEN_JOB_UID": uid, "SCHEDGEN_TENANT": u.tenant,
            "SCHEDGEN_SOURCE_URL": signer.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": f"kueue/{u.index}.pdf"}, ExpiresIn=6 * 3600),
            "SCHEDGEN_RESULT_URL": signer.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": result_key(ns, uid), "ContentType": "application/json"},
                ExpiresIn=6 * 3600),
            "SCHEDGEN_SCHEDULE_TYPE": "auto", "SCHEDGEN_PARSE_TIMEOUT_SECONDS": "60"}])
    core, batch = client.CoreV1Api(stack.api), client.BatchV1Api(stack.api)
    tracker = Tracker()
    watch = RawWatch("jobs", lambda **kw: batch.list_job_for_all_namespaces(label_selector="schedgen.io/scale=kueue",
                                                                              **kw), job_event(tracker))
    watch.start()
    watch.synced.wait(30)
    wl_tracker = Tracker()
    wl_watch = RawWatch("workloads", lambda **kw: co.list_cluster_custom_object("kueue.x-k8s.io", "v1beta2",
                                                                                "workloads", **kw),
                        workload_event(wl_tracker))
    wl_watch.start()
    wl_watch.synced.wait(30)

    def send(u: sl.Upload) -> str:
        ns, name = f"kq-{u.tenant}", f"kq-{u.index:05d}"
        try:
            core.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": {"run.json": runs[u.index]}},
                                          _preload_content=False).data
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        try:
            batch.create_namespaced_job(ns, kueue_job(ns, name, u.priority), _preload_content=False).data
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        return name

    cpu0, writes0, etcd0 = stack.meter.mark(), stack.apiserver_writes(), stack.etcd_db_bytes()
    stack.load_mark = len(getattr(stack.meter, "loads", []))
    t0 = time.time()
    sampler = CapSampler(tracker, caps, t0)
    sampler.start()
    log(f"kueue: {len(plan)} suspended Jobs from {len(tenants)} tenant namespaces, quota "
        f"{caps['maxConcurrent']} x {RUNNER_CPU} ...")
    sent = paced(plan, a.concurrency, send, t0)
    t_sent = time.time()
    log(f"kueue: Jobs created in {t_sent - t0:.0f} s ({len(sent['errors'])} failed)")

    def alive():
        return None if stack.kueue_proc.running else f"kueue exited:\n{stack.kueue_proc.log_tail(30)}"

    t_end, drained = wait_drained(tracker, len(sent["sent"]), t0 + a.deadline, alive, "kueue")
    time.sleep(5)
    sampler.stopping.set()
    cpu1, writes1 = stack.meter.mark(), stack.apiserver_writes()
    time.sleep(3)
    dump_raw(stack, "kueue", tracker, sent, {"t0": t0, "t_end": t_end, "drained": drained, "caps": caps, "cpu0": cpu0, "cpu1": cpu1,
                                             "cap_samples": sampler.samples.summary()})
    audit = stack.audit(t0, t_end + 5)
    created_from = {v[0]: v[2] for v in sent["sent"].values()}
    names = set(created_from)
    lives = [j for j in lives_from(tracker, created_from, "watch") if j.name in names]
    report = common_report(stack, "kueue", lives, t0, t_end, caps, cpu0, cpu1, audit, writes0, writes1, sampler,
                           "kueue", len(names), etcd0)
    # Kueue's own view: quota released (Workload Finished) -> next Workload Admitted
    wl_lives = [j for j in lives_from(wl_tracker, created_from, "watch") if j.name in names]
    prio = {j.name: j.priority for j in lives}
    for j in wl_lives:
        j.priority = prio.get(j.name, j.priority)
    report["admission_delay_workloads"] = sl.delay_summary(sl.admission_delays(wl_lives, caps["maxConcurrent"]))
    report["workloads_seen"] = len(wl_lives)
    report["kueue_layout"] = a.kueue_layout
    wl_watch.stopping.set()
    with tracker.lock:
        phases = Counter(r.get("phase") for n, r in tracker.jobs.items() if n in names)
    report["drained"] = drained
    report["final_at_end"] = sum(v for k, v in phases.items() if k in ("Succeeded", "Failed"))
    report["consistency"] = {"jobs": len(names), "phases": dict(phases),
                             "not_finished": sum(v for k, v in phases.items() if k not in ("Succeeded", "Failed")),
                             "uploads_failed": len(sent["errors"])}
    report["uploads"] = {"sent": len(sent["sent"]), "failed": len(sent["errors"]), "send_s": round(t_sent - t0, 1)}
    report["executor"] = stack.executor_report()
    watch.stopping.set()
    stack.meter.remove("kueue")
    stack.kueue_proc.stop()
    stack.kueue_proc = None
    return report


# ============================================================================ the report
def versions(stack: Stack | None) -> dict:
    out = {"python": platform.python_version()}
    try:
        out["schedgen_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    if stack is not None:
        for b in ("kube-apiserver", "etcd"):
            try:
                out[b] = subprocess.run([stack.cluster.bin(b), "--version"], capture_output=True, text=True,
                                        timeout=10).stdout.strip().splitlines()[0]
            except Exception:  # noqa: BLE001
                pass
    out["kwok"] = "v0.8.0"
    out["kueue"] = KUEUE_VERSION
    return out


def machine() -> dict:
    import psutil

    return {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "load_avg_at_start": os.getloadavg()}


def summary_rows(r: dict) -> list[tuple[str, str]]:
    actor = "schedgen-operator" if r["system"] == "schedgen" else "kueue"
    d = r["admission_delay"]
    f = r["fairness"]
    c = r.get("consistency", {})
    rows = [("jobs", str(r["jobs"])),
            ("lost / duplicated", f"{c.get('lost', c.get('not_finished', '-'))} / {c.get('duplicated', '-')}"),
            ("drain time", f"{r['drain_s']:.0f} s"),
            ("admissions/s (mean, peak)", f"{r['admissions_per_s']} / {r['admissions_per_s_peak']}")]
    own = r.get("admission_delay_own_slot") or {}
    for p in ("high", "normal", "low"):
        if p in d:
            rows.append((f"admission delay p50/p99 {p}", f"{d[p]['p50_s']:.3f} / {d[p]['p99_s']:.3f} s"))
        if p in own and "maxPerTenant" in r["caps"]:
            rows.append((f"  ... after a slot its tenant may take, {p}",
                         f"{own[p]['p50_s']:.3f} / {own[p]['p99_s']:.3f} s"))
    fp = r.get("fairness_within_priority") or {}
    rows += [("Jain per minute within a priority (min / mean; minutes)",
              f"{fp.get('min')} / {fp.get('mean')} ({fp.get('minutes_with_index')})"),
             ("Jain per minute, all waiting tenants (min / mean)", f"{f['min']} / {f['mean']}"),
             ("caps: max running (cap)", f"{r['caps_exact']['max_running']} ({r['caps']['maxConcurrent']})"),
             (f"{actor} writes per job", f"{r[actor + '_writes_per_job']}"),
             ("all writes per job (audit)", f"{round(sum(r['audit']['writes_by_component'].values()) / r['jobs'], 2)}"),
             (f"{actor} CPU-s per job", f"{r[actor + '_cpu_s_per_job']}"),
             (f"{actor} peak RSS", f"{r['peak_rss_mib'].get(actor)} MiB"),
             ("apiserver / etcd CPU-s", f"{r['cpu_s'].get('kube-apiserver')} / {r['cpu_s'].get('etcd')}")]
    return rows


def plot(path: Path, report: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = report["systems"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    ax = axes[0][0]
    colors = {"schedgen": "tab:blue", "kueue": "tab:red"}
    for name, r in systems.items():
        tl = r["timeline"]
        ax.plot(tl["t"], tl["waiting"], color=colors[name], ls="--", label=f"{name} waiting")
        ax.plot(tl["t"], tl["completed"], color=colors[name], label=f"{name} completed")
    ax.set_xlabel("s since the first upload")
    ax.set_ylabel("jobs")
    ax.set_title("backlog and completions")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[0][1]
    for name, r in systems.items():
        tl = r["timeline"]
        ax.plot(tl["t"], tl["running"], color=colors[name], label=f"{name} running")
        ax.axhline(r["caps"]["maxConcurrent"], color="grey", ls=":", lw=1)
    ax.set_xlabel("s since the first upload")
    ax.set_title("running (cap dotted)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1][0]
    for name, r in systems.items():
        ms = [m for m in r["fairness"]["minutes"] if m["jain"] is not None]
        ax.plot([m["minute"] for m in ms], [m["jain"] for m in ms], marker="o", color=colors[name],
                label=f"{name}: all waiting tenants")
        mp = [m for m in (r.get("fairness_within_priority") or {}).get("minutes", []) if m["jain"] is not None]
        ax.plot([m["minute"] for m in mp], [m["jain"] for m in mp], marker="x", ls="--", color=colors[name],
                label=f"{name}: within a priority (lowest class)")
    ax.axhline(0.95, color="grey", ls=":", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("minute")
    ax.set_title("Jain's index per minute, tenants waiting the whole minute", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[1][1]
    comps = sorted({c for r in systems.values() for c in r["writes_per_job_by_component"]},
                   key=lambda c: -max(r["writes_per_job_by_component"].get(c, 0) for r in systems.values()))[:9]
    width = 0.8 / max(1, len(systems))
    for i, (name, r) in enumerate(systems.items()):
        ax.barh([k + i * width for k in range(len(comps))], [r["writes_per_job_by_component"].get(c, 0) for c in comps],
                height=width, color=colors[name], label=name)
    ax.set_yticks([k + width * (len(systems) - 1) / 2 for k in range(len(comps))])
    ax.set_yticklabels(comps, fontsize=7)
    ax.invert_yaxis()
    ax.set_title("API writes per job by component (audit log)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    cfg = report["config"]
    fig.suptitle(f"Semester start: {cfg['count']} jobs, {cfg['tenants']} tenants, {cfg['nodes']} KWOK nodes, "
                 f"maxConcurrent {report['caps']['maxConcurrent']} ({report['date']}, 2 cores)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ============================================================================ executor subprocess
def executor_main(kubeconfig: str, stats: str, workers: int, hold: float) -> int:
    """The executor as its own process (own identity, own CPU): SIGUSR1 writes its stats,
    SIGTERM stops it."""
    import logging

    from localkube.executor import Executor

    logging.basicConfig(level=logging.WARNING)
    ex = Executor(api_client_for(Path(kubeconfig), pool=workers + 4), workers=workers, cache_by_document=True,
                  hold_seconds=hold).start()
    stop = threading.Event()

    def dump(*_):
        s = ex.stats()
        tmp = Path(stats + ".tmp")
        tmp.write_text(json.dumps(s, default=str))
        tmp.replace(stats)

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    ex.stop()
    return 0


# ============================================================================ main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_executor"]:
        return executor_main(argv[1], argv[2], int(argv[3]), float(argv[4]))
    if argv[:1] == ["--recompute"]:
        return recompute(Path(argv[1]))
    if argv[:1] == ["--merge"]:
        return merge(Path(argv[1]), [Path(p) for p in argv[2:]])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=("schedgen", "kueue", "both"), default="both")
    ap.add_argument("--count", type=int, default=15000)
    ap.add_argument("--tenants", type=int, default=120)
    ap.add_argument("--nodes", type=int, default=250)
    ap.add_argument("--slots-per-node", type=int, default=1, help="maxConcurrent = nodes x this")
    ap.add_argument("--max-concurrent", type=int, default=None)
    ap.add_argument("--max-per-tenant", type=int, default=None, help="default ceil(4 x maxConcurrent / tenants)")
    ap.add_argument("--rate", type=float, default=200.0, help="the operator's admissionsPerSecond (and burst)")
    ap.add_argument("--batch-size", type=int, default=None, help="the operator's batchSize (default: its own)")
    ap.add_argument("--arrival-tau", type=float, default=120.0)
    ap.add_argument("--arrival-window", type=float, default=600.0)
    ap.add_argument("--tenant-skew", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16, help="uploads (Job creations) in flight")
    ap.add_argument("--executor-workers", type=int, default=16)
    ap.add_argument("--run-seconds", type=float, default=30.0,
                    help="a runner pod's life on a fake node: the executor ends it no sooner (a real runner "
                         "pod: container start, interpreter, parse, S3)")
    ap.add_argument("--kwok-parallelism", type=int, default=32)
    ap.add_argument("--kueue-qps", type=int, default=500, help="Kueue's client QPS (burst 2x)")
    ap.add_argument("--kueue-layout", choices=("cohort", "one-queue"), default="cohort",
                    help="cohort: a ClusterQueue per tenant borrowing the cap from one Cohort (Kueue's way); "
                         "one-queue: one ClusterQueue, admission fair sharing between LocalQueues")
    ap.add_argument("--deadline", type=float, default=7200.0,
                    help="per system: stop measuring this long after the first upload, drained or not "
                         "(the report says how far it got)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "scale" / "run")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))  # stop() runs
    plan, pdfs = plan_and_pdfs(args)
    report = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "config": {k: (str(v) if isinstance(v, Path) else v)
                                                                    for k, v in vars(args).items()},
              "caps": caps_for(args), "machine": machine(),
              "workload": {"arrivals_planned_by_minute": sl.arrivals_by_minute(plan),
                           "priorities": dict(Counter(u.priority for u in plan)),
                           "largest_tenants": Counter(u.tenant for u in plan).most_common(5),
                           "smallest_tenant": min(Counter(u.tenant for u in plan).values())},
              "systems": {}}
    stack = Stack(args)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        stack.start()
        report["control_plane"] = {"limits": vars(stack.limits) if hasattr(stack.limits, "__dict__") else
                                   stack.limits.__dict__, "audit_policy": "writes at Metadata level"}
        report["versions"] = versions(stack)
        for system, run in (("schedgen", run_schedgen), ("kueue", run_kueue)):
            if args.system in (system, "both"):
                try:
                    report["systems"][system] = run(stack, plan, pdfs)
                except Exception as exc:  # noqa: BLE001 - the other system still runs; the report says so
                    import traceback

                    traceback.print_exc()
                    report.setdefault("failed", {})[system] = f"{type(exc).__name__}: {exc}"[:2000]
                write(args.out, report)
    finally:
        stack.stop()
    write(args.out, report)
    if report["systems"]:
        print(table(report))
        print("plot:", plot(args.out / "scale.png", report))
    return 0 if ok(report) and not report.get("failed") else 1


def recompute(out: Path) -> int:
    """Re-derive the figures computed from the jobs' lives (delays, fairness, caps, timeline)
    from ``<out>/raw-<system>.json`` into ``<out>/report.json``; table and plot again."""
    report = json.loads((out / "report.json").read_text())
    for system, r in report["systems"].items():
        raw_path = out / f"raw-{system}.json"
        if not raw_path.exists():
            continue
        raw = json.loads(raw_path.read_text())
        created = {v[0]: v[2] for v in raw["sent"].values()}

        def lives(use: str) -> list[sl.Life]:
            out_ = []
            for name, j in raw["jobs"].items():
                if name not in created:
                    continue
                c = j.get("created_at") or created[name]
                s, d = (j.get("started"), j.get("done")) if use == "status" else (j.get("seen_running"),
                                                                                    j.get("seen_final"))
                out_.append(sl.Life(name, j["tenant"], j.get("priority", "normal"), c, s, d))
            return out_

        main_lives = lives("status" if system == "schedgen" else "watch")
        r.update(derived(main_lives, raw["t0"], raw["t_end"], r["caps"]))
        if system == "schedgen":
            r["admission_delay_watch"] = sl.delay_summary(sl.admission_delays(lives("watch"),
                                                                              r["caps"]["maxConcurrent"]))
    write(out, report)
    print(table(report))
    print("plot:", plot(out / "scale.png", report))
    return 0


def merge(out: Path, sources: list[Path]) -> int:
    """One report of several runs' (e.g. ``--system schedgen`` then ``--system kueue``, each on
    its own fresh cluster): their systems side by side, each run's date, load and config kept."""
    out.mkdir(parents=True, exist_ok=True)
    merged: dict = {}
    for src in sources:
        r = json.loads((src / "report.json").read_text())
        if not merged:
            merged = {k: v for k, v in r.items() if k not in ("systems", "failed")}
            merged["systems"], merged["runs"] = {}, []
        for name, sysr in r["systems"].items():
            merged["systems"][name] = sysr
            merged["runs"].append({"system": name, "date": r["date"], "config": r["config"],
                                   "machine": r["machine"], "from": str(src)})
            raw = src / f"raw-{name}.json"
            if raw.exists() and raw.resolve() != (out / raw.name).resolve():
                shutil.copy(raw, out / raw.name)
    write(out, merged)
    print(table(merged))
    print("plot:", plot(out / "scale.png", merged))
    return 0


def write(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))


def table(report: dict) -> str:
    """The figures of every system as a Markdown table (the README's)."""
    systems = report["systems"]
    rows: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for name, r in systems.items():
        for k, v in summary_rows(r):
            key = k.replace("schedgen-operator", "controller").replace("kueue", "controller")
            if key not in rows:
                order.append(key)
            rows.setdefault(key, {})[name] = v
    lines = ["| | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    lines += ["| " + k + " | " + " | ".join(rows[k].get(n, "-") for n in systems) + " |" for k in order]
    return "\n".join(lines)


def ok(report: dict) -> bool:
    s = report["systems"].get("schedgen")
    if not s:
        return True
    c = s["consistency"]
    return c["lost"] == 0 and c["duplicated"] == 0 and not s["caps_exact"]["exceeded"]


if __name__ == "__main__":
    sys.exit(main())
