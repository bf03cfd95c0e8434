"""The stack bench/spike.py measures, started and stopped by pid: Postgres and MinIO
(hack/devservices), the local control plane with one real node (containerd + kubelet,
hack/localkube) running the project's runner image, the operator and the API as
subprocesses (tests/support), one API key per tenant. Plus a ParseJob watcher that notes
when each upload was first seen Running and final, on this machine's clock."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "hack", ROOT / "tests" / "support", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import devservices  # noqa: E402
from spike_lib import StackCpu  # noqa: E402

from schedgen.parsejob import FINAL_PHASES, GROUP, LABEL_BATCH, PLURAL, RUNNING, VERSION  # noqa: E402

NAMESPACE = "spike"
BUCKET = "schedgen-spike"


@dataclass
class S3Shim:
    """What operator_e2e.Cluster needs of tests/conftest.py's S3."""

    server: devservices.S3Server
    bucket: str = BUCKET

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    def credentials_for(self, component: str) -> dict[str, str]:
        return self.server.credentials_for(component)


@dataclass
class Seen:
    running: float | None = None
    done: float | None = None
    phase: str | None = None
    reason: str | None = None  # why a final phase other than Succeeded (status.error)


class ParseJobWatcher(threading.Thread):
    """List + watch the namespace's ParseJobs; first-seen Running/final times by name."""

    def __init__(self, custom, namespace: str):
        super().__init__(daemon=True, name="parsejob-watch")
        self.custom, self.namespace = custom, namespace
        self.seen: dict[str, Seen] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors = 0

    def note(self, obj: dict, now: float) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        phase = status.get("phase")
        with self.lock:
            s = self.seen.setdefault(name, Seen())
            s.phase = phase
            error = status.get("error") or {}
            s.reason = "/".join(str(error[k]) for k in ("reason", "code") if error.get(k)) or None
            if phase == RUNNING and s.running is None:
                s.running = now
            if phase in FINAL_PHASES and s.done is None:
                s.done = now

    def get(self, name: str) -> Seen | None:
        with self.lock:
            s = self.seen.get(name)
            return Seen(s.running, s.done, s.phase, s.reason) if s else None

    def forget(self) -> None:
        with self.lock:
            self.seen.clear()

    def run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
                    now = time.time()
                    for obj in listed["items"]:
                        self.note(obj, now)
                    rv = listed["metadata"]["resourceVersion"]
                w = watch.Watch()
                for ev in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                   PLURAL, resource_version=rv, timeout_seconds=30, allow_watch_bookmarks=True):
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self.note(obj, time.time())
                    if self.stopping.is_set():
                        w.stop()
                        break
            except ApiException as exc:
                self.errors += 1
                rv = None if exc.status == 410 else rv
                time.sleep(0.5)
            except Exception:  # noqa: BLE001 - a dropped stream: watch again from rv
                self.errors += 1
                time.sleep(0.5)


@dataclass
class Stack:
    base: Path
    tenants: list[str]
    args: object
    keys: dict[str, str] = field(default_factory=dict)
    procs: list = field(default_factory=list)

    def start(self) -> "Stack":
        import boto3

        from schedgen import db
        from schedgen.api.backends import postgres as api_db

        a = self.args
        self.pg = devservices.PostgresServer(self.base / "pg")
        self.s3srv = devservices.S3Server(self.base / "s3")
        self.pg.start()
        self.s3srv.start()
        with db.connect(self.pg.dsn) as conn:
            db.migrate(conn)
            for t in self.tenants:
                self.keys[t] = api_db.add_key_sync(conn, t, "bench/spike")
        boto3.client("s3", endpoint_url=self.s3srv.endpoint_url, region_name="us-east-1",
                     aws_access_key_id=self.s3srv.access_key,
                     aws_secret_access_key=self.s3srv.secret_key).create_bucket(Bucket=BUCKET)
        self.s3srv.create_component_users(BUCKET)  # the API and the operator sign as their own users
        self._start_cluster()
        self._start_services()
        return self

    def _start_cluster(self) -> None:
        import images
        from kubernetes import client
        from localkube.cluster import LocalCluster
        from operator_e2e import CONFIGMAP, OPERATOR_NS, Cluster

        a = self.args
        print("starting the control plane and a real node (containerd + kubelet) ...", flush=True)
        self.cluster = LocalCluster(state_dir=self.base / "kube", session=True)
        self.cluster.start()
        for archive in images.save(images.CACHE_DIR / "archives", ["runner"]):
            self.cluster.import_image(archive)
        runner_ref = images.refs(["runner"])["runner"]
        self.cluster.add_node("node-1", cpu=str(a.node_cpu), memory="16Gi", pods=max(110, a.max_concurrent * 4))
        for cmd in (("apply", "-f", str(ROOT / "crds")),
                    ("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")):
            self.cluster.kubectl(*cmd)
        api = self.cluster.api_client()
        self.core, self.custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for ns in (OPERATOR_NS, NAMESPACE):
            self.core.create_namespace({"metadata": {"name": ns}})
        self.core.create_namespaced_config_map(OPERATOR_NS, {"metadata": {"name": CONFIGMAP}, "data": {}})
        self.kube = Cluster(self.cluster, api, self.pg, S3Shim(self.s3srv), runner_ref)

    def _start_services(self) -> None:
        from api_testlib import ApiProcess, api_env
        from operator_e2e import OperatorProcess, operator_env

        a = self.args
        self.set_runtime(batchSize=1, batchThreshold=a.batch_threshold)
        env = operator_env(self.kube, SCHEDGEN_JOB_TTL_SECONDS=3600, SCHEDGEN_CPU_REQUEST=a.cpu_request,
                           SCHEDGEN_LOG_FORMAT="json")
        self.operator = OperatorProcess(self.cluster, env, self.base / "operator.log").start()
        self.procs.append(self.operator)
        self.api = ApiProcess(api_env(
            database_url=self.pg.dsn, s3_endpoint_url=self.s3srv.endpoint_url, s3_credentials=self.s3srv.credentials_for("api"),
            bucket=BUCKET, namespace=NAMESPACE, kubeconfig=str(self.cluster.kubeconfig),
            SCHEDGEN_API_UPLOADS_PER_MINUTE=10**7, SCHEDGEN_API_READS_PER_MINUTE=10**7,
            SCHEDGEN_API_MAX_UPLOAD_BYTES=1024 * 1024), self.base / "api.log").start()
        self.procs.append(self.api)
        self.watcher = ParseJobWatcher(self.custom, NAMESPACE)
        self.watcher.start()

    def set_runtime(self, **data) -> None:
        a = self.args
        base = {"maxConcurrent": a.max_concurrent, "maxPerTenant": a.max_per_tenant,
                "admissionsPerSecond": a.admissions_per_second, "admissionBurst": max(1, int(a.admissions_per_second)),
                "guardMaxUnschedulable": -1, "retentionSucceededSeconds": 86400,
                "retentionSucceededCount": 100000, "queuePositionIntervalSeconds": 10,
                "queuePositionMaxWrites": 20}
        self.kube.set_runtime(**{**base, **data})

    def cpu_meter(self) -> StackCpu:
        from localkube.node import RealNode

        nodes = {n: RealNode(self.cluster, n, self.cluster.state["nodes"][n]["index"]).cgroup_root
                 for n in self.cluster.kubelet_nodes()}
        # kubelets and containerds are in their node's cgroup, counted there
        roots = {k: v["pid"] for k, v in self.cluster.processes.items()
                 if not k.startswith(("kubelet-", "containerd-"))}
        roots.update({"operator": self.operator.proc.pid, "api": self.api.proc.pid,
                      "postgres": self.pg.pid, "minio": self.s3srv.pid})
        return StackCpu(nodes, roots)

    def apiserver_metrics(self) -> str:
        code, body = self.cluster._get("/metrics", timeout=20)
        if code != 200:
            raise RuntimeError(f"apiserver /metrics answered {code}")
        return body.decode()

    def minio_metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.s3srv.endpoint_url + "/minio/metrics/v3/api/requests", timeout=10) as r:
            return r.read().decode()

    def conntrack(self) -> str:
        """The cluster network namespace's conntrack statistics ("" when unreadable)."""
        import subprocess

        done = subprocess.run(["ip", "netns", "exec", self.cluster.net_plan.netns, "cat",
                               "/proc/net/stat/nf_conntrack"], capture_output=True, text=True, timeout=10)
        return done.stdout if done.returncode == 0 else ""

    def pods_since(self, since: float) -> tuple[int, int, int]:
        """(pods, Jobs, batch Jobs) in the namespace created at or after `since` (s resolution)."""
        from kubernetes import client

        batch = client.BatchV1Api(self.core.api_client)
        pods = [p for p in self.core.list_namespaced_pod(NAMESPACE).items
                if p.metadata.creation_timestamp.timestamp() >= int(since)]
        jobs = [j for j in batch.list_namespaced_job(NAMESPACE).items
                if j.metadata.creation_timestamp.timestamp() >= int(since)]
        batches = [j for j in jobs if (j.metadata.labels or {}).get(LABEL_BATCH) == "true"]
        return len(pods), len(jobs), len(batches)

    def pod_timeline(self, since: float) -> list[dict]:
        """Each runner pod since `since`: its Job, and seconds from the first upload to pod
        created, container started and finished (second resolution), last finished last."""
        out = []
        for p in self.core.list_namespaced_pod(NAMESPACE).items:
            created = p.metadata.creation_timestamp.timestamp()
            if created < int(since):
                continue
            term = next((c.state.terminated for c in (p.status.container_statuses or []) if c.state.terminated),
                        None)
            rel = lambda t: round(t.timestamp() - since, 1) if t else None  # noqa: E731
            out.append({"pod": p.metadata.name, "job": (p.metadata.labels or {}).get("batch.kubernetes.io/job-name"),
                        "batch": (p.metadata.labels or {}).get(LABEL_BATCH) == "true" or p.metadata.name.startswith("batch-"),
                        "created": round(created - since, 1), "started": rel(term.started_at) if term else None,
                        "finished": rel(term.finished_at) if term else None,
                        "exit": term.exit_code if term else None})
        return sorted(out, key=lambda r: r["finished"] if r["finished"] is not None else 1e9)

    def pod_log(self, name: str, lines: int = 60) -> str:
        """The tail of a runner pod's log, saved under the state dir too."""
        try:
            text = self.core.read_namespaced_pod_log(name, NAMESPACE, tail_lines=lines,
                                                     _preload_content=False).data.decode(errors="replace")
        except Exception as exc:  # noqa: BLE001 - a diagnostic only
            return f"(no log: {exc})"
        (self.base / f"pod-{name}.log").write_text(text)
        return text

    def reset(self, timeout: float = 300) -> None:
        """Delete every ParseJob (the operator releases the finalizers) and wait until they
        and their Jobs' pods are gone, so the next run starts on an empty namespace."""
        self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, limit=1)["items"]
            pods = self.core.list_namespaced_pod(NAMESPACE, limit=1).items
            if not left and not pods:
                self.watcher.forget()
                return
            time.sleep(1)
        raise TimeoutError(f"ParseJobs or pods still in namespace {NAMESPACE} after {timeout}s")

    def stop(self, keep: bool) -> None:
        w = getattr(self, "watcher", None)
        if w:
            w.stopping.set()
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        for name in ("cluster", "s3srv", "pg"):
            thing = getattr(self, name, None)
            if thing is not None:
                try:
                    thing.stop()
                except Exception as exc:  # noqa: BLE001
                    print(f"stopping {name}: {exc}", file=sys.stderr)
        if keep:
            print(f"state dir (logs): {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def make_base() -> Path:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="schedgen-spike-"))
    os.chmod(base, 0o711)  # Postgres runs as `postgres` when we are root: let it traverse
    return base
