"""Fixtures for the local-cluster tests: one admin api client and a fresh namespace per test
(``kubelet_cluster``, ``kwok_nodes`` and ``runner_executor`` come from localkube.pytest_plugin)."""

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
