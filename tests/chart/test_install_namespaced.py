"""A namespace-scoped release (`watch.namespaces`): the chart with Roles instead of
ClusterRoles, the operator watching only its namespaces, an upload through its API pod.

Its own module, so the cluster-wide release of test_install.py is uninstalled before this
one installs: a cluster-wide operator serves every namespace, this release's too (it would
take this release's ParseJobs and fail them, e.g. NoNetworkPolicy: its runner policy is not
in them). Releases share a cluster only when each is namespaced, on disjoint namespaces
(docs/deploy.md)."""

from __future__ import annotations

import uuid

import pytest
from localkube.testing import wait_for

from chartlib import GROUP, PLURAL, VERSION, api_client_for, can_i, kubectl
from test_install import Release, _base_values, _cleanup_parsejobs, _pod_facing, _upload, _wait_job, s3_secrets, status_of

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


# --- namespace-scoped install ------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced_release(local_cluster, k8s_api_client, postgres, s3, project_images, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chart-namespaced")
    suffix = uuid.uuid4().hex[:5]
    served = [f"team-a-{suffix}", f"team-b-{suffix}"]
    outside = f"team-z-{suffix}"
    dsn, s3_endpoint = _pod_facing(local_cluster, postgres, s3)
    values = _base_values(project_images, s3, s3_endpoint)
    values["operator"]["replicas"] = 1
    values.update({"watch": {"namespaces": served}, "postgres": {"existingSecret": "sgns-postgres"}})
    rel = Release(local_cluster, k8s_api_client, "sgns", values, served, workdir, extra=[outside])
    rel.create_namespaces([*served, outside])
    rel.secret(rel.namespace, "sgns-postgres", {"SCHEDGEN_DATABASE_URL": dsn})
    values["s3"].update(s3_secrets(rel, s3, "sgns"))
    rel.outside = outside
    try:
        rel.install()
        yield rel
    finally:
        _cleanup_parsejobs(rel.custom, [rel.namespace, *served, outside])
        rel.uninstall()


def test_namespaced_install_is_accepted_and_scoped(namespaced_release):
    from kubernetes import client

    rel = namespaced_release
    op = api_client_for(rel.kubeconfig(rel.operator_sa))
    api = api_client_for(rel.kubeconfig(rel.api_sa))
    for ns in [*rel.served, rel.namespace]:
        assert can_i(op, "watch", "parsejobs", group=GROUP, namespace=ns), ns
        assert can_i(op, "create", "jobs", group="batch", namespace=ns), ns
        assert can_i(op, "patch", "kopfpeerings", group="kopf.dev", namespace=ns, name="sgns-schedgen"), ns
        assert can_i(api, "create", "parsejobs", group=GROUP, namespace=ns) == (ns == rel.namespace), ns
        assert not can_i(op, "get", "secrets", namespace=ns), ns
        # the API deletes (erasure) only in its own namespace
        assert can_i(api, "delete", "parsejobs", group=GROUP, namespace=ns) == (ns == rel.namespace), ns
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


def test_namespaced_operator_pod_parses_an_upload(namespaced_release):
    rel = namespaced_release
    pods = [p.metadata.name for p in rel.pods("operator") if rel.ready(p)]
    assert len(pods) == 1
    wait_for(lambda: rel.operator_active(pods[0]) == 1.0, 60, what="the operator pod to become active")
    api = rel.api_url()
    key = rel.add_api_key("chart-ns", "--max-priority", "high")
    body = _upload(api, "UP_EXAM_SS.pdf", key)
    status = _wait_job(api, body["id"], key, timeout=180)
    assert status["phase"] == "Succeeded" and status["result"]["events"] == 5, status
    # the chart's KopfPeerings are read, never re-created (no `create` granted): no warnings
    log = kubectl(rel.cluster, "logs", "-n", rel.namespace, pods[0], "--tail=400").stdout
    assert not [line for line in log.splitlines() if "WARNING" in line and "Peering" in line], log
    assert "Falling back to a list of namespaces" not in log, log
