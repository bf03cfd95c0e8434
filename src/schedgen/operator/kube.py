"""The few Kubernetes API calls the operator makes itself (kopf makes the watches).

A thin async facade over the official client (run in a small thread pool), so the
reconcilers read as "create this Job", "replace this status", and every request is
counted (`schedgen_operator_api_requests_total`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

import kubernetes
from kubernetes.client.rest import ApiException

from . import metrics
from schedgen.parsejob import GROUP, PLURAL, VERSION

from .status import now_rfc3339

log = logging.getLogger(__name__)

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


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
    conf.connection_pool_maxsize = 24
    return kubernetes.client.ApiClient(conf)


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, workers: int = 16):
        self.api_client = api_client or load_client_config()
        self.batch = kubernetes.client.BatchV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")
        # Events are best effort: their own small pool, never ahead of a Job or a status
        self.event_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kube-events")
        self._event_tasks: set[asyncio.Task] = set()

    async def _call(self, verb: str, fn, *args, _pool: ThreadPoolExecutor | None = None, **kwargs) -> Any:
        metrics.API_REQUESTS.labels(client="operator", method=verb).inc()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_pool or self.pool, lambda: fn(*args, **kwargs))
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(str(exc.reason)) from None
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from None
            if exc.status == 422 and "test operation" in (exc.body or ""):
                raise Conflict("transitionSeq precondition failed") from None
            raise

    # --- Jobs ---------------------------------------------------------------------

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create; True if created, False if it already existed (idempotent)."""
        try:
            await self._call("POST", self.batch.create_namespaced_job, job["metadata"]["namespace"], job)
            return True
        except Conflict:
            return False

    async def job_exists(self, namespace: str, name: str) -> bool:
        try:
            await self._call("GET", self.batch.read_namespaced_job, name, namespace)
            return True
        except NotFound:
            return False

    async def delete_job(self, namespace: str, name: str) -> None:
        body = kubernetes.client.V1DeleteOptions(propagation_policy="Background")
        try:
            await self._call("DELETE", self.batch.delete_namespaced_job, name, namespace, body=body)
        except NotFound:
            pass

    # --- ParseJobs ------------------------------------------------------------------

    async def replace_status(self, namespace: str, name: str, status: Mapping[str, Any],
                             expect_seq: int, resource_version: str | None = None) -> dict:
        """Write the whole status, only if nobody moved the ParseJob on meanwhile: a
        JSON-patch `test` of status.transitionSeq. The first status (expect_seq 0) has
        nothing to test; it is written unconditionally unless `resource_version` is
        given (not by default: kopf's finalizer patch right after creation would make
        almost every first write conflict). The single active replica and the
        scheduler's overlay keep first writes from racing each other."""
        if expect_seq > 0:
            body: Any = [
                {"op": "test", "path": "/status/transitionSeq", "value": expect_seq},
                {"op": "replace", "path": "/status", "value": dict(status)},
            ]
            ctype = JSON_PATCH
        else:
            body = {"status": dict(status)}
            if resource_version:
                body["metadata"] = {"resourceVersion": resource_version}
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

    # --- Events (fire and forget: never delays a reconcile) -----------------------------

    def emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._emit(obj, type_, reason, message))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def _emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = now_rfc3339()
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion") or f"{GROUP}/{VERSION}",
                               "kind": obj.get("kind") or "ParseJob", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid")},
            "reason": reason, "message": message[:1024], "type": type_,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "schedgen-operator"},
            "reportingComponent": "schedgen-operator", "reportingInstance": "schedgen-operator",
        }
        try:
            await self._call("POST", self.core.create_namespaced_event, meta["namespace"], event,
                             _pool=self.event_pool)
        except Exception as exc:  # noqa: BLE001 - an event is best effort
            log.debug("event %s for %s not posted: %s", reason, meta["name"], exc)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.event_pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001
            pass
