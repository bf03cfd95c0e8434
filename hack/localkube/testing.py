"""Small helpers for tests that run Jobs on the local cluster."""

from __future__ import annotations

import contextlib
import time
import uuid

from kubernetes import client
from kubernetes.client.rest import ApiException


def wait_for(fn, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``fn`` until it returns a truthy value; return it (or raise TimeoutError)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - transient errors while polling
            last_exc = e
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f" (last error {last_exc})" if last_exc else ""))


@contextlib.contextmanager
def make_namespace(api: client.ApiClient, hint: str, labels: dict | None = None):
    """A fresh namespace named after ``hint`` whose default ServiceAccount exists; deleted on exit."""
    core = client.CoreV1Api(api)
    base = "".join(ch if ch.isalnum() else "-" for ch in hint.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true", **(labels or {})}}})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException:
            pass


def job_manifest(name: str, command: list[str], image: str = "busybox", backoff_limit: int = 0,
                 restart_policy: str = "Never", resources: dict | None = None, **job_spec) -> dict:
    container = {"name": "main", "image": image, "command": command}
    if resources:
        container["resources"] = resources
    spec = {"backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": restart_policy, "containers": [container],
                                  "terminationGracePeriodSeconds": 2}}}
    spec.update(job_spec)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def job_condition(api: client.ApiClient, ns: str, name: str) -> dict | None:
    """The Job's terminal condition (Complete/Failed with status True), or None."""
    job = client.BatchV1Api(api).read_namespaced_job_status(name, ns)
    for c in job.status.conditions or []:
        if c.type in ("Complete", "Failed") and c.status == "True":
            return {"type": c.type, "reason": c.reason, "message": c.message, "job": job}
    return None


def wait_job_finished(api: client.ApiClient, ns: str, name: str, timeout: float = 60.0) -> dict:
    return wait_for(lambda: job_condition(api, ns, name), timeout, what=f"job {ns}/{name} to finish")


def job_pods(api: client.ApiClient, ns: str, name: str) -> list:
    return client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={name}").items

