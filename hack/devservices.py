"""Real Postgres and S3 (MinIO) server processes for tests and the local demo.

Each server keeps its state (pid, port) in a JSON file under its base dir, so another
process (`python hack/devservices.py down`) can stop it later. Ports are picked free at
first start and reused on restart (so a DSN stays valid); processes are stopped by pid.

    python hack/devservices.py build                            # build MinIO once (Go module proxy)
    python hack/devservices.py up --state-dir DIR [--migrate]   # prints the env to export
    python hack/devservices.py status --state-dir DIR
    python hack/devservices.py down --state-dir DIR
"""

from __future__ import annotations

import argparse
import glob
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
        self.state_file.write_text(json.dumps({"pid": self.pid, "port": self.port, **self.info()}))

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


def postgres_bindir() -> Path:
    """`$SCHEDGEN_PG_BINDIR`, else the newest /usr/lib/postgresql/N/bin, else $PATH."""
    if os.environ.get("SCHEDGEN_PG_BINDIR"):
        return Path(os.environ["SCHEDGEN_PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries not found: `apt-get install -y postgresql` "
                       "or set SCHEDGEN_PG_BINDIR")


class PostgresServer(_Server):
    """A throw-away Postgres cluster (trust auth, fsync off) with a `schedgen` database."""

    name = "postgres"
    database = "schedgen"

    def __init__(self, base_dir: Path | str):
        super().__init__(base_dir)
        self.data_dir = self.base_dir / "pgdata"
        self.socket_dir = self.base_dir / "pgsocket"
        # Postgres refuses to run as root: run it as the `postgres` user when we are root.
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str, host: str = "127.0.0.1") -> str:
        """The DSN of `database`; `host`: the address the client reaches this machine at
        (a pod: its cluster's host address)."""
        return f"postgresql://postgres@{host}:{self.port}/{database}"

    def info(self) -> dict:
        return {"dsn": self.dsn, "data_dir": str(self.data_dir)}

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

    def start(self, timeout: float = 60) -> "PostgresServer":
        if self.running:
            return self
        bindir = postgres_bindir()
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
                check=True, capture_output=True, cwd="/", **self._as_user(),
            )
            (self.data_dir / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all all 127.0.0.1/32 trust\n"
                f"host all all {CLUSTER_HOST_NETWORKS} trust\n")
        if not (self.port and port_free(self.port)):  # keep the port (and DSN) on restart
            self.port = free_port()
        self._spawn(
            [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=*", "-c", f"unix_socket_directories={self.socket_dir}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=50"],
            cwd="/", **self._as_user(),
        )
        self._wait_ready(lambda: self._connects("postgres"), timeout)
        self._create_database()
        return self

    def _connects(self, database: str) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn_for(database), connect_timeout=1).close()
            return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                (self.database,)).fetchone():
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> None:
        """SIGINT = Postgres's "fast" shutdown (does not wait for clients to leave)."""
        super().stop(sig, timeout)


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


class S3Server(_Server):
    """MinIO: a real S3 server that checks signatures, credentials and presigned URLs.

    Its root credentials are made at first start and kept in the state file, so a
    restart (or `down` then `up`) keeps them, like the port. It listens on every
    interface (pods reach it at their cluster's host address); every request needs a
    signature by its credentials.
    """

    name = "s3"

    def __init__(self, base_dir: Path | str):
        super().__init__(base_dir)
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.access_key: str = state.get("access_key") or f"schedgen-{secrets.token_hex(4)}"
        self.secret_key: str = state.get("secret_key") or secrets.token_urlsafe(24)

    @property
    def endpoint_url(self) -> str:
        return self.endpoint_for()

    def endpoint_for(self, host: str = "127.0.0.1") -> str:
        """The endpoint as a client reaching this machine at `host` sees it (a pod: its
        cluster's host address). Presigned URLs are signed for one host."""
        return f"http://{host}:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        """The root credentials as the usual AWS_* environment variables."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def info(self) -> dict:
        return {"endpoint_url": self.endpoint_url, "access_key": self.access_key, "secret_key": self.secret_key}

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, help="required except for build")
    parser.add_argument("--migrate", action="store_true", help="up: also apply the schema")
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
        print(f"SCHEDGEN_DATABASE_URL={pg.dsn}")
        print(f"SCHEDGEN_S3_ENDPOINT_URL={s3.endpoint_url}")
        for name, value in s3.credentials.items():
            print(f"{name}={value}")
    elif args.command == "down":
        s3.stop()
        pg.stop()
        print("stopped")
    else:
        for server, where in ((pg, pg.dsn if pg.port else "-"), (s3, s3.endpoint_url if s3.port else "-")):
            print(f"{server.name}: {'running pid ' + str(server.pid) if server.running else 'stopped'} {where}")
        return 0 if pg.running and s3.running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
