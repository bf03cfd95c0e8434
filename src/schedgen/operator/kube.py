"""The few Kubernetes API calls the operator makes itself (kopf makes the watches).

A thin async facade over the official client (run in a thread pool, `API_WORKERS` at once), so the
reconcilers read as "create this Job", "replace this status". Every API request of
the operator is counted in `schedgen_operator_api_requests_total`: ours here
(client="operator"), kopf's through the aiohttp session `counted_session` gives it
at login (client="kopf": watches, patches, peering, and the Events `emit` queues).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import aiohttp
import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from schedgen.parsejob import API_VERSION, GROUP, KIND, PLURAL, VERSION

from . import metrics

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NAMESPACE_CACHE_SECONDS = 10.0  # namespace labels (tenant binding) read at most this often
API_WORKERS = 32  # requests in flight: at a burst they wait on a busy apiserver, not on this process's CPU
API_CONNECTIONS = API_WORKERS + 8  # one per worker, some to spare: urllib3 drops any beyond (a TLS handshake each)


class Conflict(Exception):
    """A precondition failed (409, or a failed JSON-patch test): re-read and retry."""


class NotFound(Exception):
    pass


def load_client_config() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    conf = kubernetes.client.Configuration.get_default_copy()
    conf.connection_pool_maxsize = API_CONNECTIONS
    return kubernetes.client.ApiClient(conf)


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, workers: int = API_WORKERS):
        self.api_client = api_client or load_client_config()
        self.batch = kubernetes.client.BatchV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.networking = kubernetes.client.NetworkingV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        self._namespaces: dict[str, tuple[float, dict[str, str] | None]] = {}

    async def _call(self, verb: str, fn, *args, **kwargs) -> Any:
        metrics.API_REQUESTS.labels(client="operator", method=verb).inc()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(str(exc.reason)) from None
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from None
            if exc.status == 422 and "test operation" in (exc.body or ""):
                raise Conflict("transitionSeq precondition failed") from None
            raise

    # --- Jobs ---------------------------------------------------------------------

    async def create_job(self, job: Mapping[str, Any]) -> str | None:
        """Create; the new Job's uid, or None if one of that name exists already."""
        try:
            created = await self._call("POST", self.batch.create_namespaced_job, job["metadata"]["namespace"], job)
        except Conflict:
            return None
        return created.metadata.uid

    async def put_secret(self, secret: Mapping[str, Any]) -> None:
        """Create a runner Job's Secret; one of that name left by an earlier try (the
        operator stopped before creating the Job) gets the new data."""
        namespace, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        try:
            await self._call("POST", self.core.create_namespaced_secret, namespace, secret)
        except Conflict:
            await self._call("PATCH", self.core.patch_namespaced_secret, name, namespace,
                             {"stringData": secret["stringData"]})

    async def job_uid(self, namespace: str, name: str) -> str | None:
        """The uid of the Job `name`, None if there is none."""
        try:
            job = await self._call("GET", self.batch.read_namespaced_job, name, namespace)
        except NotFound:
            return None
        return job.metadata.uid

    async def delete_job(self, namespace: str, name: str) -> None:
        body = kubernetes.client.V1DeleteOptions(propagation_policy="Background")
        try:
            await self._call("DELETE", self.batch.delete_namespaced_job, name, namespace, body=body)
        except NotFound:
            pass

    # --- ParseJobs ------------------------------------------------------------------

    async def replace_status(self, namespace: str, name: str, status: Mapping[str, Any], expect_seq: int) -> dict:
        """Write the whole status, only if nobody moved the ParseJob on meanwhile: a
        JSON-patch `test` of status.transitionSeq. The first status (expect_seq 0) has
        nothing to test and is written unconditionally (a resourceVersion precondition
        would make almost every first write conflict with kopf's finalizer patch right
        after creation). The single active replica and the scheduler's overlay keep
        first writes from racing each other."""
        if expect_seq > 0:
            body: Any = [
                {"op": "test", "path": "/status/transitionSeq", "value": expect_seq},
                {"op": "replace", "path": "/status", "value": dict(status)},
            ]
            ctype = JSON_PATCH
        else:
            body = {"status": dict(status)}
            ctype = MERGE
        return await self._call(
            "PATCH", self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, body, _content_type=ctype,
        )

    async def set_status_field(self, namespace: str, name: str, expect_seq: int, field: str, value: Any) -> None:
        """Set one status field (attempts, queuePosition) without a transition."""
        body = [{"op": "test", "path": "/status/transitionSeq", "value": expect_seq},
                {"op": "add", "path": f"/status/{field}", "value": value}]
        await self._call("PATCH", self.custom.patch_namespaced_custom_object_status,
                         GROUP, VERSION, namespace, PLURAL, name, body, _content_type=JSON_PATCH)

    async def delete_parsejob(self, namespace: str, name: str, uid: str) -> None:
        body = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(uid=uid))
        try:
            await self._call("DELETE", self.custom.delete_namespaced_custom_object,
                             GROUP, VERSION, namespace, PLURAL, name, body=body)
        except (NotFound, Conflict):
            pass

    # --- namespaces ---------------------------------------------------------------------

    async def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels, cached NAMESPACE_CACHE_SECONDS; None when the operator may
        not read namespaces (the chart grants it with tenantBinding.enabled)."""
        cached = self._namespaces.get(name)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            ns = await self._call("GET", self.core.read_namespace, name)
            labels: dict[str, str] | None = dict(ns.metadata.labels or {})
        except NotFound:
            labels = {}
        except ApiException as exc:
            if exc.status != 403:
                raise
            labels = None
        self._namespaces[name] = (time.monotonic() + NAMESPACE_CACHE_SECONDS, labels)
        return labels

    async def network_policy_exists(self, namespace: str, name: str) -> bool:
        """Whether the NetworkPolicy `name` exists in `namespace` (cached like namespace
        labels: NAMESPACE_CACHE_SECONDS)."""
        key = f"netpol:{namespace}/{name}"
        cached = self._namespaces.get(key)
        if cached and cached[0] > time.monotonic():
            return bool(cached[1])
        try:
            await self._call("GET", self.networking.read_namespaced_network_policy, name, namespace)
            found = True
        except NotFound:
            found = False
        self._namespaces[key] = (time.monotonic() + NAMESPACE_CACHE_SECONDS, {"found": "1"} if found else None)
        return found

    # --- the operator's ConfigMap -----------------------------------------------------

    async def ensure_configmap(self, namespace: str, name: str, labels: Mapping[str, str]) -> None:
        try:
            await self._call("GET", self.core.read_namespaced_config_map, name, namespace)
            return
        except NotFound:
            pass
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)}, "data": {}}
        try:
            await self._call("POST", self.core.create_namespaced_config_map, namespace, body)
        except Conflict:
            pass

    async def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Set `data` on a ConfigMap (the queue summary: the chart creates it; created
        here when missing, where the operator may)."""
        try:
            await self._call("PATCH", self.core.patch_namespaced_config_map, name, namespace, {"data": dict(data)})
        except NotFound:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                    "data": dict(data)}
            await self._call("POST", self.core.create_namespaced_config_map, namespace, body)

    async def release_configmap(self, namespace: str, name: str, finalizer: str) -> bool:
        """Remove kopf's finalizer from the operator's ConfigMap (at shutdown): its daemons
        are stopped, so nothing is left for the finalizer to wait for, and a `helm
        uninstall` that deletes the ConfigMap with the operator leaves no object stuck
        Terminating. The next operator start adds it again. True if it was removed."""
        try:
            cm = await self._call("GET", self.core.read_namespaced_config_map, name, namespace)
        except NotFound:
            return False
        finalizers = list(cm.metadata.finalizers or [])
        if finalizer not in finalizers:
            return False
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": cm.metadata.resource_version},
                 {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != finalizer]}]
        try:
            await self._call("PATCH", self.core.patch_namespaced_config_map, name, namespace, patch)
        except (NotFound, Conflict):
            return False
        return True

    # --- Events ------------------------------------------------------------------------

    def emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event on a ParseJob, queued to kopf's poster (`kopf.event`, so only inside
        the operator): posted in the background, never delaying a reconcile, in order per
        object, retried with backoff."""
        meta = obj["metadata"]
        ref = {"apiVersion": obj.get("apiVersion") or API_VERSION, "kind": obj.get("kind") or KIND,
               "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")}}
        kopf.event(ref, type=type_, reason=reason, message=message)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001
            pass


def counted_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's connection (`info`, from its usual login) as an aiohttp session that counts
    each request kopf makes through it (aiohttp's public request tracing)."""
    async def count(_session: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        metrics.API_REQUESTS.labels(client="kopf", method=params.method.upper()).inc()

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    # The same session kopf would make from `info` (kopf._cogs.clients.auth.APIContext).
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env,
        trace_configs=[trace],
    )
    return kopf.AiohttpSession(server=info.server, default_namespace=info.default_namespace, priority=info.priority,
                               expiration=info.expiration, aiohttp_session=session)
