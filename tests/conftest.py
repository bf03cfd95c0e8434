"""Shared fixtures: real Postgres and real S3 (MinIO) server processes for the session.

No in-process mocks: the services are the ones in hack/devservices.py, started once per
session on free ports and stopped by pid at the end. Missing Postgres binaries fail
the tests that need them loudly (they are part of the CI setup), never skip.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
# The local control plane (hack/localkube) and the operator e2e fixtures (tests/support).
pytest_plugins = ["localkube.pytest_plugin", "operator_fixtures"]

import devservices  # noqa: E402

TEST_BUCKET = "schedgen-test"


@pytest.fixture(scope="session")
def postgres() -> Iterator[devservices.PostgresServer]:
    """A running Postgres with database `schedgen` migrated to the latest schema."""
    from schedgen import db

    base = Path(tempfile.mkdtemp(prefix="schedgen-test-pg-"))
    server = devservices.PostgresServer(base)
    try:
        server.start()
        with db.connect(server.dsn) as conn:
            db.migrate(conn)
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_conn(postgres):
    """An autocommit connection to the session database."""
    from schedgen import db

    with db.connect(postgres.dsn) as conn:
        yield conn


@pytest.fixture
def empty_database(postgres) -> Iterator[str]:
    """DSN of a brand-new, unmigrated database (dropped afterwards)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres.dsn_for(name)
    with psycopg.connect(postgres.dsn_for("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class S3:
    """The running S3 server, a client with its credentials and the test bucket."""

    def __init__(self, server: devservices.S3Server):
        import boto3
        from botocore.config import Config

        self.server = server
        self.endpoint_url = server.endpoint_url
        self.bucket = TEST_BUCKET
        self.client = boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
            config=Config(signature_version="s3v4"),
        )
        self.credentials = server.credentials  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY

    def put(self, data: bytes | Path, key: str | None = None) -> str:
        """Upload bytes or a file under a unique key (default) and return the key."""
        key = key or f"uploads/{uuid.uuid4().hex}.pdf"
        body = data.read_bytes() if isinstance(data, Path) else data
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    base = Path(tempfile.mkdtemp(prefix="schedgen-test-s3-"))
    server = devservices.S3Server(base)
    try:
        server.start()
        store = S3(server)
        store.client.create_bucket(Bucket=TEST_BUCKET)
        yield store
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (picked free, then released)."""
    return devservices.free_port()
