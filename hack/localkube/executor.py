"""The executor: the container runtime of the simulated (KWOK) nodes, running the runner's work.

KWOK (kwok.py) makes a pod on a fake node Running, and ends it only when the pod carries the
annotations ``schedgen.io/exit-code`` and ``schedgen.io/termination-message``. The executor
stands in for the container runtime *only*: for each runner pod (label
``app.kubernetes.io/managed-by=schedgen-operator``) Running on a fake node it does what the
runner's container would do, for real, and annotates the pod with the runner's exit code and
termination message, so the pod, the Job and the operator see what they would see from a real
runner:

1. read the runner's inputs from the pod (:func:`runner_inputs`, the one place that knows how
   they are delivered: the runner container's ``env`` and its run file ``SCHEDGEN_RUN_FILE``, the
   Secret the operator made for the Job: one run's variables -- ``SCHEDGEN_SOURCE_URL``,
   ``SCHEDGEN_RESULT_URL``, ``SCHEDGEN_JOB_*`` -- per member);
2. GET each PDF from its presigned URL (S3/MinIO; a missing object or refused URL is
   ``SourceNotFound``, exit 2; anything larger than ``SCHEDGEN_MAX_BYTES`` is ``TooLarge``);
3. parse it with schedgen's own parser (``schedgen.runner.parsing.parse_pdf``, the runner's
   limits ``SCHEDGEN_MAX_PAGES`` / ``SCHEDGEN_PARSE_TIMEOUT_SECONDS``). **Parses are cached per
   content**: the key is the PDF's sha256 (with ``cache_by_document``: of its bytes up to the
   last ``%%EOF``), the schedule type and the page limit, and a cached
   outcome (events, or the typed error) is reused, with the ``seconds`` of the parse that made
   it -- a benchmark that uploads the same fixture a thousand times parses it once;
4. PUT the result object the runner PUTs -- ``{"kind", "pages", "seconds", "events": [...]}``
   with camelCase events (``Event.to_json``); in a batch, a member that fails gets the runner's
   failure document ``{"ok": false, "killed": null, "code", "message", "retry"}``;
5. annotate the pod: exit code 0 and the :class:`~schedgen.parsejob.RunnerSummary` JSON on
   success; a bad PDF exits 2 (a storage failure 1, a misconfigured pod 3) with the typed error's
   summary, as the runner does. A batch exits 0 with ``{"ok": true, "events": <members done>}``.

**Slow runs** (``member_seconds``): each member -- a single run is one -- takes at least that
long, between its parse and its PUT (a parse that takes time: a benchmark's parse time, or a test
that takes a node away mid-batch). While a pod waits, the executor stops it as its node would:

* the pod is being deleted (evicted, drained, deleted by Karpenter or by hand; deletionTimestamp
  set) or has ended: the runner's **SIGTERM** -- the member in hand gets the failure document
  runner/batch.py writes then (``Interrupted``, retry; a single run writes nothing), and the pod
  is annotated with exit code 1 and the runner's ``Interrupted`` summary, which ends it
  (kwok-stages.yaml, ``pod-terminate-runner``; without an executor a deleted runner pod ends at
  the end of its grace period, ``pod-terminate-grace``);
* its Node is gone (the machine went away): the runner is **killed** -- nothing is written,
  nothing annotated; the pod garbage collector ends the pod.

Members not reached get no object in either case, as with the runner.

What it does not do: the runner's memory limit (RLIMIT_AS) and its SIGALRM guard (parses run
in worker threads, so only the per-page deadline applies), logs.

It scales to thousands of pods: one watch on the runner pods (raw JSON, no model
deserialisation), a thread pool doing the work, one pooled HTTP client for S3 and the API
client's pool for the annotations; no process per pod. :meth:`Executor.stats` counts what it
did; :meth:`Executor.report` is the same in one line.

    >>> executor = Executor(cluster.api_client(), workers=8).start()
    >>> ...                                   # runner pods on fake nodes end as the runner's would
    >>> executor.stop(); print(executor.report())

With ``member_seconds`` every pod holds a worker thread for its whole run: give it as many
``workers`` as runner pods may run at once.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import heapq
import itertools
import json
import logging
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from schedgen.errors import (
    ConfigurationError,
    InternalError,
    Interrupted,
    MemoryLimitExceeded,
    SchedgenError,
    SourceNotFound,
    StorageUnavailable,
    TooLarge,
)
from schedgen.parsejob import EXIT_OK, EXIT_TRANSIENT, LABEL_MANAGED_BY, MANAGED_BY, RUNNER_CONTAINER, RunnerSummary

from .kwok import ANN_EXIT_CODE, ANN_TERMINATION_MESSAGE, FAKE_SELECTOR

# What the runner's SIGTERM handler writes (runner/batch.py, runner/main.py): the member in hand's
# failure document, and the pod's termination summary.
SIGTERM_MEMBER = "stopped by SIGTERM (pod deleted or evicted) mid-parse"
SIGTERM_SUMMARY = "stopped by SIGTERM before finishing (pod deleted or evicted)"

log = logging.getLogger("localkube.executor")

RUNNER_PODS = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
MAX_BATCH_ITEMS = 50  # as runner/batch.py
HTTP_TIMEOUT_SECONDS = 15.0  # as runner/storage.py
DEFAULTS = {"SCHEDGEN_MAX_BYTES": 10 * 1024 * 1024, "SCHEDGEN_MAX_PAGES": 100,
            "SCHEDGEN_PARSE_TIMEOUT_SECONDS": 60.0, "SCHEDGEN_SCHEDULE_TYPE": "auto"}
REQUIRED = ("SCHEDGEN_JOB_NAMESPACE", "SCHEDGEN_JOB_NAME", "SCHEDGEN_JOB_UID", "SCHEDGEN_TENANT",
            "SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL")


# ------------------------------------------------------------------------------ the inputs
@dataclass(frozen=True)
class Member:
    """One ParseJob's run: what the runner reads of its configuration."""

    job_uid: str
    source_url: str
    result_url: str
    schedule_type: str = "auto"
    max_bytes: int = 10 * 1024 * 1024
    max_pages: int = 100
    parse_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class RunnerInputs:
    """What a runner pod was given: one member (a single run) or several (``batch``).

    ``members`` holds each member's variables as the runner sees them (shared ones merged in);
    :func:`member` checks and types one of them (ConfigurationError, exit 3, as the runner)."""

    batch: bool
    members: tuple[Mapping[str, str], ...]
    pod: str = ""  # namespace/name, for messages


def runner_inputs(pod: Mapping[str, Any],
                  read_secret: Callable[[str, str], Mapping[str, Any] | None] = lambda ns, name: None
                  ) -> RunnerInputs:
    """The runner's inputs (presigned URLs and the rest) from a runner pod, as a dict from the API.

    The only function that knows how they reach the runner: the ``runner`` container's literal
    ``env`` values, and its run file ``SCHEDGEN_RUN_FILE`` -- a JSON list with each run's
    variables, in the Secret mounted at that file's directory, read with ``read_secret(namespace,
    name)`` (the Secret as a dict, base64 ``data``). One run is a single run, several a batch.
    Raises ConfigurationError (the runner's exit 3) when the pod has no runner container, an input
    comes from ``valueFrom`` (not read here), or the run file is missing or malformed."""
    meta = pod.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    spec = pod.get("spec") or {}
    container = next((c for c in spec.get("containers") or [] if c.get("name") == RUNNER_CONTAINER), None)
    if container is None:
        raise ConfigurationError(f"pod {name} has no container {RUNNER_CONTAINER!r}")
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "valueFrom" in var and str(var.get("name", "")).startswith("SCHEDGEN_"):
            raise ConfigurationError(f"{var['name']} comes from valueFrom, which the executor does not read")
        env[str(var.get("name"))] = str(var.get("value") or "")
    path = env.pop("SCHEDGEN_RUN_FILE", "")
    if not path:
        return RunnerInputs(batch=False, members=(env,), pod=name)
    items = _run_file(pod, container, path, read_secret)
    return RunnerInputs(batch=len(items) > 1, members=tuple({**env, **item} for item in items), pod=name)


def _run_file(pod: Mapping[str, Any], container: Mapping[str, Any], path: str,
              read_secret: Callable[[str, str], Mapping[str, Any] | None]) -> list[dict[str, str]]:
    """The runs in the Secret mounted where `path` lies (as the kubelet would mount it)."""
    directory, _, key = path.rpartition("/")
    mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == directory), None)
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    source = (volumes.get(mount.get("name")) or {}).get("secret") if mount else None
    if not source:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE {path}: no Secret is mounted at {directory}")
    secret = read_secret((pod.get("metadata") or {}).get("namespace", ""), source.get("secretName", ""))
    data = ((secret or {}).get("data") or {}).get(key)
    if data is None:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE {path} cannot be read: no Secret {source.get('secretName')}")
    try:
        items = json.loads(base64.b64decode(data))
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE is not JSON: {exc}") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS or not all(
            isinstance(i, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in i.items())
            for i in items):
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE must hold a list of 1 to {MAX_BATCH_ITEMS} objects of strings")
    return items


def member(env: Mapping[str, str]) -> Member:
    """Check one member's variables as the runner's configuration does (ConfigurationError)."""
    problems = [f"{k} is required" for k in REQUIRED if not env.get(k, "").strip()]
    for k in ("SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"):
        if env.get(k, "").strip() and urlsplit(env[k].strip()).scheme not in ("http", "https"):
            problems.append(f"{k} must be an http(s) URL")

    def number(key: str, kind: type):
        raw = env.get(key, "").strip()
        if not raw:
            return DEFAULTS[key]
        try:
            value = kind(raw)
        except ValueError:
            problems.append(f"{key}={raw!r} is not a number")
            return DEFAULTS[key]
        if value <= 0:
            problems.append(f"{key}={raw!r} must be positive")
        return value

    schedule_type = env.get("SCHEDGEN_SCHEDULE_TYPE", "").strip().lower() or "auto"
    if schedule_type not in ("auto", "lecture", "test", "exam"):
        problems.append(f"SCHEDGEN_SCHEDULE_TYPE={schedule_type!r} must be one of auto, lecture, test, exam")
    out = Member(job_uid=env.get("SCHEDGEN_JOB_UID", "").strip(), source_url=env.get("SCHEDGEN_SOURCE_URL", "").strip(),
                 result_url=env.get("SCHEDGEN_RESULT_URL", "").strip(), schedule_type=schedule_type,
                 max_bytes=number("SCHEDGEN_MAX_BYTES", int), max_pages=number("SCHEDGEN_MAX_PAGES", int),
                 parse_timeout_seconds=number("SCHEDGEN_PARSE_TIMEOUT_SECONDS", float))
    if problems:
        raise ConfigurationError("invalid runner configuration: " + "; ".join(problems))
    return out


def failure_document(error: SchedgenError) -> bytes:
    """A batch member's failure, as runner/batch.py writes it to the member's result object."""
    return json.dumps({"ok": False, "killed": None, "code": error.code, "message": error.message,
                       "retry": error.exit_code == EXIT_TRANSIENT}).encode()


def redact(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# ------------------------------------------------------------------------------ the executor
class _Stopped(Exception):
    """The pod was stopped while it ran: ``how`` is "sigterm" (deleted, evicted, ended) or
    "killed" (its node is gone)."""

    def __init__(self, how: str, done: int = 0):
        super().__init__(how)
        self.how, self.done = how, done


@dataclass
class _Parsed:
    """A cached parse: the result document and summary, or the typed error."""

    document: bytes | None = None
    summary: dict | None = None
    error: SchedgenError | None = None


class Executor:
    """Does the runner's work for runner pods Running on KWOK's fake nodes (see the module doc).

    ``api_client``: a ``kubernetes.client.ApiClient`` (e.g. ``LocalCluster.api_client()``; its
    pool should hold ``workers`` + 1 connections); ``workers``: threads doing pods at once;
    ``namespace``: watch one namespace instead of all; ``node_selector``: the nodes whose pods it
    runs (label selector); ``member_seconds``: how long each member takes at least (slow runs, see
    the module doc). Start with :meth:`start`, stop with :meth:`stop` (or use it as a context
    manager)."""

    def __init__(self, api_client, workers: int = 8, namespace: str | None = None,
                 node_selector: str = FAKE_SELECTOR, label_selector: str = RUNNER_PODS,
                 cache_by_document: bool = False, hold_seconds: float = 0.0, member_seconds: float = 0.0):
        import urllib3
        from kubernetes import client

        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.workers = workers
        self.namespace = namespace
        self.node_selector = node_selector
        self.label_selector = label_selector
        # True: the parse cache keys a PDF by its bytes up to its last %%EOF, so copies that
        # differ only in a trailing comment (bench/scale.py's distinct uploads) parse once
        self.cache_by_document = cache_by_document
        # > 0: a pod ends no sooner than this long after it was taken (a real runner pod's life:
        # container start, interpreter, parse, S3), the work itself done at once
        self.hold_seconds = hold_seconds
        self._held: list = []  # heap of (due, seq, pod, exit code, summary, taken_at)
        self._held_seq = itertools.count()
        self._held_cv = threading.Condition()
        # > 0: each member takes at least this long (parse to PUT); the pod can be stopped meanwhile
        self.member_seconds = float(member_seconds)
        self._stops: dict[str, threading.Event] = {}  # pod uid -> set when the pod is stopped
        self._node_lists = 0.0
        self.http = urllib3.PoolManager(num_pools=8, maxsize=max(4, workers), retries=False,
                                        timeout=urllib3.Timeout(connect=5, read=HTTP_TIMEOUT_SECONDS))
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._taken: set[str] = set()  # pod uids handed to a worker
        self._fake_nodes: set[str] = set()
        self._nodes_listed = 0.0
        self._cache: dict[tuple, Future] = {}
        self._counts: collections.Counter = collections.Counter()
        self._exit_codes: collections.Counter = collections.Counter()
        self._error_codes: collections.Counter = collections.Counter()
        self._latencies: list[float] = []  # seconds from taking a pod to its annotation
        self._response = None
        self.errors: collections.deque = collections.deque(maxlen=20)  # the last unexpected errors
        self.started_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Executor":
        if self._thread is not None:
            return self
        self._stopping.clear()
        self.started_at = time.monotonic()
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="executor")
        self._thread = threading.Thread(target=self._watch_loop, name="executor-watch", daemon=True)
        self._thread.start()
        self._releaser = threading.Thread(target=self._release_held, name="executor-held", daemon=True)
        self._releaser.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching, let the pods in hand finish (up to ``timeout``)."""
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the watch's read
            except Exception:  # noqa: BLE001
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._held_cv:
            self._held_cv.notify_all()
        if getattr(self, "_releaser", None) is not None:
            self._releaser.join(timeout)  # held pods end now
            self._releaser = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self._pool = None
        self.http.clear()

    def __enter__(self) -> "Executor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ what it did
    def stats(self) -> dict:
        """Counts: pods taken and finished (by exit code), members (ok/failed, by error code),
        parses and cache hits, S3 GETs/PUTs and bytes, annotation failures, watch restarts,
        and the seconds from taking a pod to annotating it (p50/p99/max)."""
        with self._lock:
            lat = sorted(self._latencies)
            out = dict(self._counts)
            out["exit_codes"] = {str(k): v for k, v in sorted(self._exit_codes.items())}
            out["member_errors"] = dict(self._error_codes)
            out["in_flight"] = out.get("pods_taken", 0) - out.get("pods_done", 0)
        if lat:
            out["pod_seconds"] = {"p50": round(lat[len(lat) // 2], 3),
                                  "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
                                  "max": round(lat[-1], 3)}
        return out

    def report(self) -> str:
        s = self.stats()
        keys = ("pods_taken", "pods_done", "in_flight", "members_ok", "members_failed", "parses", "parse_cache_hits",
                "s3_gets", "s3_puts", "annotate_retries", "annotate_failures", "watch_restarts")
        keys += tuple(k for k in ("pods_sigterm", "pods_killed", "members_interrupted") if s.get(k))
        text = ", ".join(f"{k} {s.get(k, 0)}" for k in keys)
        return (f"{text}; exit codes {s['exit_codes']}" + (f"; member errors {s['member_errors']}"
                                                            if s["member_errors"] else "")
                + (f"; seconds per pod {s['pod_seconds']}" if "pod_seconds" in s else ""))

    def wait_idle(self, timeout: float = 60.0, quiet: float = 0.5) -> dict:
        """Wait until no pod is in hand for ``quiet`` seconds; return :meth:`stats`."""
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            if self.stats()["in_flight"] == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= quiet:
                    return self.stats()
            else:
                idle_since = None
            time.sleep(0.05)
        raise TimeoutError(f"executor still busy after {timeout}s: {self.report()}")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # ------------------------------------------------------------------ watching
    def _list_call(self, **kw):
        if self.namespace:
            return self.core.list_namespaced_pod(self.namespace, label_selector=self.label_selector,
                                                 _preload_content=False, **kw)
        return self.core.list_pod_for_all_namespaces(label_selector=self.label_selector, _preload_content=False, **kw)

    def _relist(self) -> str:
        """Consider every runner pod there is; return the list's resourceVersion."""
        cont = None
        while True:
            resp = self._list_call(limit=500, **({"_continue": cont} if cont else {}))
            try:
                body = json.loads(resp.data)
            finally:
                resp.release_conn()
            for pod in body.get("items") or []:
                self._consider(pod)
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return body["metadata"]["resourceVersion"]

    def _watch_loop(self) -> None:
        from kubernetes.client.rest import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        rv = None
        while not self._stopping.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                resp = self._list_call(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                                       timeout_seconds=60, _request_timeout=(10, 90))
                self._response = resp
                try:
                    for line in iter_resp_lines(resp):
                        if self._stopping.is_set():
                            break
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        kind = event.get("type")
                        if kind == "ERROR":
                            if obj.get("code") == 410:  # too old: list again
                                rv = None
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if kind in ("ADDED", "MODIFIED"):
                            self._consider(obj)
                        elif kind == "DELETED":
                            uid = (obj.get("metadata") or {}).get("uid")
                            with self._lock:
                                self._taken.discard(uid)
                                stop = self._stops.get(uid)
                            if stop is not None:
                                stop.set()
                finally:
                    self._response = None
                    resp.close()  # a watch left mid-stream: its connection cannot be reused
                    resp.release_conn()
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                if exc.status == 410:
                    rv = None
                self._count("watch_restarts")
                self._stopping.wait(0.5)
            except Exception as exc:  # noqa: BLE001 - connection trouble: watch again
                if self._stopping.is_set():
                    break
                self._count("watch_restarts")
                self.errors.append(f"watch: {type(exc).__name__}: {exc}")
                log.warning("executor watch: %s: %s", type(exc).__name__, exc)
                self._stopping.wait(0.5)

    def _is_fake_node(self, node: str) -> bool:
        if node in self._fake_nodes:
            return True
        now = time.monotonic()
        if now - self._nodes_listed < 1.0:
            return False
        self._nodes_listed = now
        resp = self.core.list_node(label_selector=self.node_selector, _preload_content=False)
        try:
            self._fake_nodes = {n["metadata"]["name"] for n in json.loads(resp.data)["items"]}
        finally:
            resp.release_conn()
        return node in self._fake_nodes

    def _node_gone(self, node: str) -> bool:
        """The pod's node no longer exists (listed again at most once a second)."""
        now = time.monotonic()
        if now - self._node_lists >= 1.0:
            self._node_lists = now
            try:
                resp = self.core.list_node(label_selector=self.node_selector, _preload_content=False)
                try:
                    names = {n["metadata"]["name"] for n in json.loads(resp.data)["items"]}
                finally:
                    resp.release_conn()
            except Exception:  # noqa: BLE001 - the API away a moment: the node is not known gone
                return False
            with self._lock:
                self._fake_nodes = names
        return node not in self._fake_nodes

    def _consider(self, pod: dict) -> None:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        uid = meta.get("uid")
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            with self._lock:
                stop = self._stops.get(uid)
            if stop is not None:  # a pod in hand is being deleted, or ended: the runner's SIGTERM
                stop.set()
        if (status.get("phase") != "Running" or meta.get("deletionTimestamp")
                or ANN_EXIT_CODE in (meta.get("annotations") or {})):
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or not self._is_fake_node(node):
            return
        with self._lock:
            if uid in self._taken:
                return
            self._taken.add(uid)
            self._counts["pods_taken"] += 1
            self._stops[uid] = threading.Event()
        if self._pool is not None:
            self._pool.submit(self._run_pod, pod, time.monotonic())

    # ------------------------------------------------------------------ a pod
    def _run_pod(self, pod: dict, taken_at: float) -> None:
        meta = pod["metadata"]
        with self._lock:
            stop = self._stops.get(meta.get("uid")) or threading.Event()
        try:
            exit_code, summary = self.execute(pod, stop)
        except _Stopped as stopped:
            with self._lock:
                self._stops.pop(meta.get("uid"), None)
                self._counts["pods_done"] += 1
                self._counts["pods_" + stopped.how] += 1
                self._latencies.append(time.monotonic() - taken_at)
            if stopped.how == "sigterm":  # the runner exits 1 with its summary; the pod ends (pod-terminate-runner)
                self._annotate(meta, EXIT_TRANSIENT, RunnerSummary(ok=False, code=Interrupted.code,
                                                                   message=SIGTERM_SUMMARY))
            return
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the pod
            error = InternalError(f"unexpected {type(exc).__name__}: {exc}")
            exit_code, summary = error.exit_code, RunnerSummary(ok=False, code=error.code, message=error.message)
            self.errors.append(f"{meta.get('namespace')}/{meta.get('name')}: {error.message}")
            log.exception("executor: pod %s/%s", meta.get("namespace"), meta.get("name"))
        due = taken_at + self.hold_seconds
        if self.hold_seconds > 0 and due > time.monotonic():
            with self._held_cv:  # ends later, without a thread per pod
                heapq.heappush(self._held, (due, next(self._held_seq), pod, exit_code, summary, taken_at))
                self._held_cv.notify()
            return
        self._finish(pod, exit_code, summary, taken_at)

    def _release_held(self) -> None:
        """Hand each held pod back to the pool when its time has come."""
        while True:
            with self._held_cv:
                while not self._stopping.is_set() and (not self._held or self._held[0][0] > time.monotonic()):
                    self._held_cv.wait(min(0.5, max(0.0, self._held[0][0] - time.monotonic())) if self._held else 0.5)
                if self._stopping.is_set() and not self._held:
                    return
                items = []
                while self._held and (self._held[0][0] <= time.monotonic() or self._stopping.is_set()):
                    items.append(heapq.heappop(self._held))
            for _, _, pod, exit_code, summary, taken_at in items:
                if self._pool is not None:
                    self._pool.submit(self._finish, pod, exit_code, summary, taken_at)

    def _finish(self, pod: dict, exit_code: int, summary: RunnerSummary, taken_at: float) -> None:
        meta = pod["metadata"]
        self._annotate(meta, exit_code, summary)
        with self._lock:
            self._stops.pop(meta.get("uid"), None)
            self._counts["pods_done"] += 1
            self._exit_codes[exit_code] += 1
            self._latencies.append(time.monotonic() - taken_at)

    def _annotate(self, meta: Mapping[str, Any], exit_code: int, summary: RunnerSummary) -> None:
        """The runner's exit code and termination message, which end the pod (kwok-stages.yaml)."""
        body = {"metadata": {"annotations": {ANN_EXIT_CODE: str(exit_code),
                                             ANN_TERMINATION_MESSAGE: summary.to_json()}}}
        for attempt in range(5):
            try:
                resp = self.core.patch_namespaced_pod(meta["name"], meta["namespace"], body, _preload_content=False,
                                                      _content_type="application/merge-patch+json")
                resp.data  # noqa: B018 - read to the end: the connection goes back to the pool
                break
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) == 404:  # deleted meanwhile
                    self._count("pods_gone")
                    break
                self._count("annotate_retries")
                if attempt == 4:
                    self._count("annotate_failures")
                    self.errors.append(f"annotate {meta['namespace']}/{meta['name']}: {exc}")
                    break
                time.sleep(0.2 * (attempt + 1))

    def _read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A Secret as the kubelet reads it for a volume (the executor holds admin rights)."""
        try:
            resp = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            return json.loads(resp.data)
        finally:
            resp.release_conn()

    def execute(self, pod: Mapping[str, Any], stop: threading.Event | None = None) -> tuple[int, RunnerSummary]:
        """The runner's work for one pod: (exit code, termination summary). Public so a test or a
        script can run it for a pod dict without the watch. Raises _Stopped when ``stop`` is set
        (or the pod's node goes) while a member is in hand (``member_seconds``)."""
        stop = stop or threading.Event()
        node = (pod.get("spec") or {}).get("nodeName") or ""
        try:
            inputs = runner_inputs(pod, self._read_secret)
            if not inputs.batch:
                run = member(inputs.members[0])
                try:
                    summary = self._run_member(run, stop, node)
                except SchedgenError as error:
                    self._member_failed(error)
                    return error.exit_code, RunnerSummary(ok=False, code=error.code, message=error.message)
                return EXIT_OK, RunnerSummary(ok=True, **summary)
            done = 0
            for env in inputs.members:
                run = member(env)  # checked as it is reached, as runner/batch.py does
                try:
                    self._run_member(run, stop, node, batch=True)
                except _Stopped as stopped:
                    stopped.done = done
                    raise
                except SchedgenError as error:
                    self._member_failed(error)
                    try:
                        self._put(run.result_url, failure_document(error))
                    except SchedgenError as put_error:  # S3 away: the operator requeues the member
                        log.warning("could not write the failure of %s: %s", run.job_uid, put_error.message)
                done += 1
            return EXIT_OK, RunnerSummary(ok=True, kind=None, events=done, pages=None, seconds=None)
        except ConfigurationError as error:
            self._member_failed(error)
            return error.exit_code, RunnerSummary(ok=False, code=error.code, message=error.message)

    def _member_failed(self, error: SchedgenError) -> None:
        with self._lock:
            self._counts["members_failed"] += 1
            self._error_codes[error.code] += 1

    def _run_member(self, run: Member, stop: threading.Event | None = None, node: str = "",
                    batch: bool = False) -> dict:
        """GET, parse (cached), hold ``member_seconds``, PUT; returns the summary; raises the
        runner's typed errors, or _Stopped when the pod is stopped before the PUT."""
        stop = stop or threading.Event()
        if stop.is_set():
            raise _Stopped("killed" if node and self._node_gone(node) else "sigterm")
        data = self._get(run.source_url, run.max_bytes)
        parsed = self._parse(data, run)
        self._hold(run, stop, node, batch)
        if parsed.error is not None:  # a fresh instance: the cached one may be raised in other threads
            raise type(parsed.error)(parsed.error.message)
        self._put(run.result_url, parsed.document)
        self._count("members_ok")
        return dict(parsed.summary)

    def _hold(self, run: Member, stop: threading.Event, node: str, batch: bool) -> None:
        """The rest of the member's ``member_seconds``, unless the pod is stopped: its node gone
        (killed: nothing written) or the pod deleted or ended (SIGTERM: a batch member in hand
        gets the runner's ``Interrupted`` failure document, as runner/batch.py writes it)."""
        due = time.monotonic() + self.member_seconds
        while True:
            left = due - time.monotonic()
            if node and self.member_seconds > 0 and self._node_gone(node):
                raise _Stopped("killed")
            if stop.is_set():
                if batch:
                    try:
                        self._put(run.result_url, failure_document(Interrupted(SIGTERM_MEMBER)))
                        self._count("members_interrupted")
                    except SchedgenError as error:  # S3 away: no object, the operator requeues the member
                        log.warning("could not write the interruption of %s: %s", run.job_uid, error.message)
                raise _Stopped("sigterm")
            if left <= 0:
                return
            stop.wait(min(left, 0.5))

    # ------------------------------------------------------------------ S3 (presigned URLs)
    def _get(self, url: str, max_bytes: int) -> bytes:
        import urllib3

        where = redact(url)
        try:
            resp = self.http.request("GET", url, preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailable(f"S3 unreachable for {where}: {exc}") from None
        try:
            if resp.status in (403, 404):
                raise SourceNotFound(f"{where} is missing or its URL was refused (HTTP {resp.status})")
            if resp.status != 200:
                raise StorageUnavailable(f"GET {where}: HTTP {resp.status}")
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"{where} is {length} bytes; the limit is {max_bytes}")
            chunks, size = [], 0
            for chunk in resp.stream(1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"{where} grew past the limit of {max_bytes} bytes while downloading")
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailable(f"download of {where} was interrupted: {exc}") from None
        finally:
            resp.drain_conn()
            resp.release_conn()
        self._count("s3_gets")
        self._count("s3_get_bytes", size)
        return b"".join(chunks)

    def _put(self, url: str, data: bytes) -> None:
        import urllib3

        where = redact(url)
        try:
            resp = self.http.request("PUT", url, body=data, headers={"Content-Type": "application/json"})
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailable(f"S3 unreachable for {where}: {exc}") from None
        if not 200 <= resp.status < 300:
            raise StorageUnavailable(f"PUT {where}: HTTP {resp.status}")
        self._count("s3_puts")

    # ------------------------------------------------------------------ parsing (cached per content)
    def _parse(self, data: bytes, run: Member) -> _Parsed:
        content = data
        if self.cache_by_document:
            end = data.rfind(b"%%EOF")
            content = data[:end + 5] if end >= 0 else data
        key = (hashlib.sha256(content).hexdigest(), run.schedule_type, run.max_pages)
        with self._lock:
            future = self._cache.get(key)
            mine = future is None
            if mine:
                future = self._cache[key] = Future()
                self._counts["parses"] += 1
            else:
                self._counts["parse_cache_hits"] += 1
        if mine:
            future.set_result(self._parse_now(data, run))
        return future.result()

    @staticmethod
    def _parse_now(data: bytes, run: Member) -> _Parsed:
        from schedgen.runner import parsing

        limits = parsing.Limits(max_pages=run.max_pages, max_seconds=run.parse_timeout_seconds)
        try:
            with tempfile.TemporaryDirectory(prefix="schedgen-executor-") as tmp:
                pdf = Path(tmp) / "source.pdf"
                pdf.write_bytes(data)
                started = time.monotonic()
                result = parsing.parse_pdf(pdf, run.schedule_type, limits)
                if not result.seconds:
                    result.seconds = time.monotonic() - started
        except SchedgenError as error:
            return _Parsed(error=error)
        except MemoryError:
            return _Parsed(error=MemoryLimitExceeded("the PDF needs more memory than the runner's limit "
                                                     "(SCHEDGEN_MAX_MEMORY_MB)"))
        except Exception as exc:  # noqa: BLE001 - as the runner: an unforeseen failure is InternalError
            return _Parsed(error=InternalError(f"unexpected {type(exc).__name__}: {exc}"))
        summary = result.summary()
        document = {"kind": summary["kind"], "pages": summary["pages"], "seconds": summary["seconds"],
                    "events": [e.to_json() for e in result.events]}
        return _Parsed(document=json.dumps(document).encode("utf-8"), summary=summary)
