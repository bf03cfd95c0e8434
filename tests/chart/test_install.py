"""The chart installed the way users deploy it: Helm's engine (helm-python-sdk) installs the
release onto the local cluster with real nodes (hack/localkube). The cluster-wide release is
installed as users install it: the chart from `oci://<registry>/charts/schedgen`, the images
by digest from the cluster's registry (TLS, a login; the kubelet pulls them with the
release's imagePullSecrets, IfNotPresent); the namespaced release (test_install_namespaced.py)
runs the images imported into every node (pullPolicy Never). The operator (2 replicas, kopf
peering) and the API run as pods with their own ServiceAccount tokens, in a namespace
enforcing the `restricted` Pod Security Standard; runner Jobs run as containers. The real
PDFs go over HTTP to the API pod (NodePort) -> ParseJob -> runner container -> events in
Postgres. RBAC denials are checked with SelfSubjectAccessReviews and real calls answered 403,
with tokens of the release's own ServiceAccounts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tempfile
import urllib.parse
import uuid
from pathlib import Path

import chart_oci
import httpx
import psycopg
import pytest
import yaml
from credentials import assert_no_credentials
from localkube.testing import wait_for

from schedgen import db

from chartlib import (
    CHART,
    FIXTURES,
    GROUP,
    PLURAL,
    PYTHON,
    VERSION,
    api_client_for,
    can_i,
    clean_env,
    find,
    kubectl,
    notes,
    render,
    service_account_kubeconfig,
    whoami,
)
from noteslib import commands, one_starting, starting, substitute

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
              "pod-security.kubernetes.io/warn": "restricted", "schedgen.test": "true"}
METRICS_PORT = 9090  # the chart's default operator.metricsPort (each pod has its own IP)
FINAL = ("Succeeded", "Failed", "Cancelled")


def status_of(exc_call) -> int | None:
    from kubernetes.client.rest import ApiException

    try:
        exc_call()
    except ApiException as exc:
        return exc.status
    return None


def image_values(ref: str) -> dict:
    """`repository@sha256:...`: pulled from a registry; `repository:tag`: imported, never pulled."""
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return {"repository": repository, "tag": "", "digest": digest, "pullPolicy": "IfNotPresent"}
    repository, tag = ref.rsplit(":", 1)
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


class Release:
    """One `helm install` of the chart (helm-python-sdk) in a fresh restricted namespace."""

    def __init__(self, cluster, admin_api, name: str, values: dict, served: list[str], workdir: Path,
                 extra: list[str] | None = None):
        from kubernetes import client

        self.cluster, self.admin, self.name = cluster, admin_api, name
        self.core = client.CoreV1Api(admin_api)
        self.apps = client.AppsV1Api(admin_api)
        self.custom = client.CustomObjectsApi(admin_api)
        self.namespace = f"{name}-{uuid.uuid4().hex[:5]}"
        self.served = served
        self.extra = extra or []
        self.values = values
        self.workdir = workdir
        self.docs: list[dict] = []
        self.manifests: Path | None = None
        self.helm = None
        self.installed = False

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

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})

    def install(self, timeout: int = 300, oci: dict | None = None) -> dict:
        """`helm install --wait` (the watcher waits for the Deployments' pods to be Ready), of
        the chart in this checkout or, with `oci` (ref, version, registry), from the registry."""
        import helm_python as helm

        self.helm = helm.Config(kubeconfig_path=str(self.cluster.kubeconfig), namespace=self.namespace)
        started = time.monotonic()
        try:
            if oci:
                registry = oci["registry"]
                release = chart_oci.install(oci["ref"], oci["version"], name=self.name, namespace=self.namespace,
                                            values=self.values, kubeconfig=self.cluster.kubeconfig,
                                            credentials=registry.credentials, env=registry.trust_env(),
                                            timeout=timeout)
            else:
                release = self.helm.install(helm.Chart.load(str(CHART)), self.name, self.values,
                                            namespace=self.namespace, wait="watcher", timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"helm install {self.name} failed: {exc}\n{self.diagnose()}") from exc
        self.installed = True
        self.install_seconds = time.monotonic() - started
        print(f"helm install {self.name}: {self.install_seconds:.1f} s")
        self.docs = [d for d in yaml.safe_load_all(release["manifest"]) if d]
        self.manifests = self.workdir / f"{self.name}-manifest.yaml"
        self.manifests.write_text(release["manifest"])
        return release

    def diagnose(self) -> str:
        out = kubectl(self.cluster, "get", "pods,jobs,deploy,svc", "-n", self.namespace, "-o", "wide", check=False)
        text = out.stdout + out.stderr
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            logs = kubectl(self.cluster, "logs", "-n", self.namespace, pod.metadata.name, "--tail=30", check=False)
            text += f"\n--- {pod.metadata.name} {pod.status.phase} ---\n{logs.stdout}{logs.stderr}"
            described = kubectl(self.cluster, "describe", "pod", "-n", self.namespace, pod.metadata.name, check=False)
            text += "\n".join(described.stdout.splitlines()[-15:])
        return text

    def add_api_key(self, tenant: str, *flags: str) -> str:
        """A new API key, made as a key administrator makes one (`schedgen-api add-key` with
        the schema owner's login, as hack/demo.py does); the API pod's own role is refused
        (migration 0007: it may not mint keys), where the release logs in per role."""
        args = ["schedgen-api", "add-key", "--tenant", tenant, *flags]
        pod = kubectl(self.cluster, "exec", "-n", self.namespace, f"deploy/{self.api_sa}", "--", *args, check=False)
        if getattr(self, "db", None) is None:  # postgres.existingSecret: the owner's DSN everywhere
            assert pod.returncode == 0, pod.stderr
            return pod.stdout.strip().splitlines()[-1]
        assert pod.returncode == 3 and "schedgen_key_admin" in pod.stderr, pod.stderr
        done = subprocess.run([PYTHON, "-m", "schedgen.api", *args[1:]], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "SCHEDGEN_DATABASE_URL": self.db.dsn})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    def pods(self, component: str) -> list:
        return self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/component={component},"
                                           f"app.kubernetes.io/instance={self.name}").items

    @staticmethod
    def ready(pod) -> bool:
        return pod.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

    def api_url(self) -> str:
        """The API's NodePort URL once it answers: `helm install --wait` sees the pod Ready,
        but kube-proxy rejects the port until it has synced the new EndpointSlice."""
        svc = self.core.read_namespaced_service(self.api_sa, self.namespace)
        url = f"http://{self.cluster.node_ip('node-1')}:{svc.spec.ports[0].node_port}"
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 60,
                 what="the API via its NodePort")
        return url

    def operator_active(self, pod: str) -> float | None:
        """schedgen_operator_active from the pod's own /metrics (kubectl exec into the pod)."""
        code = ("import urllib.request;print(urllib.request.urlopen("
                f"'http://127.0.0.1:{METRICS_PORT}/metrics',timeout=5).read().decode())")
        done = kubectl(self.cluster, "exec", "-n", self.namespace, pod, "-c", "operator", "--",
                       "python3", "-c", code, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("schedgen_operator_active "):
                return float(line.split()[1])
        return None

    def uninstall(self) -> None:
        if self.installed:
            try:
                self.helm.uninstall(self.name, ignore_not_found=True)
            except Exception as exc:  # noqa: BLE001
                print(f"helm uninstall {self.name}: {exc}")
            # The operator's kopf daemons keep a finalizer on its ConfigMap; `helm uninstall`
            # deletes the operator pods at the same time, so nobody releases it and the
            # namespace would stay Terminating: release it here (an open operator gap).
            try:
                self.core.patch_namespaced_config_map(self.operator_sa, self.namespace,
                                                      {"metadata": {"finalizers": None}})
            except Exception:  # noqa: BLE001
                pass
        for ns in [self.namespace, *self.served, *self.extra]:
            try:
                self.core.delete_namespace(ns)
            except Exception:  # noqa: BLE001
                pass

    def kubeconfig(self, sa: str) -> Path:
        return service_account_kubeconfig(self.cluster, self.admin, self.namespace, sa, self.workdir)


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


def _pod_facing(local_cluster, postgres, s3) -> tuple[str, str]:
    """Postgres DSN and S3 endpoint as pods reach them: this machine's address on the
    cluster network (both servers listen on every interface)."""
    host = local_cluster.host_address
    return postgres.dsn_for(postgres.database, host=host), s3.server.endpoint_for(host)


class RoleDatabase:
    """A fresh, unmigrated database for one release and a login per role, each with a
    password of its own (as the database admin makes them, docs/deploy.md; every TCP
    login is SCRAM-SHA-256): the chart's migration hook Job migrates it as the owner;
    the operator and the API log in as members of their roles only."""

    def __init__(self, postgres, host: str, prefix: str):
        suffix = uuid.uuid4().hex[:8]
        self.name = f"{prefix}_{suffix}"
        self.users = {"operator": f"{prefix}_op_{suffix}", "api": f"{prefix}_api_{suffix}"}
        self._postgres, self._host = postgres, host
        with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        for role, user in self.users.items():
            postgres.create_login(user, in_role=f"schedgen_{role}")
        self.dsn = postgres.dsn_for(self.name)  # the owner's, from this machine

    @property
    def passwords(self) -> list[str]:
        return [self._postgres.password, *(self._postgres.logins[u] for u in self.users.values())]

    def pod_dsn(self, role: str | None = None) -> str:
        """What a pod reaches: the owner's DSN, or a role's login (with its password)."""
        return self._postgres.dsn_for(self.name, host=self._host, user=self.users[role] if role else None)

    def secrets(self, rel: "Release", prefix: str) -> dict[str, str]:
        """One Secret per role in the release namespace; the chart's postgres values."""
        names = {"operatorSecret": (f"{prefix}-pg-operator", self.pod_dsn("operator")),
                 "apiSecret": (f"{prefix}-pg-api", self.pod_dsn("api")),
                 "migrationSecret": (f"{prefix}-pg-owner", self.pod_dsn())}
        for name, dsn in names.values():
            rel.secret(rel.namespace, name, {"SCHEDGEN_DATABASE_URL": dsn})
        return {key: name for key, (name, _) in names.items()}

    def drop(self) -> None:
        with psycopg.connect(self._postgres.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        for user in self.users.values():
            self._postgres.drop_login(user)


def s3_secrets(rel: "Release", s3, prefix: str) -> dict[str, str]:
    """One Secret per component with its own S3 user's keys (never the root user's); the
    chart's s3 values naming them. The API's user is the one for its namespace (the release
    namespace: api.namespace is not set), whose policy allows its uploads' prefix only."""
    names = {"operatorSecret": f"{prefix}-s3-operator", "apiSecret": f"{prefix}-s3-api"}
    for key, name in names.items():
        rel.secret(rel.namespace, name, s3.credentials_for(key.removesuffix("Secret"), rel.namespace))
    return names


def _base_values(project_images: dict, s3, s3_endpoint: str) -> dict:
    endpoint = urllib.parse.urlsplit(s3_endpoint)
    return {
        "operator": {"image": image_values(project_images["operator"]), "logFormat": "text"},
        "runner": {"image": image_values(project_images["runner"])},
        # one API pod is enough here (2 cores); its Service is a NodePort reached from the host
        "api": {"image": image_values(project_images["operator"]), "autoscaling": {"enabled": False},
                "replicas": 1, "service": {"type": "NodePort", "port": 80}, "uploadsPerMinute": 60},
        "s3": {"bucket": s3.bucket, "endpointUrl": s3_endpoint},
        "jobDefaults": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "768Mi"}}},
        "queue": {"guardMaxUnschedulable": -1},
        # the cluster enforces NetworkPolicy: runner pods reach the test MinIO (its port, on this
        # machine's address on the cluster network) and nothing else
        "networkPolicy": {"s3": {"ports": [{"port": endpoint.port, "protocol": "TCP"}],
                                 "to": [{"ipBlock": {"cidr": f"{endpoint.hostname}/32"}}]}},
    }


def _upload(api: str, pdf: str, key: str) -> dict:
    with (FIXTURES / "up" / pdf).open("rb") as fh:
        response = httpx.post(f"{api}/api/v1/uploads", files={"file": (pdf, fh, "application/pdf")},
                              data={"priority": "high"}, headers={"X-API-Key": key}, timeout=30)
    assert response.status_code == 202, (response.status_code, response.text)
    return response.json()


def _wait_job(api: str, job_id: str, key: str, timeout: float = 240) -> dict:
    def finished():
        body = httpx.get(f"{api}/api/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=10).json()
        return body if body.get("phase") in FINAL else None
    return wait_for(finished, timeout, what=f"job {job_id} to finish")


# --- cluster-wide install (the default watch scope) -----------------------------------------


PULL_SECRET = "regcred"


def from_the_registry(values: dict) -> dict:
    """The values of an install from the registry: no image values (the packaged chart has
    the digests), the registry's login as imagePullSecrets of every pod and runner Job."""
    for component in ("operator", "runner", "api"):
        values[component].pop("image", None)
    values["operator"]["imagePullSecrets"] = [{"name": PULL_SECRET}]
    values["runner"]["imagePullSecrets"] = [{"name": PULL_SECRET}]
    return values


def with_images(values: dict, images: dict[str, str]) -> dict:
    """`values` with the images a packaged chart has baked in (component -> repo@digest)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    for component, ref in images.items():
        if isinstance(out.get(component), dict):
            repository, digest = ref.split("@", 1)
            out[component]["image"] = {"repository": repository, "digest": digest}
    return out


def push_chart(registry, registry_images: dict, workdir: Path) -> dict:
    """The chart packaged with the pushed images' digests in its values, pushed to the
    registry; what Release.install(oci=...) takes."""
    archive = chart_oci.package(workdir / "package", images=registry_images)
    pushed = chart_oci.push(archive, f"{registry.address}/charts", registry.credentials, env=registry.trust_env())
    ref, version = pushed["ref"].rsplit(":", 1)
    return {"ref": ref, "version": version, "registry": registry}


@pytest.fixture(scope="module")
def cluster_release(local_cluster, k8s_api_client, postgres, s3, local_registry, registry_images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chart-cluster")
    tenant = f"tenant-{uuid.uuid4().hex[:5]}"
    other = f"other-{uuid.uuid4().hex[:5]}"
    _, s3_endpoint = _pod_facing(local_cluster, postgres, s3)
    values = from_the_registry(_base_values(registry_images, s3, s3_endpoint))
    values["operator"]["replicas"] = 2
    values["networkPolicy"]["runnerNamespaces"] = [tenant]
    values["priorityClasses"] = {"create": True}
    values["jobDefaults"]["ttlSecondsAfterFinished"] = 600
    rel = Release(local_cluster, k8s_api_client, "sg", values, [tenant, other], workdir)
    rel.create_namespaces([tenant, other])
    # The Secrets the chart references (never contains), with the pod-facing addresses: a
    # Postgres DSN per role and each component's own S3 user in the release namespace.
    # Runner Jobs need none: the operator hands them presigned URLs.
    rel.db = RoleDatabase(postgres, local_cluster.host_address, "sg")
    values["postgres"] = rel.db.secrets(rel, "sg")
    values["s3"].update(s3_secrets(rel, s3, "sg"))
    rel.tenant, rel.other = tenant, other
    # the registry's login, by reference: a Secret in the release namespace (operator, API and
    # migration pods) and in each tenant namespace (runner pods), made by the user
    for ns in (rel.namespace, tenant, other):
        rel.core.create_namespaced_secret(ns, local_registry.pull_secret(ns, PULL_SECRET))
    rel.images = registry_images
    try:
        rel.install(oci=push_chart(local_registry, registry_images, workdir))
        yield rel
    finally:
        _cleanup_parsejobs(rel.custom, [rel.namespace, tenant, other])
        rel.uninstall()
        rel.db.drop()


def test_the_release_runs_in_a_restricted_namespace(cluster_release, k8s_api_client):
    from kubernetes import client

    rel = cluster_release
    listed = kubectl(rel.cluster, "get", "-f", str(rel.manifests), "-o", "yaml").stdout
    items = yaml.safe_load(listed)["items"]
    assert len(items) == len(rel.docs)
    kinds = {d["kind"] for d in rel.docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "ServiceAccount",
            "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "PriorityClass",
            "ClusterKopfPeering"} <= kinds
    # helm --wait returned: 2 operator pods and the API pod Ready, admitted by PodSecurity
    operators = [p for p in rel.pods("operator") if rel.ready(p)]
    apis = [p for p in rel.pods("api") if rel.ready(p)]
    assert len(operators) == 2 and len(apis) == 1, rel.diagnose()
    for pod in [*operators, *apis]:
        spec = pod.spec
        assert spec.service_account_name in (rel.operator_sa, rel.api_sa)
        # pulled by the kubelet from the registry, by digest, with the release's pull secret
        assert spec.containers[0].image == rel.images["operator"]
        assert spec.containers[0].image_pull_policy == "IfNotPresent"
        assert [s.name for s in spec.image_pull_secrets] == [PULL_SECRET]
        assert pod.status.container_statuses[0].image_id.endswith(rel.images["operator"].split("@")[1])
        assert spec.security_context.run_as_non_root is True
        assert any(v.projected for v in spec.volumes or []), "its own ServiceAccount token"
    assert {p.spec.service_account_name for p in operators} == {rel.operator_sa}
    assert {p.spec.service_account_name for p in apis} == {rel.api_sa}
    # The namespace enforces `restricted`: a non-compliant pod is refused, a pod of every
    # Deployment is admitted (server dry run through PodSecurity admission).
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
    assert status_of(lambda: core.read_namespaced_secret("sg-pg-operator", rel.namespace)) == 403


def test_api_account_may_only_create_and_read_parsejobs(cluster_release):
    from kubernetes import client

    rel = cluster_release
    api = api_client_for(rel.kubeconfig(rel.api_sa))
    ns = rel.namespace  # the API's namespace (api.namespace, default the release namespace)
    for verb in ("create", "get", "list", "watch", "delete"):  # delete: erasure (DELETE /api/v1/jobs/{id})
        assert can_i(api, verb, "parsejobs", group=GROUP, namespace=ns), verb
        assert not can_i(api, verb, "parsejobs", group=GROUP, namespace=rel.tenant), verb
    for verb in ("update", "patch", "deletecollection"):
        assert not can_i(api, verb, "parsejobs", group=GROUP, namespace=ns), verb
    assert not can_i(api, "patch", "parsejobs", group=GROUP, namespace=ns, subresource="status")
    assert not can_i(api, "create", "jobs", group="batch", namespace=ns)
    assert not can_i(api, "get", "secrets", namespace=ns)
    # a job's log (GET /api/v1/jobs/{id}/log): list Events in its namespace, nothing more
    assert can_i(api, "list", "events", namespace=ns)
    assert not can_i(api, "list", "events", namespace=rel.tenant)
    for verb in ("create", "patch", "delete", "watch"):
        assert not can_i(api, verb, "events", namespace=ns), verb
    batch, custom = client.BatchV1Api(api), client.CustomObjectsApi(api)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nope"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
    assert status_of(lambda: batch.create_namespaced_job(ns, job)) == 403
    assert status_of(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, rel.tenant, PLURAL, "x")) == 403


def test_real_pdfs_uploaded_to_the_api_pod_end_to_end(cluster_release, postgres, s3):
    """The three real PDFs over HTTP to the API pod (NodePort) -> ParseJobs created with the
    API pod's own token -> admitted by exactly one of the two operator pods -> runner
    containers (no token, uid 65532) -> events in Postgres and from the API."""
    import psycopg
    from kubernetes import client

    rel = cluster_release
    ns = rel.namespace  # where the API creates ParseJobs
    operators = [p.metadata.name for p in rel.pods("operator") if rel.ready(p)]
    assert len(operators) == 2
    wait_for(lambda: sorted(rel.operator_active(p) or 0.0 for p in operators) == [0.0, 1.0], 90,
             what="exactly one active operator replica of two")
    api = rel.api_url()
    # keys are required by default; one made in the API pod may upload priority high
    anonymous = httpx.get(f"{api}/api/v1/queue", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "ApiKeyRequired", anonymous.text
    assert anonymous.headers["content-type"] == "application/problem+json"
    key = rel.add_api_key("chart-e2e", "--max-priority", "high")
    jobs = {}
    for pdf, kind, events in REAL:
        started = time.monotonic()
        body = _upload(api, pdf, key)
        assert body["tenant"] == "chart-e2e"
        jobs[pdf] = (body, kind, events, started)
    for pdf, (body, kind, events, started) in jobs.items():
        status = _wait_job(api, body["id"], key)
        print(f"{pdf}: upload -> {status['phase']} in {time.monotonic() - started:.1f} s")
        assert status["phase"] == "Succeeded", (status, rel.diagnose())
        assert status["result"]["kind"] == kind and status["result"]["events"] == events, status
        got = httpx.get(f"{api}/api/v1/jobs/{body['id']}/events", headers={"X-API-Key": key}, timeout=10)
        assert got.status_code == 200, got.text
        assert got.json()["kind"] == kind and len(got.json()["events"]) == events
        with psycopg.connect(rel.db.dsn, autocommit=True) as conn:
            count = conn.execute("SELECT count(*) FROM events WHERE job_uid = %s", (body["uid"],)).fetchone()[0]
        assert count == events
        pj = next(p for p in rel.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
                  if p["metadata"]["uid"] == body["uid"])
        job = client.BatchV1Api(rel.admin).read_namespaced_job(pj["status"]["jobName"], ns)
        spec = job.spec.template.spec
        assert spec.automount_service_account_token is False     # runner pods get no token
        assert spec.priority_class_name == "sg-schedgen-high"    # the chart's PriorityClass
        assert job.spec.ttl_seconds_after_finished == 600        # jobDefaults
        assert spec.containers[0].image == rel.images["runner"]      # by digest, from the registry
        assert spec.containers[0].image_pull_policy == "IfNotPresent"
        assert [s.name for s in spec.image_pull_secrets] == [PULL_SECRET]  # runner.imagePullSecrets
        assert spec.containers[0].resources.limits["memory"] == "768Mi"
        # no credential of any kind in the runner Job the installed operator made
        run_secret = rel.admin.sanitize_for_serialization(rel.core.read_namespaced_secret(job.metadata.name, ns))
        assert_no_credentials(rel.admin.sanitize_for_serialization(job),
                              [*s3.secret_keys(), *rel.db.passwords, rel.db.name, *rel.db.users.values()],
                              run_secret=run_secret)
        pods = rel.core.list_namespaced_pod(ns, label_selector=f"job-name={job.metadata.name}").items
        assert pods, "the runner pod"
        for pod in pods:
            assert pod.spec.automount_service_account_token is False
            assert not any(m.mount_path.startswith("/var/run/secrets/kubernetes.io")
                           for m in pod.spec.containers[0].volume_mounts or [])
            uid = (pod.spec.containers[0].security_context.run_as_user
                   if pod.spec.containers[0].security_context and pod.spec.containers[0].security_context.run_as_user
                   else pod.spec.security_context.run_as_user)
            assert uid == 65532
            assert pod.status.phase == "Succeeded" or any(
                (s.state.terminated and s.state.terminated.exit_code == 0) for s in pod.status.container_statuses or [])
    # still exactly one active replica; the operator recorded the jobs in Postgres
    assert sorted(rel.operator_active(p) or 0.0 for p in operators) == [0.0, 1.0]
    uids = [body["uid"] for body, *_ in jobs.values()]
    with psycopg.connect(rel.db.dsn, autocommit=True) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM parse_jobs WHERE uid::text = ANY(%s) AND phase = 'Succeeded'",
                                      (uids,)).fetchone()[0] == len(uids), 30, what="parse_jobs rows")
        # Least privilege in practice: the hook Job migrated the fresh database as its owner,
        # and every session of the running release is one of the two role logins.
        assert db.applied_versions(conn) == [m.version for m in db.migrations()]
        logins = {r[0] for r in conn.execute("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s"
                                             " AND pid <> pg_backend_pid()", (rel.db.name,)).fetchall()}
        assert logins == set(rel.db.users.values()), logins

    # `kubectl apply -f charts/schedgen/examples/parsejob.yaml` against the installed chart,
    # its PDF uploaded to the namespace's own prefix as the example says (team-a -> ours)
    tenant = rel.tenant  # any served namespace, by a user with kubectl
    text = (CHART / "examples" / "parsejob.yaml").read_text().replace("namespaces/team-a/", f"namespaces/{tenant}/")
    example = yaml.safe_load(text)
    s3.put(FIXTURES / "up" / "UP_MOD_XLS.pdf", key=example["spec"]["source"]["s3"]["key"])
    manifest = Path(tempfile.mkdtemp(prefix="schedgen-example-")) / "parsejob.yaml"
    manifest.write_text(text)
    kubectl(rel.cluster, "apply", "-n", tenant, "-f", str(manifest))
    name = example["metadata"]["name"]
    pj = wait_for(lambda: (lambda p: p if (p.get("status") or {}).get("phase") in FINAL else None)(
        rel.custom.get_namespaced_custom_object(GROUP, VERSION, tenant, PLURAL, name)), 240, what="example ParseJob")
    assert pj["status"]["phase"] == "Succeeded" and pj["status"]["result"]["events"] == 30, pj["status"]
    assert "Succeeded" in kubectl(rel.cluster, "get", "pj", "-n", tenant, name).stdout


# --- NOTES.txt and `helm test` against the installed release (tests/chart/test_first_steps.py
# checks them offline for every main value set) --------------------------------------------


def _notes_env(rel, home: Path) -> dict[str, str]:
    """A user's shell: kubectl on PATH and the cluster's kubeconfig, no schedgen variables."""
    kubectl_dir = str(Path(rel.cluster.bin("kubectl")).parent)
    return {**clean_env(), "KUBECONFIG": str(rel.cluster.kubeconfig), "HOME": str(home),
            "PATH": f"{kubectl_dir}:{os.environ['PATH']}"}


def _sh(command: str, env: dict, cwd: Path, timeout: float = 400) -> str:
    done = subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"NOTES command failed ({done.returncode}):\n{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_forward(command: str, env: dict, cwd: Path) -> tuple[subprocess.Popen, int]:
    """NOTES' port-forward on a free local port (8080 may be taken here), until it answers."""
    port = _free_port()
    proc = subprocess.Popen(["bash", "-c", "exec " + substitute(command, {"8080": str(port)})], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(answers, 60, what="the API through kubectl port-forward")
    return proc, port


def _notes_upload(cmds: list[str], env: dict, cwd: Path) -> None:
    """Step 3: the three curl commands, the job followed to its end."""
    upload, follow, events = starting(cmds, "curl")
    made = json.loads(_sh(upload, env, cwd))
    assert made["id"] and made["tenant"].startswith("notes-"), made
    words = {"JOB_ID": made["id"]}
    def finished() -> dict | None:
        job = json.loads(_sh(substitute(follow, words), env, cwd))
        return job if job["phase"] in FINAL else None
    job = wait_for(finished, 300, what="the NOTES upload's job")
    assert job["phase"] == "Succeeded", job
    got = json.loads(_sh(substitute(events, words), env, cwd))
    assert got["kind"] == "lecture" and len(got["events"]) == 30, got


def _notes_s3_copy(command: str, rel, s3, cwd: Path) -> None:
    """`aws s3 cp FILE s3://BUCKET/KEY [--endpoint-url URL]` done with the test's S3 client
    (the aws CLI is no dependency of the project): the bucket and endpoint NOTES names."""
    import shlex

    args = shlex.split(command)
    assert args[:3] == ["aws", "s3", "cp"], args
    bucket, key = args[4].removeprefix("s3://").split("/", 1)
    assert bucket == rel.values["s3"]["bucket"] == s3.bucket
    assert args[5:] == ["--endpoint-url", rel.values["s3"]["endpointUrl"]], args
    s3.put(cwd / args[3], key=key)


def _kubectl_path(cmds: list[str], rel, s3, env: dict, cwd: Path) -> None:
    """NOTES' kubectl-only path in a served namespace: the PDF to the namespace's prefix,
    the ParseJob applied, waited for, listed and described."""
    words = {"NAMESPACE": rel.tenant}
    # the example test may have made a week-12 there already: start from none
    kubectl(rel.cluster, "-n", rel.tenant, "delete", "pj", "week-12", "--ignore-not-found", "--wait", "--timeout=120s")
    _notes_s3_copy(substitute(one_starting(cmds, "aws s3 cp"), words), rel, s3, cwd)
    assert "created" in _sh(substitute(one_starting(cmds, "cat <<'YAML'"), words), env, cwd)
    assert "condition met" in _sh(substitute(one_starting(cmds, "kubectl -n NAMESPACE wait"), words), env, cwd)
    listed = _sh(substitute(one_starting(cmds, "kubectl -n NAMESPACE get parsejobs"), words), env, cwd)
    assert re.search(r"^week-12\s+Succeeded\s+lecture\s+30\b", listed, re.MULTILINE), listed
    assert "Succeeded" in _sh(substitute(one_starting(cmds, "kubectl -n NAMESPACE describe pj week-12"), words), env, cwd)


def test_notes_commands_work_against_the_release(cluster_release, s3, tmp_path):
    """Every command NOTES prints for this release, run as printed (UPPERCASE words filled
    in) by a user's shell: kubectl, curl; the API key made by the one-off pod; the API
    through the port-forward; the kubectl-only path. `helm test` runs in the next test;
    `aws s3 cp` is done with the test's S3 client."""
    rel = cluster_release
    # the release's NOTES: installed from oci://, its images are the packaged chart's digests
    cmds = commands(notes(with_images(rel.values, rel.images), name=rel.name, namespace=rel.namespace))
    assert any("@sha256:" in c for c in cmds), cmds  # the add-key pod's image, as installed
    env, ns = _notes_env(rel, tmp_path), rel.namespace
    (tmp_path / "week-12.pdf").write_bytes((FIXTURES / "up" / "UP_MOD_XLS.pdf").read_bytes())
    running = _sh(one_starting(cmds, f"kubectl -n {ns} get deploy,pods"), env, tmp_path)
    assert f"deployment.apps/{rel.operator_sa}" in running and f"deployment.apps/{rel.api_sa}" in running
    words = {"TENANT": f"notes-{uuid.uuid4().hex[:6]}"}
    key = _sh(substitute(one_starting(cmds, f"kubectl -n {ns} run "), words), env, tmp_path).split()[-1]
    assert key.startswith("sgk_"), key
    words["KEY"] = key
    _sh(substitute(one_starting(cmds, f"kubectl -n {ns} create secret generic"), words), env, tmp_path)
    assert rel.core.read_namespaced_secret(f"{rel.name}-schedgen-test-api-key", ns).data["api-key"]
    forward, port = _port_forward(one_starting(cmds, f"kubectl -n {ns} port-forward"), env, tmp_path)
    try:
        export = substitute(one_starting(cmds, "export "), {**words, "8080": str(port)})
        env.update(pair.split("=", 1) for pair in export.split()[1:])
        _notes_upload(cmds, env, tmp_path)
    finally:
        forward.terminate()
        forward.wait(timeout=30)
    _kubectl_path(cmds, rel, s3, env, tmp_path)
    done = {c for c in cmds if c.startswith(("kubectl", "curl", "export", "aws", "cat", f"helm test {rel.name}"))}
    assert done == set(cmds), set(cmds) - done  # nothing NOTES prints went unchecked


def test_notes_ingress_is_accepted_by_the_api_server(cluster_release, tmp_path):
    """The Ingress the chart renders for this release passes the real API server's
    validation (server-side dry run; no ingress controller needed for that)."""
    rel = cluster_release
    values = {**rel.values, "api": {**rel.values["api"], "trustedProxies": ["10.0.0.0/8"],
                                    "ingress": {"enabled": True, "host": "schedule.example.org",
                                                "className": "nginx", "tls": {"secretName": "schedule-tls"}}}}
    ingress = [d for d in render(values, name=rel.name, namespace=rel.namespace) if d["kind"] == "Ingress"]
    assert len(ingress) == 1
    out = kubectl(rel.cluster, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(ingress[0])).stdout
    assert f"ingress.networking.k8s.io/{rel.api_sa} created (server dry run)" in out, out


def _helm_test(rel) -> str:
    """`helm test <release> --logs` (helm-python-sdk); the test pod's log."""
    result = rel.helm.test(rel.name, timeout=420, logs=True)
    return result.get("logs") or ""


def _scale_api(rel, replicas: int) -> None:
    kubectl(rel.cluster, "-n", rel.namespace, "scale", f"deploy/{rel.api_sa}", f"--replicas={replicas}")
    if replicas:
        rel.api_url()  # Ready and reachable again
    else:
        wait_for(lambda: not rel.pods("api"), 120, what="no API pod")


def test_helm_test_checks_readyz_and_one_upload(cluster_release):
    """`helm test` on the real release: with the key Secret, /readyz and one upload through
    to Succeeded (then erased); without it, /readyz and the 401 only, saying so; with the API
    down, the test fails."""
    import helm_python as helm

    rel = cluster_release
    secret = f"{rel.name}-schedgen-test-api-key"
    kubectl(rel.cluster, "-n", rel.namespace, "delete", "secret", secret, "--ignore-not-found")
    rel.secret(rel.namespace, secret, {"api-key": rel.add_api_key("helm-test")})
    logs = _helm_test(rel)
    for line in ("ok: /readyz", "ok: upload accepted", "Succeeded: 3 lecture events", "erased", "PASS"):
        assert line in logs, logs
    kubectl(rel.cluster, "-n", rel.namespace, "delete", "secret", secret)
    logs = _helm_test(rel)
    assert "refused (401 ApiKeyRequired)" in logs and "NOT TESTED: an upload" in logs and "PASS" in logs, logs
    _scale_api(rel, 0)
    try:
        with pytest.raises(helm.HelmError) as failed:
            _helm_test(rel)
        pod_log = kubectl(rel.cluster, "-n", rel.namespace, "logs", f"{rel.api_sa}-test", check=False)
        assert "FAIL: GET /readyz did not answer 200" in str(failed.value) + pod_log.stdout, \
            (str(failed.value), pod_log.stdout, pod_log.stderr)
    finally:
        _scale_api(rel, 1)
