"""Pytest fixtures for a real local Kubernetes control plane + node agent.

Register from the top-level conftest with ``pytest_plugins = ["localkube.pytest_plugin"]``
(needs ``hack`` on sys.path, e.g. ``pythonpath = ["hack"]`` in pytest config).

Fixtures
--------
``local_cluster`` (session)
    A started :class:`localkube.cluster.LocalCluster` with one node ``node-1`` (cpu 2,
    memory 4Gi, 110 pods). Binaries are built on first use (long!) and reused from
    ``~/.cache/schedgen``. Everything is stopped by pid at session end. Attributes:
    ``kubeconfig`` (Path), ``server``, ``add_node(name, cpu=, memory=, pods=)``,
    ``image_map`` (dict image -> {command, args, env, path_prepend}), ``api_client()``,
    ``kubectl(*args)``, ``agent_pid(node)``, ``bin(name)``, ``state_dir``,
    ``set_image(image, command, args=None, env=None, path_prepend=None)`` (running agents reload it).
``k8s_api_client`` (session)
    ``kubernetes.client.ApiClient`` authenticated as cluster admin.
``k8s_namespace`` (function)
    Name of a fresh namespace (its default ServiceAccount exists); deleted afterwards.

Run without the cluster: ``pytest -m "not cluster"``. Environment: ``SCHEDGEN_CLUSTER_IMAGE_MAP``
names a YAML file merged over the default image map; ``SCHEDGEN_CLUSTER_KEEP=1`` leaves the
cluster running after the session (state dir printed) for debugging.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

_CLUSTER = None


def _session_cluster(request, tmp_path_factory):
    global _CLUSTER
    if _CLUSTER is not None:
        return _CLUSTER
    from .cluster import LocalCluster, default_image_map

    image_map = default_image_map()
    extra = os.environ.get("SCHEDGEN_CLUSTER_IMAGE_MAP")
    if extra:
        import yaml
        with open(extra) as f:
            image_map.update(yaml.safe_load(f) or {})
    state_dir = tmp_path_factory.mktemp("localkube")
    cluster = LocalCluster(state_dir=state_dir, image_map=image_map)

    def stop():
        global _CLUSTER
        _CLUSTER = None
        if os.environ.get("SCHEDGEN_CLUSTER_KEEP"):
            print(f"\nlocal cluster left running: state dir {state_dir}, KUBECONFIG={cluster.kubeconfig}")
            return
        cluster.stop()

    # registered before start() so a half-started plane is cleaned up too
    request.config.add_cleanup(stop)
    cluster.start()
    cluster.add_node("node-1", cpu="2", memory="4Gi", pods=110)
    _CLUSTER = cluster
    return cluster


@pytest.fixture(scope="session")
def local_cluster(request, tmp_path_factory):
    return _session_cluster(request, tmp_path_factory)


@pytest.fixture(scope="session")
def k8s_api_client(local_cluster):
    api = local_cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def k8s_namespace(k8s_api_client, request):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(k8s_api_client)
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true"}}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name)
    except ApiException:
        pass
