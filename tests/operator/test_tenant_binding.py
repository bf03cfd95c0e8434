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

GROUP, VERSION, PLURAL = "schedgen.io", "v1alpha1", "parsejobs"


def body(tenant: str | None = "team-a", priority: str | None = None, ns: str = "ns-a", labels=None) -> dict:
    spec = {"source": {"s3": {"key": "k.pdf"}}}
    if tenant:
        spec["tenant"] = tenant
    if priority:
        spec["priority"] = priority
    return {"metadata": {"name": "pj", "namespace": ns, "labels": labels or {}}, "spec": spec}


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

    from schedgen.operator.config import OperatorConfig
    from schedgen.operator.kube import Kube
    from schedgen.operator.scheduler import Scheduler

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
        scheduler = Scheduler(OperatorConfig.from_env({}), kube)
        assert asyncio.run(outside_kopf(scheduler._admit_one(pj))) is None  # not admitted
        got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "claims-b")
        assert got["status"]["phase"] == "Failed", got["status"]
        assert got["status"]["error"]["reason"] == "TenantMismatch"
        assert "spec.tenant team-b is not team-a" in got["status"]["error"]["message"]
        assert client.BatchV1Api(k8s_api_client).list_namespaced_job(ns).items == []
    finally:
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
        core.delete_namespace(ns)
