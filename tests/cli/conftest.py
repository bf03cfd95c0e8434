"""Fixtures for the client tests (the `schedgen` jobs CLI and the web page): the real API
as a uvicorn subprocess with API keys required, the operator running real runner Jobs on
the local cluster, Postgres and S3 (tests/conftest.py, tests/support)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from api_testlib import ApiProcess, api_env
from cli_testlib import cli_env

from operator_e2e import OperatorProcess, operator_env


@dataclass
class Stack:
    url: str
    key: str  # tenant key, may use priority high
    admin_key: str
    tenant: str
    namespace: str
    cluster: object
    api: ApiProcess


@pytest.fixture(scope="module")
def stack(operator_cluster, postgres, tmp_path_factory):
    """Operator + API (keys required) for one test module; stopped by pid at the end."""
    from schedgen import db
    from schedgen.api.backends import postgres as api_db

    c = operator_cluster
    tenant = f"cli-{uuid.uuid4().hex[:5]}"
    with db.connect(postgres.dsn) as conn:
        conn.execute("TRUNCATE rate_limit_windows")
        key = api_db.add_key_sync(conn, tenant, "cli tests", max_priority="high")
        admin = api_db.add_key_sync(conn, tenant, "cli tests admin", admin=True)
    c.set_runtime(maxConcurrent=10, maxPerTenant=10, admissionsPerSecond=50, admissionBurst=50,
                  guardMaxUnschedulable=-1, queuePositionIntervalSeconds=5, queuePositionMaxWrites=50)
    tmp = tmp_path_factory.mktemp("cli-stack")
    ns = c.tenant_namespace("cli")
    op = OperatorProcess(c.cluster, operator_env(c, SCHEDGEN_API_NAMESPACES=ns), tmp / "operator.log").start()
    api = None
    try:
        env = api_env(database_url=c.postgres.dsn, s3_endpoint_url=c.s3.endpoint_url,
                      s3_credentials=c.s3.credentials_for("api"), bucket=c.s3.bucket, namespace=ns,
                      kubeconfig=str(c.cluster.kubeconfig), SCHEDGEN_API_UPLOADS_PER_MINUTE=200,
                      SCHEDGEN_API_READS_PER_MINUTE=5000)
        api = ApiProcess(env, tmp / "api.log").start()
        yield Stack(api.url, key, admin, tenant, ns, c, api)
    finally:
        if api:
            api.stop()
        try:
            c.cleanup()
        finally:
            op.stop()
            if api:
                print(f"--- api log ---\n{api.log_tail(40)}")
            print(f"--- operator log ---\n{op.log_tail(40)}")


@pytest.fixture
def env_for(stack, tmp_path):
    """Factory: the CLI's environment for this stack (key: the tenant key unless given)."""
    def make(key: str | None = "default", **extra: str | None) -> dict[str, str]:
        return cli_env(tmp_path, SCHEDGEN_API_URL=stack.url,
                       SCHEDGEN_API_KEY=stack.key if key == "default" else key, **extra)
    return make
