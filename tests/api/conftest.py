"""Fixtures for the upload API tests: the real local control plane (hack/localkube),
Postgres and S3 (tests/conftest.py), the API in-process (Starlette TestClient) or as a
uvicorn subprocess, and the operator with the real runner (tests/support)."""

from __future__ import annotations

import threading
import time
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
def api_config(postgres, s3, local_cluster, api_namespace, api_role_dsn, monkeypatch):
    """Factory: an ApiConfig on the session services, logged in to Postgres as a member of
    role `schedgen_api` (its grants and row-level security apply); keyword overrides."""
    from schedgen.api.config import ApiConfig

    for name, value in s3.credentials_for("api", api_namespace).items():  # the API's own S3 user
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def make(**overrides) -> ApiConfig:
        values = dict(database_url=api_role_dsn, s3_endpoint_url=s3.endpoint_url, s3_bucket=s3.bucket,
                      namespace=api_namespace, kubeconfig=str(local_cluster.kubeconfig),
                      uploads_per_minute=1000, reads_per_minute=10000, log_format="text")
        values.update(overrides)
        return ApiConfig.from_env({}, **values)

    return make


@pytest.fixture
def fresh_limits(pg_conn):
    pg_conn.execute("TRUNCATE rate_limit_windows")
    pg_conn.execute("TRUNCATE idempotency_keys")


RATE_TEST_SECONDS = 20  # more than any rate-limit test takes, on a loaded CI machine


@pytest.fixture
def one_rate_window():
    """Start the test early enough in a fixed rate window that all of its requests count
    in that one window: a window that ends midway resets the counts (the limiter's design)
    and a test expecting a 429 would then see a 200."""
    from schedgen.api.backends.postgres import WINDOW_SECONDS

    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS  # windows start at epoch multiples (the SQL's floor)
    if left < RATE_TEST_SECONDS:
        time.sleep(left + 0.2)


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


# --- the API without a cluster (api_harness.py) ----------------------------------------------


@pytest.fixture(scope="session")
def api_role_dsn(postgres):
    """A login in role `schedgen_api` on the session database: the API's own grants (and
    row-level security) apply, as in a deployment."""
    user = f"api_login_{uuid.uuid4().hex[:8]}"
    postgres.create_login(user, in_role="schedgen_api")  # with a password of its own (SCRAM)
    yield postgres.dsn_for(postgres.database, user=user)
    postgres.drop_login(user)


@pytest.fixture
def serve_api(postgres, s3, api_role_dsn, fresh_limits, tmp_path, monkeypatch, closed_port):
    """Factory: the API over HTTP on a free port without a cluster (ParseJobs in memory),
    logged in to Postgres as the API's role. `env`: settings as environment variables
    (read by `ApiConfig.from_env`); keywords override fields. Stopped at teardown."""
    from api_harness import ApiServer, closed_kubeconfig

    from schedgen.api.config import ApiConfig

    for name, value in s3.credentials_for("api", "api-local").items():  # the API's own S3 user
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    kubeconfig = closed_kubeconfig(tmp_path / "closed.kubeconfig", closed_port)
    servers = []

    def make(env: dict[str, str] | None = None, **overrides) -> ApiServer:
        values = dict(database_url=api_role_dsn, s3_endpoint_url=s3.endpoint_url, s3_bucket=s3.bucket,
                      namespace="api-local", kubeconfig=str(kubeconfig), watch_cache=False, log_format="text",
                      uploads_per_minute=1000, reads_per_minute=10000)
        values.update(overrides)
        server = ApiServer(ApiConfig.from_env(env or {}, **values)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_key(pg_conn):
    """Factory: a new API key of `tenant` (as `schedgen-api add-key` makes them)."""
    from schedgen.api.backends import postgres as api_db

    def make(tenant: str, **kwargs) -> str:
        return api_db.add_key_sync(pg_conn, tenant, "tests", **kwargs)

    return make
