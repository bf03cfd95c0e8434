"""Pytest fixtures for a real local Kubernetes cluster.

Register from the top-level conftest with ``pytest_plugins = ["localkube.pytest_plugin"]``
(needs ``hack`` on sys.path, e.g. ``pythonpath = ["hack"]`` in pytest config).

Fixtures
--------
``local_cluster`` (session)
    A started :class:`localkube.cluster.LocalCluster` with one real node ``node-1`` (cpu 2,
    memory 4Gi, 110 pods): containerd + kubelet v1.37.2, kube-scheduler, kube-proxy and a
    NetworkPolicy enforcer per node (kube-network-policies, localkube.netpol), in the cluster's
    own network namespace. The session imports the pause image, the busybox test
    image (``localkube.images.BUSYBOX_REF``) and every archive named by
    ``SCHEDGEN_CLUSTER_IMAGES`` (paths or directories of ``*.tar``, separated by ``:``) into
    every node, also into nodes added later. Pods reach services on this machine at
    ``local_cluster.host_address``.

    Attributes: ``kubeconfig`` (Path), ``server``, ``host_address``,
    ``add_node(name, cpu=, memory=, pods=, labels=)``, ``import_image(archive)``,
    ``api_client()``, ``kubectl(*args)``, ``node_ip(name)``, ``node_kubeconfig(name)``,
    ``bin(name)``, ``state_dir``.
``kubelet_cluster`` (session)
    The same object as ``local_cluster`` (the name the cluster tests use).
``kwok_nodes`` (session)
    :class:`localkube.kwok.Kwok` running on ``local_cluster`` with three simulated nodes
    ``kwok-node-1..3`` (cpu 32, memory 256Gi, 110 pods; label and NoSchedule taint
    ``kwok.x-k8s.io/node=fake``); ``kwok_nodes.nodes`` lists their names. Pods land there only
    if they select and tolerate them (``localkube.kwok.RUNNER_PLACEMENT_ENV`` for the operator).
    Stopped with the cluster.
``runner_executor`` (session)
    :class:`localkube.executor.Executor` on ``local_cluster``: does the runner's work for the
    runner pods that run on the simulated nodes (``kwok_nodes``; not on the nodes of a Karpenter
    NodePool, which tests/cluster/test_autoscaling.py gives an executor of its own), so they end
    as the runner would; ``runner_executor.stats()`` has its counts. Stopped at the end of the
    session.
``local_registry`` (session)
    :class:`localkube.registry.Registry` on ``local_cluster``: an OCI registry (distribution
    v3.1.2) on the host address, TLS with the cluster CA (trusted by every node's containerd),
    htpasswd login (``credentials``, ``pull_secret(ns, name)``, ``authfile()``, ``cert_dir``,
    ``trust_env()``). Stopped with the cluster.
``k8s_api_client`` (session)
    ``kubernetes.client.ApiClient`` for ``local_cluster``, authenticated as cluster admin.
``k8s_namespace`` (function)
    Name of a fresh namespace in ``local_cluster`` (its default ServiceAccount exists); deleted
    afterwards. ``localkube.testing.make_namespace`` does the same for any api client.

Run without the cluster: ``pytest -m "not kube"`` (``-m "not cluster"``: the Python-only loop). ``SCHEDGEN_CLUSTER_KEEP=1`` leaves the
clusters running after the session (state dirs printed) for debugging.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CLUSTERS: dict = {}


def image_archives_from_env() -> list[Path]:
    out: list[Path] = []
    for part in (os.environ.get("SCHEDGEN_CLUSTER_IMAGES") or "").split(os.pathsep):
        if not part:
            continue
        p = Path(part)
        out += sorted(p.glob("*.tar")) if p.is_dir() else [p]
    return out


def _session_cluster(request, tmp_path_factory):
    if "cluster" in _CLUSTERS:
        return _CLUSTERS["cluster"]
    from .cluster import LocalCluster

    state_dir = tmp_path_factory.mktemp("localkube")
    # session=True: if this pytest process is killed, the next cluster start on the machine stops
    # this cluster and cleans up after it (unless SCHEDGEN_CLUSTER_KEEP asks to keep it)
    cluster = LocalCluster(state_dir=state_dir, session=not os.environ.get("SCHEDGEN_CLUSTER_KEEP"))

    def stop():
        _CLUSTERS.pop("cluster", None)
        if os.environ.get("SCHEDGEN_CLUSTER_KEEP"):
            print(f"\nlocal cluster left running: state dir {state_dir}, KUBECONFIG={cluster.kubeconfig}")
            return
        cluster.stop()

    # registered before start() so a half-started cluster is cleaned up too
    request.config.add_cleanup(stop)
    cluster.start()
    from .images import busybox_archive
    for archive in [busybox_archive(), *image_archives_from_env()]:
        cluster.import_image(archive)
    cluster.add_node("node-1", cpu="2", memory="4Gi", pods=110)
    _CLUSTERS["cluster"] = cluster
    return cluster


@pytest.fixture(scope="session")
def local_cluster(request, tmp_path_factory):
    return _session_cluster(request, tmp_path_factory)


@pytest.fixture(scope="session")
def kubelet_cluster(local_cluster):
    return local_cluster


@pytest.fixture(scope="session")
def kwok_nodes(local_cluster):
    """KWOK with three simulated nodes on the session's cluster (stopped with it)."""
    from .kwok import Kwok

    kwok = Kwok(local_cluster).start()
    kwok.nodes = kwok.add_fake_nodes(3)
    yield kwok
    kwok.close()  # the kwok process stops with the cluster (SCHEDGEN_CLUSTER_KEEP keeps both)


@pytest.fixture(scope="session")
def runner_executor(local_cluster, kwok_nodes):
    """The executor for runner pods on the simulated nodes, for the whole session."""
    from .executor import Executor

    from .kwok import FAKE_SELECTOR

    # not the nodes of a Karpenter NodePool: an autoscaling test runs its own executor there
    executor = Executor(local_cluster.api_client(), node_selector=f"{FAKE_SELECTOR},!karpenter.sh/nodepool").start()
    yield executor
    executor.stop()
    print(f"\nexecutor: {executor.report()}")


@pytest.fixture(scope="session")
def local_registry(local_cluster):
    """The cluster's OCI registry (TLS with the cluster CA, a login); stopped with the cluster."""
    from .registry import Registry

    return Registry(local_cluster).start()


@pytest.fixture(scope="session")
def k8s_api_client(local_cluster):
    api = local_cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def k8s_namespace(k8s_api_client, request):
    from .testing import make_namespace
    with make_namespace(k8s_api_client, request.node.name) as name:
        yield name
