"""Fixtures for the local-cluster tests: one admin api client + fresh namespace per kind of node.

``kubelet_cluster`` / ``agent_cluster`` come from localkube.pytest_plugin (the one matching
SCHEDGEN_NODE_MODE is the session's ``local_cluster``)."""

from __future__ import annotations

import pytest
from localkube.testing import make_namespace


@pytest.fixture(scope="session")
def kube_api(kubelet_cluster):
    api = kubelet_cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def kube_ns(kube_api, request):
    with make_namespace(kube_api, request.node.name) as name:
        yield name


@pytest.fixture(scope="session")
def agent_api(agent_cluster):
    api = agent_cluster.api_client()
    yield api
    api.close()


@pytest.fixture
def agent_ns(agent_api, request):
    with make_namespace(agent_api, request.node.name) as name:
        yield name
