"""Fixtures for the upload API tests: the real local control plane (hack/localkube),
Postgres and S3 (tests/conftest.py), the API in-process (Starlette TestClient) or as a
uvicorn subprocess, and the operator with the real runner (tests/support)."""

from __future__ import annotations

import threading
import uuid

import pytest

from child_process import ROOT as _ROOT
from schedgen.parsejob import FINALIZER


@pytest.fixture(scope="session")
def crds(local_cluster):
    root = _ROOT / "crds"
    for args in (("apply", "-f", str(root)),
                 ("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")):
        done = local_cluster.kubectl(*args, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return root


@pytest.fixture(scope="module")
def api_namespace(local_cluster, k8s_api_client, crds):
    """A namespace for the in-process API tests (no operator: ParseJobs just wait).

    Per module, so its ParseJobs are gone before later tests start an operator, which
    would otherwise run them (they have no runner Secret) and skew those tests' counts."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_api_client)
    custom = client.CustomObjectsApi(k8s_api_client)
    name = f"api-fast-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true"}}})

    def release_deleted() -> None:
        """The operator's part in a deletion (the API sets its finalizer at create): let go."""
        for pj in custom.list_namespaced_custom_object("schedgen.io", "v1alpha1", name, "parsejobs")["items"]:
            held = pj["metadata"].get("finalizers") or []
            if pj["metadata"].get("deletionTimestamp") and FINALIZER in held:
                rest = [f for f in held if f != FINALIZER]  # a test's own finalizers stay
                try:
                    custom.patch_namespaced_custom_object("schedgen.io", "v1alpha1", name, "parsejobs",
                                                          pj["metadata"]["name"], {"metadata": {"finalizers": rest or None}})
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise

    stop = threading.Event()

    def releaser() -> None:
        while not stop.wait(0.1):
            try:
                release_deleted()
            except Exception:  # noqa: BLE001 - the next round tries again
                pass

    thread = threading.Thread(target=releaser, daemon=True)
    thread.start()
    yield name
    stop.set()
    thread.join()
    try:
        custom.delete_collection_namespaced_custom_object("schedgen.io", "v1alpha1", name, "parsejobs")
        release_deleted()
        core.delete_namespace(name)
    except Exception:  # noqa: BLE001
        pass


@pytest.fixture
def api_config(postgres, s3, local_cluster, api_namespace, monkeypatch):
    """Factory: an ApiConfig on the session services; keyword overrides."""
    from schedgen.api.config import ApiConfig

    for name, value in s3.credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def make(**overrides) -> ApiConfig:
        values = dict(database_url=postgres.dsn, s3_endpoint_url=s3.endpoint_url, s3_bucket=s3.bucket,
                      namespace=api_namespace, kubeconfig=str(local_cluster.kubeconfig),
                      uploads_per_minute=1000, reads_per_minute=10000, log_format="text")
        values.update(overrides)
        return ApiConfig.from_env({}, **values)

    return make


@pytest.fixture
def fresh_limits(pg_conn):
    pg_conn.execute("TRUNCATE rate_limit_windows")
    pg_conn.execute("TRUNCATE idempotency_keys")


@pytest.fixture
def admin_key(pg_conn):
    """An admin API key of tenant `default` that may use any priority."""
    from schedgen.api.backends import postgres as api_db

    return api_db.add_key_sync(pg_conn, "default", "tests", admin=True, max_priority="high")


@pytest.fixture
def make_client(api_config, fresh_limits, admin_key):
    """Factory: a TestClient on a new app (config overrides) sending `key` (default: the
    admin key of tenant `default`; None: no key); all closed at teardown."""
    from starlette.testclient import TestClient

    from schedgen.api.app import asgi

    clients = []

    def make(key: str | None = admin_key, **overrides) -> TestClient:
        client = TestClient(asgi(api_config(**overrides)), raise_server_exceptions=False,
                            headers={"X-API-Key": key} if key else None)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()
