"""Helpers for the operator's end-to-end tests: the operator as a subprocess
(`python -m schedgen.operator`, stopped by pid) and API/Postgres helpers."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from child_process import ChildProcess
from devservices import free_port
from localkube.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
from schedgen.parsejob import GROUP, PLURAL, VERSION  # noqa: E402
OPERATOR_NS = "schedgen-system"
CONFIGMAP = "schedgen-operator"


class OperatorProcess(ChildProcess):
    """The operator as a child process (own session, stopped by its pid)."""

    def __init__(self, cluster, env: dict[str, str], log_path: Path):
        super().__init__([PYTHON, "-m", "schedgen.operator"], env, log_path)
        self.cluster = cluster
        self.metrics_port = int(env["SCHEDGEN_METRICS_PORT"])

    def start(self, wait: bool = True) -> "OperatorProcess":
        self.spawn()
        if wait:
            wait_for(lambda: self.metric("schedgen_operator_active") == 1.0 or not self.running, 60,
                     what="operator scheduler to become active")
            if not self.running:
                raise RuntimeError(f"operator exited:\n{self.log_tail()}")
        return self

    def metrics(self) -> dict[tuple[str, tuple], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels) -> float | None:
        try:
            values = self.metrics()
        except OSError:
            return None
        key = (name, tuple(sorted(labels.items())))
        if key in values:
            return values[key]
        matching = [v for (n, lab), v in values.items() if n == name and set(labels.items()) <= set(lab)]
        return sum(matching) if matching else None


class Cluster:
    """Helpers around the API for the tests."""

    def __init__(self, cluster, api_client, postgres, s3, runner_image: str):
        from kubernetes import client

        self.cluster = cluster
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.postgres = postgres
        self.s3 = s3
        self.runner_image = runner_image
        self.namespaces: list[str] = []

    # --- the services as runner pods reach them (at the cluster's host address) ---------
    @property
    def pod_dsn(self) -> str:
        return self.postgres.dsn_for(self.postgres.database, host=self.cluster.host_address)

    @property
    def pod_s3_endpoint(self) -> str:
        return self.s3.server.endpoint_for(self.cluster.host_address)

    # --- tenant namespaces: no Secret, the runner gets presigned URLs only ------------
    def tenant_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        self.core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true"}}})
        self.namespaces.append(name)
        return name

    def cleanup(self, timeout: float = 60) -> None:
        """Delete ParseJobs (the operator must still run, to release finalizers), then namespaces."""
        for ns in self.namespaces:
            try:
                self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + timeout
        for ns in self.namespaces:
            while time.monotonic() < deadline and self.parsejobs(ns):
                time.sleep(0.5)
            try:
                self.core.delete_namespace(ns)
            except Exception:  # noqa: BLE001
                pass
        self.namespaces.clear()

    # --- ParseJobs --------------------------------------------------------------------
    def submit(self, ns: str, name: str, key: str, **spec) -> dict:
        """A ParseJob of `key`'s PDF as a kubectl user makes one: the PDF copied (in S3)
        to the namespace's own upload prefix first, the only place such a ParseJob may
        take it from (operator/admission.source_refusal)."""
        own = f"uploads/namespaces/{ns}/"
        if not key.startswith(own):
            copied = own + key.rsplit("/", 1)[-1]
            try:
                self.s3.client.copy_object(Bucket=self.s3.bucket, Key=copied,
                                           CopySource={"Bucket": self.s3.bucket, "Key": key})
            except self.s3.client.exceptions.NoSuchKey:
                pass  # a missing PDF stays missing (tests of SourceNotFound and the like)
            key = copied
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": name},
                "spec": {"source": {"s3": {"bucket": self.s3.bucket, "key": key}}, **spec}}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def get(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def parsejobs(self, ns: str) -> list[dict]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]

    def all_parsejobs(self) -> list[dict]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]

    def wait_phase(self, ns: str, name: str, phases=("Succeeded", "Failed", "Cancelled"), timeout: float = 120) -> dict:
        def done():
            pj = self.get(ns, name)
            return pj if (pj.get("status") or {}).get("phase") in phases else None
        return wait_for(done, timeout, what=f"{ns}/{name} to reach {phases}")

    def wait_all_finished(self, namespaces: list[str], timeout: float = 600, on_sample=None) -> list[dict]:
        def done():
            items = [pj for ns in namespaces for pj in self.parsejobs(ns)]
            if on_sample:
                on_sample(items)
            unfinished = [pj for pj in items if (pj.get("status") or {}).get("phase")
                          not in ("Succeeded", "Failed", "Cancelled")]
            return items if not unfinished else None
        return wait_for(done, timeout, interval=0.5, what="all ParseJobs to finish")

    def pods_of(self, ns: str, job_name: str) -> list:
        return self.core.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={job_name}").items

    def jobs_of(self, ns: str, uid: str) -> list:
        """The single-run Jobs of the ParseJob `uid` (one per run)."""
        return self.batch.list_namespaced_job(ns, label_selector=f"schedgen.io/parsejob-uid={uid}").items

    def events_for(self, ns: str, name: str) -> list:
        return [e for e in self.core.list_namespaced_event(ns).items if e.involved_object.name == name]

    def queue_summary(self) -> dict:
        """The operator's published queue (schedgen.queue_summary): its ConfigMap's data."""
        try:
            return self.core.read_namespaced_config_map(f"{CONFIGMAP}-queue", OPERATOR_NS).data or {}
        except Exception:  # noqa: BLE001 - not published yet
            return {}

    def set_runtime(self, **data) -> None:
        self.core.patch_namespaced_config_map(CONFIGMAP, OPERATOR_NS, {"data": {k: str(v) for k, v in data.items()}})

    # --- Postgres ---------------------------------------------------------------------
    def row(self, uid: str):
        import psycopg

        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            return conn.execute("SELECT phase, transition_seq, attempts, kind, event_count, error_reason"
                                " FROM parse_jobs WHERE uid = %s", (uid,)).fetchone()

    def event_rows(self, uid: str) -> int:
        import psycopg

        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (uid,)).fetchone()[0]

    def transitions(self, uid: str) -> list[tuple[int, str]]:
        import psycopg

        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            return conn.execute("SELECT seq, phase FROM parse_job_transitions WHERE job_uid = %s ORDER BY seq",
                                (uid,)).fetchall()


def operator_env(operator_cluster: Cluster, **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
    env.update({
        "KUBECONFIG": str(operator_cluster.cluster.kubeconfig),
        "SCHEDGEN_OPERATOR_NAMESPACE": OPERATOR_NS,
        "SCHEDGEN_OPERATOR_CONFIGMAP": CONFIGMAP,
        "SCHEDGEN_DATABASE_URL": operator_cluster.postgres.dsn,
        # presigned URLs are signed for the host the runner pods reach; the operator
        # reaches that address too, for the result objects
        "SCHEDGEN_S3_ENDPOINT_URL": operator_cluster.pod_s3_endpoint,
        **operator_cluster.s3.credentials_for("operator"),  # its own S3 user (it presigns), never root
        "SCHEDGEN_RUNNER_IMAGE": operator_cluster.runner_image,
        "SCHEDGEN_IMAGE_PULL_POLICY": "Never",  # nodes never pull: the image is imported
        "SCHEDGEN_DEFAULT_BUCKET": operator_cluster.s3.bucket,
        "SCHEDGEN_METRICS_PORT": str(free_port()),
        "SCHEDGEN_LIVENESS_PORT": str(free_port()),
        "SCHEDGEN_STANDALONE": "1",
        "SCHEDGEN_LOG_FORMAT": "text",
        "SCHEDGEN_CPU_REQUEST": "100m",
        "SCHEDGEN_MEMORY_REQUEST": "64Mi",
        "SCHEDGEN_MEMORY_LIMIT": "768Mi",
        "SCHEDGEN_JOB_TTL_SECONDS": "600",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def summary(items: list[dict]) -> str:
    """Each ParseJob's phase, and for those that did not succeed, why."""
    def line(status: dict):
        if status.get("phase") == "Succeeded":
            return "Succeeded"
        return {k: status.get(k) for k in ("phase", "error", "attempts", "jobName")}
    return json.dumps({pj["metadata"]["name"]: line(pj.get("status") or {}) for pj in items})
