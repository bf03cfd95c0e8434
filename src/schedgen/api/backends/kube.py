"""The Kubernetes API: the ParseJob client and its watch-fed cache, and a ParseJob's
Events (blocking, called from a thread pool; see the package docstring)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from schedgen.parsejob import GROUP, KIND, PLURAL, VERSION

from ..config import ApiConfig
from . import AlreadyExists, BackendUnavailable, NotFound, one_line

K8S_TIMEOUT = (3, 10)  # connect, read
MAX_EVENTS = 200  # a ParseJob's Events read at most (the operator posts a handful per run)
log = logging.getLogger("schedgen.api")


def api_client(cfg: ApiConfig):
    import kubernetes

    configuration = kubernetes.client.Configuration()
    path = cfg.kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    if os.path.exists(path.split(os.pathsep)[0]):
        kubernetes.config.load_kube_config(config_file=path.split(os.pathsep)[0],
                                           client_configuration=configuration, persist_config=False)
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    configuration.retries = 1
    return kubernetes.client.ApiClient(configuration)


class ParseJobs:
    """ParseJob calls, plus (optionally) a watch-fed cache of the namespace's ParseJobs so
    status reads and the queue summary cost no API request. The cache answers only while
    its watch is healthy; otherwise every read goes to the API server directly."""

    def __init__(self, cfg: ApiConfig, client=None):
        import kubernetes

        self.namespace = cfg.namespace
        self.api_client = client or api_client(cfg)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self._cache: dict[str, dict] = {}
        self._gone: set[str] = set()  # uids this process erased: late watch events do not bring them back
        self._synced = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the watch cache ------------------------------------------------------------------

    def start_cache(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_cache, name="parsejob-watch", daemon=True)
            self._thread.start()

    def _run_cache(self) -> None:
        import kubernetes
        from kubernetes.client.rest import ApiException

        delay = 0.5
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    page = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                                     _request_timeout=(3, 30))
                    rv = page["metadata"]["resourceVersion"]
                    with self._lock:
                        self._cache = {o["metadata"]["name"]: o for o in page.get("items") or []}
                        self._synced = True
                w = kubernetes.watch.Watch()
                for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                      PLURAL, resource_version=rv, timeout_seconds=60, allow_watch_bookmarks=True,
                                      _request_timeout=(3, 75)):
                    if self._stop.is_set():
                        w.stop()
                        break
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        raise ApiException(status=(obj or {}).get("code", 500))
                    rv = obj["metadata"].get("resourceVersion") or rv
                    if kind == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    with self._lock:
                        if kind == "DELETED":
                            self._cache.pop(name, None)
                        elif obj["metadata"].get("uid") not in self._gone:
                            self._cache[name] = obj
                rv = w.resource_version or rv
                delay = 0.5
            except Exception:  # noqa: BLE001 - 410 Gone, connection loss: relist
                with self._lock:
                    self._synced = False
                rv = None
                self._stop.wait(delay)
                delay = min(delay * 2, 10)

    def cached(self, name: str) -> dict | None:
        with self._lock:
            return self._cache.get(name) if self._synced else None

    def forget(self, name: str, uid: str) -> None:
        """An erased job leaves this process's cache at once (not at the watch's pace)."""
        with self._lock:
            if len(self._gone) >= 10000:
                self._gone.clear()
            self._gone.add(uid)
            current = self._cache.get(name)
            if current is not None and current["metadata"].get("uid") == uid:
                del self._cache[name]

    def _remember(self, obj: dict) -> None:
        with self._lock:
            if self._synced:
                current = self._cache.get(obj["metadata"]["name"])
                if current is None or current["metadata"].get("uid") != obj["metadata"].get("uid"):
                    self._cache[obj["metadata"]["name"]] = obj

    def _call(self, fn, *args, **kwargs) -> Any:
        from kubernetes.client.rest import ApiException

        try:
            return fn(*args, _request_timeout=K8S_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound() from None
            if exc.status == 409:
                raise AlreadyExists() from None
            message = _api_message(exc)
            raise BackendUnavailable("kubernetes", f"Kubernetes API error {exc.status}: {message}") from None
        except Exception as exc:  # noqa: BLE001 - urllib3 connection/timeouts errors
            raise BackendUnavailable("kubernetes", f"Kubernetes API unreachable: {one_line(exc)}") from None

    def create(self, body: dict) -> dict:
        obj = self._call(self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body)
        self._remember(obj)  # read-your-write before the watch event arrives
        return obj

    def get(self, name: str) -> dict:
        """The object as the API server has it now (the cache may lag a create)."""
        return self._call(self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name)

    def delete(self, name: str, uid: str) -> None:
        """Delete the ParseJob `name` if it is still the object `uid` (the operator's
        finalizer then cancels it and records it before the object goes)."""
        import kubernetes

        body = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=uid))
        self._call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name,
                   body=body)

    def list_all(self) -> list[dict]:
        with self._lock:
            if self._synced:
                return list(self._cache.values())
        items: list[dict] = []
        token = None
        while True:
            kwargs = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            page = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                              PLURAL, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def events(self, uid: str) -> list[dict]:
        """The core/v1 Events about the ParseJob `uid` (a deleted and re-created ParseJob
        of the same name is another object: its Events are not these), as the API server
        has them; the caller orders and shapes them. Needs `list` on events in the
        namespace (the chart's API Role)."""
        selector = f"involvedObject.uid={uid},involvedObject.kind={KIND}"
        response = self._call(self.core.list_namespaced_event, self.namespace, field_selector=selector,
                              limit=MAX_EVENTS, _preload_content=False)
        try:
            return list(json.loads(response.data).get("items") or [])
        except (ValueError, AttributeError) as exc:
            raise BackendUnavailable("kubernetes", f"Kubernetes API: unreadable Event list: {one_line(exc)}") from None

    def ping(self) -> None:
        self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, limit=1)

    def close(self) -> None:
        self._stop.set()
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001
            pass


def _api_message(exc) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:  # noqa: BLE001
        return str(exc.reason)



class QueueSummary:
    """The operator's published queue (schedgen.queue_summary), read at most every
    `seconds`; None when none is configured, readable or published (no place is shown)."""

    def __init__(self, cfg: ApiConfig, client=None, seconds: float = 2.0):
        import kubernetes

        namespace, _, name = cfg.queue_configmap.partition("/")
        self.where = (namespace, name) if name else None
        self.core = kubernetes.client.CoreV1Api(client or api_client(cfg)) if self.where else None
        self.seconds = seconds
        self._cached: tuple[float, dict | None] = (float("-inf"), None)
        self._lock = threading.Lock()

    def data(self) -> dict | None:
        import kubernetes

        if self.where is None:
            return None
        with self._lock:
            at, data = self._cached
            if time.monotonic() - at < self.seconds:
                return data
            try:
                cm = self.core.read_namespaced_config_map(self.where[1], self.where[0])
                data = dict(cm.data or {})
            except (kubernetes.client.ApiException, OSError) as exc:
                log.debug("the queue summary is not readable: %s", exc)
                data = None
            self._cached = (time.monotonic(), data)
            return data
