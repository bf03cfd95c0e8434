"""The API over real HTTP without a Kubernetes cluster, for the tests that need no
kube-apiserver: uvicorn in a thread on a free port, the real Postgres (logged in as a
member of role `schedgen_api`, so grants and row-level security apply as deployed) and
the real S3 server. Only the ParseJob client is a stand-in: `MemoryParseJobs` keeps the
objects in a dict (the cluster tests in test_api.py and test_jobs_api.py use the real one).
"""

from __future__ import annotations

import copy
import datetime as dt
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from schedgen.api.backends import AlreadyExists, BackendUnavailable, NotFound


class MemoryParseJobs:
    """The `backends.kube.ParseJobs` calls the API makes, on a dict."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.objects: dict[str, dict] = {}
        self.down: str | None = None  # a message: every call fails as the real client's would
        self.kube_events: list[dict] = []  # core/v1 Event objects, as the API server lists them
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise BackendUnavailable("kubernetes", self.down)

    def start_cache(self) -> None:
        pass

    def close(self) -> None:
        pass

    def ping(self) -> None:
        self._check()

    def cached(self, name: str) -> dict | None:
        with self._lock:
            obj = self.objects.get(name)
            return copy.deepcopy(obj) if obj else None

    def get(self, name: str) -> dict:
        self._check()
        obj = self.cached(name)
        if obj is None:
            raise NotFound()
        return obj

    def create(self, body: dict) -> dict:
        self._check()
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), namespace=self.namespace,
                    creationTimestamp=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with self._lock:
            if meta["name"] in self.objects:
                raise AlreadyExists()
            self.objects[meta["name"]] = obj
        return copy.deepcopy(obj)

    def delete(self, name: str, uid: str) -> None:
        self._check()
        with self._lock:
            obj = self.objects.get(name)
            if obj is None or obj["metadata"]["uid"] != uid:
                raise NotFound()
            del self.objects[name]

    def forget(self, name: str, uid: str) -> None:
        pass

    def events(self, uid: str) -> list[dict]:
        """As the real field selector does: the Events whose involvedObject is that ParseJob."""
        self._check()
        return [copy.deepcopy(e) for e in self.kube_events
                if e["involvedObject"].get("uid") == uid and e["involvedObject"].get("kind") == "ParseJob"]

    def list_all(self) -> list[dict]:
        self._check()
        with self._lock:
            return [copy.deepcopy(o) for o in self.objects.values()]


@dataclass(frozen=True)
class JobRef:
    """A ParseJob's identity for `write_events` (schedgen.db had it before the operator's
    record_store became the one writer of records)."""
    uid: str
    namespace: str
    name: str
    tenant: str
    source_bucket: str | None
    source_key: str
    schedule_type: str = "auto"


def write_events(conn, job: JobRef, result) -> None:
    """For tests that play the operator, as the database owner: the job's row (if it has
    none yet; its phase stays as it is) and its events replaced by `result`'s."""
    from schedgen import db

    uid = uuid.UUID(str(job.uid))
    with conn.transaction():
        conn.execute("INSERT INTO parse_jobs (uid, namespace, name, tenant, schedule_type, source_bucket, source_key)"
                     " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (uid) DO NOTHING",
                     (uid, job.namespace, job.name, job.tenant, job.schedule_type, job.source_bucket, job.source_key))
        conn.execute("DELETE FROM events WHERE job_uid = %s", (uid,))
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO events ({', '.join(db.EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * 12)})",
                            [db.event_row(uid, i, e) for i, e in enumerate(result.events)])
        conn.execute("UPDATE parse_jobs SET kind = %s, event_count = %s, pages = %s, parse_seconds = %s,"
                     " updated_at = now() WHERE uid = %s",
                     (result.kind.value, len(result.events), result.pages, result.seconds, uid))


EXAM = dict(module="COS 301", activity="Exam", date="2026-06-02", start_time="08:30", venues=("IT 2-27",))


def exam_record(pg_conn, namespace: str, tenant: str, source_key: str | None = None) -> tuple[str, str]:
    """A Succeeded exam job known only from Postgres (retention deleted its ParseJob), as
    the operator records it, written by the owner: its name and uid."""
    from schedgen.models import Event, ParseResult, ScheduleKind

    uid = str(uuid.uuid4())
    ref = JobRef(uid, namespace, f"up-rec-{uid[:8]}", tenant, "b", source_key or f"k/{uid}")
    write_events(pg_conn, ref, ParseResult(ScheduleKind.EXAM, [Event(**EXAM)], pages=1, seconds=0.1))
    pg_conn.execute("UPDATE parse_jobs SET phase = 'Succeeded', attempts = 1, created_at = now() - interval '2 minutes',"
                    " started_at = now() - interval '1 minute', completed_at = now() WHERE uid = %s", (uid,))
    return ref.name, uid


def closed_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig naming a port nothing listens on: the real client is built, never used."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\n"
        "users: [{name: u, user: {token: none}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """The Gate and the app as uvicorn serves them, in this process (a thread of its own)."""

    def __init__(self, cfg, jobs: MemoryParseJobs | None = None):
        import uvicorn

        from schedgen.api.app import create_app
        from schedgen.api.context import ApiContext
        from schedgen.api.gate import Gate

        self.ctx = ApiContext(cfg)
        self.ctx.jobs.close()
        self.ctx.jobs = self.jobs = jobs or MemoryParseJobs(cfg.namespace)
        self.port = free_port()
        config = uvicorn.Config(Gate(create_app(cfg, context=self.ctx)), host="127.0.0.1", port=self.port,
                                lifespan="on", log_config=None, access_log=False, timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def multipart(data: bytes, filename: str = "s.pdf", boundary: str = "sg-boundary-7d1c") -> tuple[str, bytes]:
    """(Content-Type, body) of a form with one `file` part, built by hand for raw sockets."""
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/pdf\r\n\r\n").encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()


class SlowUpload:
    """One upload over a raw socket whose body is sent in two halves, so it can be held
    mid-body while other requests arrive."""

    def __init__(self, port: int, key: str, data: bytes):
        content_type, self.body = multipart(data)
        self.head = (f"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {len(self.body)}\r\n"
                     "Connection: close\r\n\r\n").encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send_first_half(self) -> None:
        self.sock.sendall(self.head + self.body[: len(self.body) // 2])

    def finish(self) -> tuple[int, bytes]:
        """Send the rest; the response's status and body."""
        self.sock.sendall(self.body[len(self.body) // 2:])
        chunks = []
        while chunk := self.sock.recv(65536):
            chunks.append(chunk)
        self.sock.close()
        raw = b"".join(chunks)
        return int(raw.split(b" ", 2)[1]), raw.partition(b"\r\n\r\n")[2]
