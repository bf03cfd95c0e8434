"""The operator's second check of the tenant binding (the chart's ValidatingAdmissionPolicy
is the first, tests/chart/test_tenant_policy.py): a ParseJob of another tenant than its
namespace's fails with reason TenantMismatch when the scheduler would admit it, and no Job
is created. The rule itself, then the check on the real API server (no policy installed:
the ParseJob stands for one created before its namespace was labelled)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from schedgen.operator.admission import tenant_mismatch
from schedgen.operator.scheduler import NAME_TAKEN_TICKS
from schedgen.parsejob import ParseJob

GROUP, VERSION, PLURAL = "schedgen.io", "v1alpha1", "parsejobs"


def body(tenant: str | None = "team-a", priority: str | None = None, ns: str = "ns-a", labels=None) -> ParseJob:
    spec = {"source": {"s3": {"key": "k.pdf"}}}
    if tenant:
        spec["tenant"] = tenant
    if priority:
        spec["priority"] = priority
    return ParseJob.of({"metadata": {"name": "pj", "namespace": ns, "labels": labels or {}}, "spec": spec})


BOUND = {"schedgen.io/tenant": "team-a"}


def test_the_rule():
    # unbound namespaces (or labels unknown) bind nothing
    assert tenant_mismatch(body("team-b", "high"), {}) is None
    assert tenant_mismatch(body("team-b", "high"), None) is None
    # the namespace's tenant, priority up to normal by default
    assert tenant_mismatch(body("team-a"), BOUND) is None
    assert tenant_mismatch(body("team-a", "low"), BOUND) is None
    assert "priority high is not allowed in namespace ns-a" in tenant_mismatch(body("team-a", "high"), BOUND)
    assert tenant_mismatch(body("team-b"), BOUND) == "spec.tenant team-b is not team-a, the tenant of namespace ns-a"
    # no spec.tenant: the namespace's name
    assert tenant_mismatch(body(None, ns="team-a"), BOUND) is None
    assert "spec.tenant ns-a is not team-a" in tenant_mismatch(body(None), BOUND)
    assert "label schedgen.io/tenant team-b" in tenant_mismatch(
        body("team-a", labels={"schedgen.io/tenant": "team-b"}), BOUND)
    # schedgen.io/max-priority raises or lowers the bound; an unknown value admits nothing
    assert tenant_mismatch(body("team-a", "high"), {**BOUND, "schedgen.io/max-priority": "high"}) is None
    assert tenant_mismatch(body("team-a"), {**BOUND, "schedgen.io/max-priority": "low"}) is not None
    assert tenant_mismatch(body("team-a", "low"), {**BOUND, "schedgen.io/max-priority": "urgent"}) is not None


def scheduler_for(kube):
    from schedgen.operator.config import OperatorConfig
    from schedgen.operator.result_store import ResultStore
    from schedgen.operator.scheduler import Scheduler

    cfg = OperatorConfig.from_env({})
    return Scheduler(cfg, kube, ResultStore(cfg), records=None)


async def outside_kopf(coro):
    """Run scheduler code outside the operator: kopf's event poster is not running here,
    so its posting is switched off (kopf.event needs the operator's settings)."""
    import kopf
    from kopf._core.engines import posting

    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    posting.settings_var.set(settings)
    return await coro


@pytest.mark.cluster
def test_the_scheduler_fails_a_parsejob_of_another_tenant(local_cluster, k8s_api_client):
    from kubernetes import client

    from schedgen.operator.kube import Kube

    done = local_cluster.kubectl("apply", "-f", str(Path(__file__).resolve().parents[2] / "crds"), check=False)
    assert done.returncode == 0, done.stderr
    local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    core, custom = client.CoreV1Api(k8s_api_client), client.CustomObjectsApi(k8s_api_client)
    ns = f"tm-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"schedgen.io/tenant": "team-a",
                                                               "schedgen.test": "true"}}})
    try:
        pj = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": "claims-b"},
            "spec": {"source": {"s3": {"key": "k.pdf"}}, "tenant": "team-b"}})
        kube = Kube(k8s_api_client)
        assert asyncio.run(kube.namespace_labels(ns))["schedgen.io/tenant"] == "team-a"
        assert asyncio.run(kube.namespace_labels(f"{ns}-missing")) == {}
        scheduler = scheduler_for(kube)
        assert asyncio.run(outside_kopf(scheduler._start([ParseJob.of(pj)], {}))) == []  # not admitted
        got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "claims-b")
        assert got["status"]["phase"] == "Failed", got["status"]
        assert got["status"]["error"]["reason"] == "TenantMismatch"
        assert "spec.tenant team-b is not team-a" in got["status"]["error"]["message"]
        assert client.BatchV1Api(k8s_api_client).list_namespaced_job(ns).items == []
    finally:
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        core.delete_namespace(ns)


@pytest.mark.cluster
def test_a_job_of_the_same_name_is_never_taken_for_the_runs(local_cluster, k8s_api_client, monkeypatch):
    """Job names are deterministic (runner_jobs.SINGLE.name): whoever can create Jobs in
    the namespace could pre-create one, with or without an ownerReference to the
    ParseJob. The operator creates the run's Job itself and records its uid: a name that
    still taken after a few ticks fails the ParseJob (JobNameTaken); the other Job is left alone. (With the
    operator running, a pre-made Job that names the ParseJob as its owner is deleted
    before admission: test_e2e_hygiene.py.)"""
    from kubernetes import client

    from schedgen.operator.kube import Kube
    from schedgen.operator.runner_jobs import SINGLE

    local_cluster.kubectl("apply", "-f", str(Path(__file__).resolve().parents[2] / "crds"))
    local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # presigning needs some (offline)
        monkeypatch.setenv(name, "not-used")
    core, custom = client.CoreV1Api(k8s_api_client), client.CustomObjectsApi(k8s_api_client)
    batch = client.BatchV1Api(k8s_api_client)
    ns = f"imp-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"schedgen.test": "true"}}})

    def parsejob(name: str) -> dict:
        return custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "metadata": {"name": name},
            "spec": {"source": {"s3": {"key": f"uploads/namespaces/{ns}/k.pdf"}}}})

    def suspended_job(name: str, owner: dict | None) -> dict:
        meta: dict = {"name": name}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob", "controller": True,
                                        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}]
        return batch.create_namespaced_job(ns, {"metadata": meta, "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "impostor"}]}}}})

    try:
        for name, owned in (("victim", False), ("owned", True)):
            pj = parsejob(name)
            job_name = SINGLE.name([ParseJob.of(pj)])
            suspended_job(job_name, pj if owned else None)
            scheduler = scheduler_for(Kube(k8s_api_client))
            at = {pj["metadata"]["uid"]: "2026-01-01T00:00:00.000000Z"}
            # a taken name may be an orphan this replica's watch has not seen yet: the ParseJob
            # waits a few ticks (clear_orphans adopts or deletes what it sees), then fails
            for tick in range(NAME_TAKEN_TICKS):
                assert asyncio.run(outside_kopf(scheduler._start([ParseJob.of(pj)], at))) == []  # not admitted
                got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)["status"]
                if tick < NAME_TAKEN_TICKS - 1:
                    assert got.get("phase") == "Queued" and not got.get("error"), got
            assert (got["phase"], got["error"]["reason"]) == ("Failed", "JobNameTaken"), got
            other = batch.read_namespaced_job(job_name, ns)
            assert other.spec.suspend is True  # untouched
    finally:
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        core.delete_namespace(ns)
