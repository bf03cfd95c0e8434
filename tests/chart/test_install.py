"""The chart on the real local control plane (hack/localkube): every rendered object is
accepted by kube-apiserver (schema, admission, a namespace enforcing the `restricted`
Pod Security Standard); the operator and the API run with the chart's ServiceAccounts'
own tokens (TokenRequest, not admin) through the real PDFs; RBAC denials are checked
with SelfSubjectAccessReviews and real calls answered 403."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from devservices import free_port
from localkube.testing import wait_for

from chartlib import (
    CHART,
    FIXTURES,
    GROUP,
    PLURAL,
    ROOT,
    VERSION,
    api_client_for,
    can_i,
    clean_env,
    container_env,
    find,
    kubectl,
    one,
    render,
    service_account_kubeconfig,
    whoami,
    write_manifests,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
              "pod-security.kubernetes.io/warn": "restricted", "schedgen.test": "true"}
OPERATOR_BIN = str(ROOT / ".venv" / "bin" / "schedgen-operator")


def status_of(exc_call) -> int | None:
    from kubernetes.client.rest import ApiException

    try:
        exc_call()
    except ApiException as exc:
        return exc.status
    return None


class Release:
    """One rendered + applied install of the chart in a fresh namespace."""

    def __init__(self, cluster, admin_api, name: str, values: dict, served: list[str], workdir: Path,
                 extra: list[str] | None = None):
        from kubernetes import client

        self.cluster, self.admin, self.name = cluster, admin_api, name
        self.core = client.CoreV1Api(admin_api)
        self.custom = client.CustomObjectsApi(admin_api)
        self.namespace = f"{name}-{uuid.uuid4().hex[:5]}"
        self.served = served
        self.extra = extra or []
        self.values = values
        self.workdir = workdir
        self.docs: list[dict] = []
        self.manifests: Path | None = None

    @property
    def operator_sa(self) -> str:
        return f"{self.name}-schedgen-operator"

    @property
    def api_sa(self) -> str:
        return f"{self.name}-schedgen-api"

    def create_namespaces(self, extra: list[str]) -> None:
        for ns in [self.namespace, *extra]:
            try:
                self.core.create_namespace({"metadata": {"name": ns, "labels": RESTRICTED}})
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 409:
                    raise

    def install(self) -> subprocess.CompletedProcess:
        crds = [d for d in render(self.values, name=self.name, namespace=self.namespace, with_crds=True)
                if d["kind"] == "CustomResourceDefinition"]
        write_manifests(crds, self.workdir / f"{self.name}-crds.yaml")
        # `helm install` creates crds/ first (create or keep): server-side apply does the same here
        kubectl(self.cluster, "apply", "--server-side", "--force-conflicts", "-f", str(self.workdir / f"{self.name}-crds.yaml"))
        kubectl(self.cluster, "wait", "--for=condition=Established", "--timeout=60s",
                *[f"crd/{d['metadata']['name']}" for d in crds])
        self.docs = render(self.values, name=self.name, namespace=self.namespace)
        self.manifests = write_manifests(self.docs, self.workdir / f"{self.name}-manifests.yaml")
        return kubectl(self.cluster, "apply", "-f", str(self.manifests))

    def uninstall(self) -> None:
        if self.manifests:
            kubectl(self.cluster, "delete", "--ignore-not-found", "--wait=false", "-f", str(self.manifests), check=False)
        for ns in [self.namespace, *self.served, *self.extra]:
            try:
                self.core.delete_namespace(ns)
            except Exception:  # noqa: BLE001
                pass

    def kubeconfig(self, sa: str) -> Path:
        return service_account_kubeconfig(self.cluster, self.admin, self.namespace, sa, self.workdir)


class Operator:
    """One operator replica: the image's command (`schedgen-operator`) with the rendered
    Deployment's environment, authenticated by the operator ServiceAccount's token."""

    def __init__(self, release: Release, kubeconfig: Path, secrets: dict, replica: int):
        dep = one(release.docs, "Deployment", release.operator_sa)
        pod = f"{release.operator_sa}-{uuid.uuid4().hex[:5]}"
        env = clean_env()
        env.update(container_env(dep, "operator", pod_name=pod, secrets=secrets))
        # each pod has its own IP; here the replicas share 127.0.0.1, so their own ports
        if replica:
            env["SCHEDGEN_METRICS_PORT"] = str(free_port())
            env["SCHEDGEN_LIVENESS_PORT"] = str(free_port())
        env.update({"KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"})
        self.env = env
        self.args = dep["spec"]["template"]["spec"]["containers"][0].get("args") or []
        self.metrics_port = int(env["SCHEDGEN_METRICS_PORT"])
        self.log_path = release.workdir / f"{pod}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Operator":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([OPERATOR_BIN, *self.args], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True, cwd="/")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def active(self) -> float | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("schedgen_operator_active "):
                return float(line.split()[1])
        return None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def _pod_from(dep: dict, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"psa-{dep['metadata']['name']}", "namespace": namespace},
            "spec": dep["spec"]["template"]["spec"]}


def _cleanup_parsejobs(custom, namespaces: list[str], timeout: float = 60) -> None:
    for ns in namespaces:
        try:
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        except Exception:  # noqa: BLE001
            pass
    deadline = time.monotonic() + timeout
    for ns in namespaces:
        while time.monotonic() < deadline:
            try:
                if not custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                    break
            except Exception:  # noqa: BLE001
                break
            time.sleep(0.5)


# --- cluster-wide install (the default watch scope) -----------------------------------------


@pytest.fixture(scope="module")
def cluster_release(local_cluster, k8s_api_client, postgres, s3, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chart-cluster")
    tenant = f"tenant-{uuid.uuid4().hex[:5]}"
    other = f"other-{uuid.uuid4().hex[:5]}"
    values = {
        "operator": {"metricsPort": free_port(), "livenessPort": free_port(), "logFormat": "text"},
        "s3": {"bucket": s3.bucket, "endpointUrl": s3.endpoint_url, "existingSecret": "sg-s3"},
        "postgres": {"existingSecret": "sg-postgres"},
        "jobDefaults": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "768Mi"}},
                        "ttlSecondsAfterFinished": 600},
        "queue": {"guardMaxUnschedulable": -1},
        "networkPolicy": {"runnerNamespaces": [tenant]},
        "priorityClasses": {"create": True},
    }
    rel = Release(local_cluster, k8s_api_client, "sg", values, [tenant, other], workdir)
    rel.create_namespaces([tenant, other])
    # The Secrets the chart references (never contains): the operator's DSN and the API's
    # S3 credentials in the release namespace, the runner's Secret in the tenant namespace.
    secrets = {
        "sg-postgres": {"SCHEDGEN_DATABASE_URL": postgres.dsn},
        "sg-s3": s3.credentials,
    }
    for name, data in secrets.items():
        rel.core.create_namespaced_secret(rel.namespace, {"metadata": {"name": name}, "stringData": data})
    for ns in (rel.namespace, tenant, other):
        rel.core.create_namespaced_secret(ns, {"metadata": {"name": "schedgen-runner"}, "stringData": {
            **s3.credentials, "SCHEDGEN_DATABASE_URL": postgres.dsn}})
    rel.applied = rel.install()
    rel.tenant, rel.other, rel.secrets = tenant, other, secrets
    yield rel
    _cleanup_parsejobs(rel.custom, [rel.namespace, tenant, other])
    rel.uninstall()


def test_every_rendered_object_is_accepted_by_the_api_server(cluster_release, k8s_api_client):
    from kubernetes import client

    rel = cluster_release
    assert "PodSecurity" not in rel.applied.stderr and "would violate" not in rel.applied.stderr, rel.applied.stderr
    listed = kubectl(rel.cluster, "get", "-f", str(rel.manifests), "-o", "yaml").stdout
    items = yaml.safe_load(listed)["items"]
    assert len(items) == len(rel.docs)
    kinds = {d["kind"] for d in rel.docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "PriorityClass", "ClusterKopfPeering"} <= kinds
    # The namespace enforces `restricted`: a pod of every Deployment is admitted (server
    # dry run through PodSecurity admission), and a non-compliant pod is not.
    core = client.CoreV1Api(k8s_api_client)
    for dep in find(rel.docs, "Deployment"):
        core.create_namespaced_pod(rel.namespace, _pod_from(dep, rel.namespace), dry_run="All")
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-pod"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert status_of(lambda: core.create_namespaced_pod(rel.namespace, bad, dry_run="All")) == 403


def test_operator_account_is_least_privilege(cluster_release):
    from kubernetes import client

    rel = cluster_release
    api = api_client_for(rel.kubeconfig(rel.operator_sa))
    assert whoami(api) == f"system:serviceaccount:{rel.namespace}:{rel.operator_sa}"
    ns = rel.tenant
    assert can_i(api, "list", "parsejobs", group=GROUP)                      # all namespaces
    assert can_i(api, "patch", "parsejobs", group=GROUP, namespace=ns, subresource="status")
    assert can_i(api, "create", "jobs", group="batch", namespace=ns)
    assert can_i(api, "watch", "pods", namespace=ns)
    assert can_i(api, "create", "events", namespace=ns)
    for verb in ("get", "list", "watch"):
        assert not can_i(api, verb, "secrets", namespace=ns), verb
        assert not can_i(api, verb, "secrets", namespace=rel.namespace), verb
    assert not can_i(api, "create", "pods", namespace=ns)
    assert not can_i(api, "create", "parsejobs", group=GROUP, namespace=ns)
    assert not can_i(api, "update", "configmaps", namespace=rel.namespace, name=rel.operator_sa)
    assert not can_i(api, "create", "rolebindings", group="rbac.authorization.k8s.io", namespace=ns)
    core = client.CoreV1Api(api)
    assert status_of(lambda: core.read_namespaced_secret("schedgen-runner", ns)) == 403
    assert status_of(lambda: core.list_secret_for_all_namespaces()) == 403
    assert status_of(lambda: core.read_namespaced_secret("sg-postgres", rel.namespace)) == 403


def test_api_account_may_only_create_and_read_parsejobs(cluster_release):
    from kubernetes import client

    rel = cluster_release
    api = api_client_for(rel.kubeconfig(rel.api_sa))
    ns = rel.namespace  # the API's namespace (api.namespace, default the release namespace)
    for verb in ("create", "get", "list", "watch"):
        assert can_i(api, verb, "parsejobs", group=GROUP, namespace=ns), verb
        assert not can_i(api, verb, "parsejobs", group=GROUP, namespace=rel.tenant), verb
    for verb in ("delete", "update", "patch", "deletecollection"):
        assert not can_i(api, verb, "parsejobs", group=GROUP, namespace=ns), verb
    assert not can_i(api, "patch", "parsejobs", group=GROUP, namespace=ns, subresource="status")
    assert not can_i(api, "create", "jobs", group="batch", namespace=ns)
    assert not can_i(api, "get", "secrets", namespace=ns)
    batch, custom = client.BatchV1Api(api), client.CustomObjectsApi(api)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nope"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
    assert status_of(lambda: batch.create_namespaced_job(ns, job)) == 403
    assert status_of(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "anything")) == 403


def test_real_pdfs_end_to_end_with_the_charts_own_accounts(cluster_release, postgres, s3):
    """Two operator replicas (peering: one admits) run as the chart's operator
    ServiceAccount with the Deployment's own environment; the ParseJobs are created with
    the API ServiceAccount's identity; every real PDF succeeds with its events."""
    from kubernetes import client

    rel = cluster_release
    ns = rel.namespace  # where the API creates ParseJobs
    op_cfg = rel.kubeconfig(rel.operator_sa)
    operators = [Operator(rel, op_cfg, rel.secrets, i).start() for i in range(2)]
    try:
        wait_for(lambda: sorted(o.active() or 0.0 for o in operators) == [0.0, 1.0]
                 or not all(o.alive() for o in operators), 90, what="one active operator replica of two")
        assert all(o.alive() for o in operators), "\n".join(o.log_tail() for o in operators)
        api_identity = api_client_for(rel.kubeconfig(rel.api_sa))
        submit = client.CustomObjectsApi(api_identity)
        names = {}
        for pdf, kind, events in REAL:
            key = s3.put(FIXTURES / "up" / pdf)
            name = pdf.lower().replace("_", "-").removesuffix(".pdf")
            submit.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": name},
                "spec": {"source": {"s3": {"key": key}}, "priority": "high"}})  # bucket: the chart's default
            names[name] = (kind, events)
        import psycopg

        for name, (kind, events) in names.items():
            def finished(name=name):
                pj = submit.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                return pj if (pj.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled") else None
            pj = wait_for(finished, 240, what=f"{ns}/{name} to finish")
            s = pj["status"]
            assert s["phase"] == "Succeeded", (s, [o.log_tail() for o in operators])
            assert s["result"]["kind"] == kind and s["result"]["events"] == events, s
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                count = conn.execute("SELECT count(*) FROM events WHERE job_uid = %s",
                                     (pj["metadata"]["uid"],)).fetchone()[0]
            assert count == events
            job = client.BatchV1Api(rel.admin).read_namespaced_job(s["jobName"], ns)
            pod = job.spec.template.spec
            assert pod.automount_service_account_token is False     # runner pods get no token
            assert pod.priority_class_name == "sg-schedgen-high"    # the chart's PriorityClass
            assert job.spec.ttl_seconds_after_finished == 600       # jobDefaults
            assert pod.containers[0].resources.limits["memory"] == "768Mi"
        assert sorted(o.active() or 0.0 for o in operators) == [0.0, 1.0]
        # Records written by the operator with the DSN from postgres.existingSecret.
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            uids = [submit.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, n)["metadata"]["uid"] for n in names]
            wait_for(lambda: conn.execute("SELECT count(*) FROM parse_jobs WHERE uid::text = ANY(%s) AND phase = 'Succeeded'",
                                          (uids,)).fetchone()[0] == len(uids), 30, what="parse_jobs rows")

        # `kubectl apply -f charts/schedgen/examples/parsejob.yaml` against the installed chart
        example = yaml.safe_load((CHART / "examples" / "parsejob.yaml").read_text())
        s3.put(FIXTURES / "up" / "UP_MOD_XLS.pdf", key=example["spec"]["source"]["s3"]["key"])
        ns = rel.tenant  # any served namespace, by a user with kubectl
        kubectl(rel.cluster, "apply", "-n", ns, "-f", str(CHART / "examples" / "parsejob.yaml"))
        name = example["metadata"]["name"]
        pj = wait_for(lambda: (lambda p: p if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None)(
            rel.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)), 240, what="example ParseJob")
        assert pj["status"]["phase"] == "Succeeded" and pj["status"]["result"]["events"] == 30, pj["status"]
        out = kubectl(rel.cluster, "get", "pj", "-n", ns, name).stdout
        assert "Succeeded" in out
        _cleanup_parsejobs(rel.custom, [rel.namespace, ns])  # finalizers need a running operator
    finally:
        for o in operators:
            o.stop()
        for o in operators:
            print(f"--- {o.log_path} ---\n{o.log_tail(30)}")


# --- namespace-scoped install ------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced_release(local_cluster, k8s_api_client, postgres, s3, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chart-namespaced")
    suffix = uuid.uuid4().hex[:5]
    served = [f"team-a-{suffix}", f"team-b-{suffix}"]
    outside = f"team-z-{suffix}"
    values = {"watch": {"namespaces": served},
              "operator": {"metricsPort": free_port(), "livenessPort": free_port(), "replicas": 1},
              "s3": {"bucket": s3.bucket, "endpointUrl": s3.endpoint_url},
              "postgres": {"existingSecret": "sgns-postgres"},
              "jobDefaults": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                            "limits": {"cpu": "1", "memory": "768Mi"}}}}
    rel = Release(local_cluster, k8s_api_client, "sgns", values, served, workdir, extra=[outside])
    rel.create_namespaces([*served, outside])
    rel.secrets = {"sgns-postgres": {"SCHEDGEN_DATABASE_URL": postgres.dsn}}
    rel.core.create_namespaced_secret(rel.namespace, {"metadata": {"name": "sgns-postgres"},
                                                      "stringData": rel.secrets["sgns-postgres"]})
    for ns in [rel.namespace, *served, outside]:
        rel.core.create_namespaced_secret(ns, {"metadata": {"name": "schedgen-runner"}, "stringData": {
            **s3.credentials, "SCHEDGEN_DATABASE_URL": postgres.dsn}})
    rel.applied = rel.install()
    rel.outside = outside
    yield rel
    _cleanup_parsejobs(rel.custom, [rel.namespace, *served, outside])
    rel.uninstall()


def test_namespaced_install_is_accepted_and_scoped(namespaced_release):
    from kubernetes import client

    rel = namespaced_release
    assert "would violate" not in rel.applied.stderr, rel.applied.stderr
    op = api_client_for(rel.kubeconfig(rel.operator_sa))
    api = api_client_for(rel.kubeconfig(rel.api_sa))
    for ns in [*rel.served, rel.namespace]:
        assert can_i(op, "watch", "parsejobs", group=GROUP, namespace=ns), ns
        assert can_i(op, "create", "jobs", group="batch", namespace=ns), ns
        assert can_i(op, "patch", "kopfpeerings", group="kopf.dev", namespace=ns, name="sgns-schedgen"), ns
        assert can_i(api, "create", "parsejobs", group=GROUP, namespace=ns) == (ns == rel.namespace), ns
        assert not can_i(op, "get", "secrets", namespace=ns), ns
        assert not can_i(api, "delete", "parsejobs", group=GROUP, namespace=ns), ns
    # nothing outside the served namespaces, nothing cluster-wide
    ns = rel.outside
    for verb in ("get", "list", "watch", "patch", "delete"):
        assert not can_i(op, verb, "parsejobs", group=GROUP, namespace=ns), verb
    assert not can_i(op, "create", "jobs", group="batch", namespace=ns)
    assert not can_i(op, "list", "pods", namespace=ns)
    assert not can_i(op, "list", "parsejobs", group=GROUP)                      # all namespaces
    assert not can_i(op, "list", "clusterkopfpeerings", group="kopf.dev")
    assert not can_i(api, "create", "parsejobs", group=GROUP, namespace=ns)
    assert status_of(lambda: client.CustomObjectsApi(op).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)) == 403
    assert status_of(lambda: client.BatchV1Api(op).list_namespaced_job(ns)) == 403
    assert status_of(lambda: client.CoreV1Api(op).list_namespaced_secret(rel.served[0])) == 403
    assert status_of(lambda: client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob",
                                     "metadata": {"name": "x"}, "spec": {"source": {"s3": {"key": "k"}}}})) == 403


def test_namespaced_operator_parses_in_its_namespaces(namespaced_release, s3):
    rel = namespaced_release
    from kubernetes import client

    operator = Operator(rel, rel.kubeconfig(rel.operator_sa), rel.secrets, 0).start()
    try:
        wait_for(lambda: operator.active() == 1.0 or not operator.alive(), 60, what="the operator to become active")
        assert operator.alive(), operator.log_tail()
        api = client.CustomObjectsApi(api_client_for(rel.kubeconfig(rel.api_sa)))
        ns = rel.namespace
        key = s3.put(FIXTURES / "up" / "UP_EXAM_SS.pdf")
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": "exam"},
            "spec": {"source": {"s3": {"key": key}}}})
        pj = wait_for(lambda: (lambda p: p if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None)(
            api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "exam")), 120, what="exam ParseJob")
        assert pj["status"]["phase"] == "Succeeded" and pj["status"]["result"]["events"] == 5
        # the chart's KopfPeerings are read, never re-created (no `create` granted): no warnings
        log = operator.log_tail(400)
        assert not [line for line in log.splitlines() if "WARNING" in line and "Peering" in line], log
        assert "Falling back to a list of namespaces" not in log, log
        _cleanup_parsejobs(rel.custom, [ns])
    finally:
        operator.stop()
        print(f"--- operator ---\n{operator.log_tail(30)}")
