"""Upgrade, rollback and uninstall of the chart on the local cluster (real API server, nodes,
Postgres, MinIO), with Helm's own engine (helm-python-sdk), as users run them.

The previous release is the chart of commit PREVIOUS (`git archive` into a temporary
directory). The chart version never changed (0.1.0), so the previous release is the last
main-line commit before the ParseJob CRD changed: d6cae00 then made a waiting ParseJob read
as Queued without any write (the CRD's new `status` default) and retired the Queue column.
Its cluster is what a user of it has: its CRDs as Helm installed them (put in place first,
whatever an earlier test module left), its release, its ParseJobs. Both charts run the images
the tests build for HEAD (the older chart takes them through its image values; no older
images are built), so what changes is the chart: its templates, hooks and CRDs.

ParseJobs running and waiting, deterministically: maxConcurrent 1, and the ParseJob that
holds the slot asks for all of the node's CPU (the chart's maximum, 2), so its runner pod
stays Pending, its ParseJob Running (admitted, its Job made, deadline 3600 s) and the others
wait behind it for as long as the test needs; deleting it frees the slot (Cancelled).

One module, in order (each test builds on the one before, as a cluster's life does):
1. helm upgrade to HEAD with a ParseJob running and three waiting: the pre-upgrade hook
   brings the CRD to HEAD's (Helm never upgrades crds/); the waiting ones read Queued (the
   new default) with no write, the running one keeps what the previous release wrote; none
   lost: the running one cancelled ends Cancelled, the others Succeeded, each exactly once,
   and each Postgres row agrees.
2. helm rollback to revision 1: the previous chart runs again on HEAD's CRD (kept: a
   rollback does not touch CRDs) and database; ParseJobs made after it complete.
3. helm upgrade to HEAD again (the previous chart has no uninstall hook), with the API, then
   helm uninstall with a ParseJob running and two waiting: the pre-delete hook stops the
   operator and the API and leaves no ParseJob on the finalizer; deleting one, and then their
   namespace, completes; the CRD stays.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml
from chartlib import CHART, FIXTURES, GROUP, PLURAL, REPO_CRDS, ROOT, VERSION, kubectl
from localkube.testing import wait_for
from test_install import RESTRICTED, RoleDatabase, image_values

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PREVIOUS = "5b009398575e73e21eb24e13993777d3d2f1c4ce"  # main before d6cae00 (the CRD's status default)
NAME = "sgup"
FINAL = ("Succeeded", "Failed", "Cancelled")
FINALIZER = "schedgen.io/record"
PDF = ("UP_EXAM_SS.pdf", 5)  # the smallest real PDF: 5 exam events


def previous_chart(directory: Path) -> Path:
    """charts/schedgen and crds/ of PREVIOUS (the chart's crds link resolves inside)."""
    done = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS, "charts/schedgen", "crds"],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, (f"the previous chart needs the git history with commit {PREVIOUS} "
                                  f"(a shallow clone: git fetch --unshallow): {done.stderr.decode()}")
    archive = done.stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True, timeout=60)
    return directory / "charts" / "schedgen"


def crds_of(directory: Path) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for p in sorted(directory.glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "CustomResourceDefinition"}


def put_crds(ext, crds: dict[str, dict]) -> None:
    """The CRDs exactly as given (create, or replace what an earlier module left)."""
    for name, crd in crds.items():
        try:
            live = ext.read_custom_resource_definition(name)
        except Exception as exc:  # noqa: BLE001
            assert getattr(exc, "status", None) == 404, exc
            ext.create_custom_resource_definition(crd)
            continue
        ext.replace_custom_resource_definition(
            name, {**crd, "metadata": {**crd["metadata"], "resourceVersion": live.metadata.resource_version}})
    wait_for(lambda: all(any(c.type == "Established" and c.status == "True" for c in
                             ext.read_custom_resource_definition(n).status.conditions or []) for n in crds), 60,
             what="the CRDs Established")


def parsejob_crd(ext) -> dict:
    return ext.api_client.sanitize_for_serialization(ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}"))


def status_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]


def columns(crd: dict) -> list[str]:
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns") or []]


class Cluster:
    """The release under test and what it serves: one tenant namespace of ParseJobs."""

    def __init__(self, local_cluster, admin_api, postgres, s3, images: dict, workdir: Path):
        import helm_python as helm
        from kubernetes import client

        self.cluster, self.s3 = local_cluster, s3
        self.core = client.CoreV1Api(admin_api)
        self.apps = client.AppsV1Api(admin_api)
        self.batch = client.BatchV1Api(admin_api)
        self.rbac = client.RbacAuthorizationV1Api(admin_api)
        self.custom = client.CustomObjectsApi(admin_api)
        self.ext = client.ApiextensionsV1Api(admin_api)
        suffix = uuid.uuid4().hex[:5]
        self.namespace, self.tenant = f"{NAME}-{suffix}", f"tenant-{suffix}"
        for ns in (self.namespace, self.tenant):
            self.core.create_namespace({"metadata": {"name": ns, "labels": RESTRICTED}})
        self.db = RoleDatabase(postgres, local_cluster.host_address, NAME)
        self.helm = helm.Config(kubeconfig_path=str(local_cluster.kubeconfig), namespace=self.namespace)
        self.previous = helm.Chart.load(str(previous_chart(workdir)))
        self.head = helm.Chart.load(str(CHART))
        self.previous_crds = crds_of(workdir / "crds")
        self.values = self._values(images)
        self.created: dict[str, str] = {}  # ParseJob name -> uid
        self.deleted: set[str] = set()

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})

    def _values(self, images: dict) -> dict:
        """Values both charts accept (the older schema knows no per-component S3 Secret: one
        Secret with the operator's own S3 user; no API, the test makes ParseJobs itself)."""
        import urllib.parse

        endpoint = self.s3.server.endpoint_for(self.cluster.host_address)  # as pods reach it
        url = urllib.parse.urlsplit(endpoint)
        self.secret(self.namespace, f"{NAME}-s3", self.s3.credentials_for("operator"))
        return {
            "operator": {"image": image_values(images["operator"]), "logFormat": "text", "replicas": 1},
            "runner": {"image": image_values(images["runner"])},
            "api": {"enabled": False},
            "s3": {"bucket": self.s3.bucket, "endpointUrl": endpoint, "existingSecret": f"{NAME}-s3"},
            "postgres": self.db.secrets(self, NAME),
            "jobDefaults": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                          "limits": {"cpu": "1", "memory": "768Mi"}}},
            "queue": {"maxConcurrent": 1, "batchThreshold": 1, "guardMaxUnschedulable": -1},
            "networkPolicy": {"runnerNamespaces": [self.tenant],
                              "s3": {"ports": [{"port": url.port, "protocol": "TCP"}],
                                     "to": [{"ipBlock": {"cidr": f"{url.hostname}/32"}}]}},
        }

    def with_api(self) -> dict:
        """HEAD's values with one API pod, signing S3 requests as its own user (a value the
        previous chart does not know)."""
        self.secret(self.namespace, f"{NAME}-s3-api", self.s3.credentials_for("api", self.namespace))
        return {**self.values, "api": {"enabled": True, "replicas": 1, "autoscaling": {"enabled": False}},
                "s3": {**self.values["s3"], "apiSecret": f"{NAME}-s3-api"}}

    # --- Helm -----------------------------------------------------------------------------

    def install_previous(self) -> dict:
        put_crds(self.ext, self.previous_crds)
        return self._helm("install", lambda: self.helm.install(
            self.previous, NAME, self.values, namespace=self.namespace, wait="watcher", timeout=300))

    def upgrade(self, values: dict) -> dict:
        return self._helm("upgrade", lambda: self.helm.upgrade(
            self.head, NAME, values, namespace=self.namespace, wait="watcher", timeout=300))

    def rollback(self, revision: int) -> None:
        self._helm("rollback", lambda: self.helm.rollback(NAME, version=revision, wait="watcher", timeout=300))

    def uninstall(self) -> dict:
        return self._helm("uninstall", lambda: self.helm.uninstall(NAME, wait="watcher", timeout=300))

    def _helm(self, what: str, call):
        started = time.monotonic()
        try:
            out = call()
        except Exception as exc:
            raise AssertionError(f"helm {what} failed: {exc}\n{self.diagnose()}") from exc
        print(f"helm {what}: {time.monotonic() - started:.1f} s")
        return out

    def diagnose(self) -> str:
        out = kubectl(self.cluster, "get", "pods,jobs,deploy,pj", "-n", self.namespace, "-o", "wide", check=False)
        text = out.stdout + out.stderr
        for pod in self.core.list_namespaced_pod(self.namespace).items:
            logs = kubectl(self.cluster, "logs", "-n", self.namespace, pod.metadata.name, "--tail=30", check=False)
            text += f"\n--- {pod.metadata.name} {pod.status.phase} ---\n{logs.stdout}{logs.stderr}"
        return text

    # --- ParseJobs ------------------------------------------------------------------------

    def create(self, count: int, prefix: str, **spec) -> list[str]:
        """ParseJobs of the real PDF in the tenant namespace, their PDF under its own prefix."""
        key = self.s3.put(FIXTURES / "up" / PDF[0], key=f"uploads/namespaces/{self.tenant}/{prefix}.pdf")
        names = []
        for i in range(count):
            name = f"{prefix}-{i}"
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": name},
                    "spec": {"source": {"s3": {"key": key}}, "deadlineSeconds": 300, **spec}}
            made = self.custom.create_namespaced_custom_object(GROUP, VERSION, self.tenant, PLURAL, body)
            self.created[name] = made["metadata"]["uid"]
            names.append(name)
        return names

    def hold_the_slot(self, prefix: str) -> str:
        """A ParseJob Running for as long as the test needs: its runner pod asks for the
        whole node (2 CPUs, next to the operator's pod) and stays Pending."""
        name = self.create(1, prefix, deadlineSeconds=3600,
                           resources={"requests": {"cpu": "2"}, "limits": {"cpu": "2"}})[0]
        wait_for(lambda: self.phase(name) == "Running", 240, interval=1, what=f"{name} Running")
        job = self.get(name)["status"]["jobName"]
        wait_for(lambda: any(c.type == "PodScheduled" and c.reason == "Unschedulable"
                             for p in self.core.list_namespaced_pod(self.tenant, label_selector=f"job-name={job}").items
                             for c in p.status.conditions or []), 120, interval=1, what=f"{job}'s pod Unschedulable")
        return name

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.tenant, PLURAL, name)
        self.deleted.add(name)
        wait_for(lambda: name not in {o["metadata"]["name"] for o in self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.tenant, PLURAL)["items"]}, 120, interval=0.5, what=f"{name} deleted")

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.tenant, PLURAL, name)

    def phase(self, name: str) -> str | None:
        return (self.get(name).get("status") or {}).get("phase")

    def wait_final(self, names: list[str], timeout: float = 300) -> dict[str, dict]:
        def done():
            objs = {n: self.get(n) for n in names}
            return objs if all((o.get("status") or {}).get("phase") in FINAL for o in objs.values()) else None
        try:
            return wait_for(done, timeout, interval=1, what=f"ParseJobs {names} to finish")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose()}") from exc

    def assert_recorded_once(self, finished: dict[str, dict], cancelled: tuple[str, ...] = ()) -> None:
        """Each ended Succeeded with the PDF's events (the `cancelled` ones Cancelled, with
        none), and Postgres agrees: its row's phase, its events, exactly one final transition."""
        uids = [self.created[n] for n in [*finished, *cancelled]]
        for name, obj in finished.items():
            assert obj["status"]["phase"] == "Succeeded", (name, obj["status"])
            assert obj["status"]["result"]["events"] == PDF[1], (name, obj["status"])

        def rows():
            with psycopg.connect(self.db.dsn, autocommit=True) as conn:
                got = conn.execute(
                    "SELECT uid::text, phase, (SELECT count(*) FROM events e WHERE e.job_uid = p.uid),"
                    " (SELECT count(*) FROM parse_job_transitions t WHERE t.job_uid = p.uid"
                    "   AND t.phase IN ('Succeeded', 'Failed', 'Cancelled'))"
                    " FROM parse_jobs p WHERE uid::text = ANY(%s)", (uids,)).fetchall()
            return got if len(got) == len(uids) and all(r[1] in FINAL for r in got) else None
        got = wait_for(rows, 60, interval=1, what="the ParseJobs' rows")
        expected = [(self.created[n], "Succeeded", PDF[1], 1) for n in finished]
        expected += [(self.created[n], "Cancelled", 0, 1) for n in cancelled]
        assert sorted(got) == sorted(expected), got

    def close(self) -> None:
        """Whatever a failed test left: no finalizer kept, both namespaces deleted."""
        for ns in (self.tenant, self.namespace):
            try:
                for pj in self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]:
                    self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, pj["metadata"]["name"],
                                                               {"metadata": {"finalizers": []}})
                self.core.delete_namespace(ns)
            except Exception as exc:  # noqa: BLE001 - a clean-up: say why, go on
                print(f"clean-up of {ns}: {exc}")
        self.db.drop()


@pytest.fixture(scope="module")
def release(local_cluster, k8s_api_client, postgres, s3, project_images, tmp_path_factory):
    up = Cluster(local_cluster, k8s_api_client, postgres, s3, project_images, tmp_path_factory.mktemp("chart-upgrade"))
    try:
        yield up
    finally:
        try:
            up.helm.uninstall(NAME, ignore_not_found=True, timeout=300)
        except Exception as exc:  # noqa: BLE001
            print(f"helm uninstall {NAME}: {exc}")
        up.close()
        put_crds(up.ext, crds_of(REPO_CRDS))  # HEAD's CRDs for whatever runs next


def test_upgrade_from_the_previous_release_keeps_every_parsejob(release):
    rel = release
    rel.install_previous()
    old = parsejob_crd(rel.ext)
    assert "default" not in status_schema(old) and "Queue" in columns(old)  # the previous CRD
    running = rel.hold_the_slot("running")
    waiting = rel.create(3, "waiting")
    wait_for(lambda: all(FINALIZER in (rel.get(n)["metadata"].get("finalizers") or []) for n in waiting), 120,
             interval=1, what="the operator's finalizer on the waiting ParseJobs")
    before = {n: rel.get(n) for n in [running, *waiting]}
    assert all("status" not in before[n] for n in waiting)  # nothing written, no default yet
    assert before[running]["status"]["phase"] == "Running"

    rel.upgrade(rel.values)

    assert rel.helm.status(NAME)["revision"] == 2
    new, head = parsejob_crd(rel.ext), crds_of(REPO_CRDS)[f"{PLURAL}.{GROUP}"]
    assert status_schema(new) == status_schema(head) and columns(new) == columns(head)  # HEAD's CRD
    assert status_schema(new)["default"] == {"phase": "Queued"} and "Queue" not in columns(new)
    managers = {(f["manager"], f["operation"]) for f in new["metadata"]["managedFields"]}
    assert ("schedgen-crds", "Apply") in managers, managers
    # the hook's Job, account and ConfigMap went with its success
    assert not rel.batch.list_namespaced_job(rel.namespace, label_selector="app.kubernetes.io/component=crds").items
    assert not [r for r in rel.rbac.list_cluster_role().items if r.metadata.name.startswith(f"{NAME}-schedgen-crds")]
    for name in waiting:  # never written: the new CRD's default, as they are read
        now = rel.get(name)
        assert now["metadata"]["resourceVersion"] == before[name]["metadata"]["resourceVersion"], name
        assert now["status"] == {"phase": "Queued"}, (name, now.get("status"))
    kept = rel.get(running)["status"]
    assert kept["phase"] == "Running"
    for field in ("jobName", "attempts", "startedAt", "enqueuedAt", "transitionSeq"):
        assert kept.get(field) == before[running]["status"].get(field), (field, kept)

    rel.delete(running)  # the upgraded operator's finalizer: Cancelled, recorded, then gone
    rel.assert_recorded_once(rel.wait_final(waiting), cancelled=(running,))


def test_rollback_to_the_previous_release_keeps_working(release):
    rel = release
    crd_before = parsejob_crd(rel.ext)
    rel.rollback(1)
    status = rel.helm.status(NAME)
    assert status["revision"] == 3 and status["status"] == "deployed", status
    configmap = rel.core.read_namespaced_config_map(f"{NAME}-schedgen-operator", rel.namespace)
    assert "pendingRunnersMin" not in configmap.data  # the previous chart's ConfigMap again
    assert "maxConcurrent" in configmap.data
    # the CRD is kept as HEAD's: a rollback does not touch CRDs (no pre-rollback hook either)
    assert status_schema(parsejob_crd(rel.ext)) == status_schema(crd_before)
    assert parsejob_crd(rel.ext)["metadata"]["generation"] == crd_before["metadata"]["generation"]
    names = rel.create(2, "after-rollback")
    rel.assert_recorded_once(rel.wait_final(names))


def test_uninstall_leaves_no_parsejob_on_the_finalizer(release):
    rel = release
    # HEAD again (the previous chart has no uninstall hook, docs/deploy.md "Uninstall"), now
    # with the API too: the hook stops both Deployments before it releases the finalizers
    rel.upgrade(rel.with_api())
    assert {d.metadata.name for d in rel.apps.list_namespaced_deployment(rel.namespace).items} == \
        {f"{NAME}-schedgen-operator", f"{NAME}-schedgen-api"}
    names = [rel.hold_the_slot("held"), *rel.create(2, "at-uninstall")]
    wait_for(lambda: all(FINALIZER in (rel.get(n)["metadata"].get("finalizers") or []) for n in names), 120,
             interval=1, what="the operator's finalizer on every ParseJob")
    assert [rel.phase(n) for n in names] == ["Running", "Queued", "Queued"]

    rel.uninstall()

    with pytest.raises(Exception) as gone:
        rel.helm.status(NAME)
    assert "not found" in str(gone.value).lower(), gone.value
    assert not rel.apps.list_namespaced_deployment(rel.namespace).items  # the hook stopped them, Helm deleted
    wait_for(lambda: not rel.core.list_namespaced_config_map(
        rel.namespace, label_selector="app.kubernetes.io/component=operator").items, 60, interval=1,
        what="the operator's ConfigMaps gone (no finalizer left on them)")
    wait_for(lambda: not [r for r in rel.rbac.list_cluster_role().items
                          if r.metadata.name.startswith(f"{NAME}-schedgen-")], 60, interval=1,
             what="the release's ClusterRoles gone, the hook's with its success")
    wait_for(lambda: not rel.batch.list_namespaced_job(rel.namespace).items, 60, interval=1,
             what="the hook Jobs gone with their success")
    left = {n: rel.get(n) for n in rel.created if n not in rel.deleted}  # uninstall keeps ParseJobs
    assert not [n for n, o in left.items() if FINALIZER in (o["metadata"].get("finalizers") or [])]
    rel.ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")

    # deleting one goes through (no operator left to cancel it); deleting their namespace completes
    rel.delete(names[0])
    rel.core.delete_namespace(rel.tenant)

    def namespace_gone():
        try:
            rel.core.read_namespace(rel.tenant)
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "status", None) == 404
        return False
    wait_for(namespace_gone, 180, interval=1, what=f"namespace {rel.tenant} deleted")
    rel.ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")  # the CRD stays
