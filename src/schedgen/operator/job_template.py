"""The Job template: the one batch/v1 Job the operator makes for an admitted ParseJob.

Everything a reader needs to audit what runs in the cluster is in `build_job`:
deterministic name, owner reference, resources (defaults, a spec may ask less, never
more than the operator's maximum), deadline, retries, pod failure policy, TTL,
restricted security context, no service-account token and no credential of any kind
(the runner gets two short-lived presigned URLs, see results.py), optional
PriorityClass and placement (nodeSelector, tolerations, affinity).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

import kopf

from schedgen.parsejob import (
    EXIT_BAD_INPUT,
    EXIT_MISCONFIGURED,
    EXIT_OOM_KILLED,
    LABEL_BATCH,
    LABEL_MANAGED_BY,
    LABEL_PARSEJOB,
    LABEL_PARSEJOB_UID,
    LABEL_PRIORITY,
    LABEL_TENANT,
    MANAGED_BY,
    RUN_AS_ID,
    RUNNER_CONTAINER,
    priority_of,
)

from .config import OperatorConfig


# --- names and effective spec values -----------------------------------------------


def job_name(parsejob_name: str, uid: str) -> str:
    """Deterministic and unique per ParseJob object: a retried handler, a restarted or
    a second operator replica all arrive at the same name (the create is idempotent),
    while a ParseJob deleted and recreated under the same name gets a new Job."""
    base = re.sub(r"[^a-z0-9-]", "-", parsejob_name.lower()).strip("-")[:48].rstrip("-") or "pj"
    suffix = uid.replace("-", "")[:8] if uid else hashlib.sha1(parsejob_name.encode()).hexdigest()[:8]
    return f"{base}-{suffix}"


def tenant_of(body: Mapping[str, Any]) -> str:
    spec = body.get("spec") or {}
    return spec.get("tenant") or body["metadata"]["namespace"]


def bucket_of(body: Mapping[str, Any], cfg: OperatorConfig) -> str:
    s3 = ((body.get("spec") or {}).get("source") or {}).get("s3") or {}
    return s3.get("bucket") or cfg.default_bucket


def key_of(body: Mapping[str, Any]) -> str:
    return (((body.get("spec") or {}).get("source") or {}).get("s3") or {}).get("key", "")


# --- quantities ---------------------------------------------------------------------

_SUFFIXES = {
    "Ki": Decimal(1024), "Mi": Decimal(1024**2), "Gi": Decimal(1024**3), "Ti": Decimal(1024**4),
    "Pi": Decimal(1024**5), "Ei": Decimal(1024**6),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity in base units (cores, bytes)."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"invalid quantity {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {value!r}") from exc
    return number * _SUFFIXES[match.group(2) or ""]


def _min_quantity(*values: str) -> str:
    return min(values, key=parse_quantity)


def effective_resources(spec_resources: Mapping[str, Any] | None, cfg: OperatorConfig) -> dict[str, dict[str, str]]:
    """Defaults, overridden by the spec downwards only: limits are capped at the
    operator's maximum, requests at the limits."""
    spec_resources = spec_resources or {}
    asked_limits = spec_resources.get("limits") or {}
    asked_requests = spec_resources.get("requests") or {}
    maximum = {"cpu": cfg.max_cpu, "memory": cfg.max_memory}
    default_limits = {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit}
    default_requests = {"cpu": cfg.cpu_request, "memory": cfg.memory_request}
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    for res in ("cpu", "memory"):
        limit = _valid(asked_limits.get(res)) or default_limits[res]
        limits[res] = _min_quantity(limit, maximum[res])
        request = _valid(asked_requests.get(res)) or default_requests[res]
        requests[res] = _min_quantity(request, limits[res])
    return {"requests": requests, "limits": limits}


def _valid(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parse_quantity(value)
    except ValueError:
        return None
    return str(value)


# An address-space limit under this would make the interpreter fail at start-up (the
# runner maps about 70 MiB before it reads a byte): below it, the container limit alone.
MIN_RLIMIT_MB = 128


def runner_memory_mb(resources: Mapping[str, Mapping[str, str]], cfg: OperatorConfig) -> int:
    """The runner's SCHEDGEN_MAX_MEMORY_MB: a fraction of the Job's memory limit (0: none)."""
    limit_mb = int(parse_quantity(resources["limits"]["memory"]) / 2**20)
    mb = int(limit_mb * cfg.runner_memory_fraction)
    return mb if mb >= MIN_RLIMIT_MB else 0


# --- the Job ------------------------------------------------------------------------


def build_job(body: Mapping[str, Any], cfg: OperatorConfig, urls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Job; `urls` are the runner's presigned {"source": GET, "result": PUT} URLs
    (results.ResultStore.urls); without them (only to learn the Job's name) they are empty."""
    urls = urls or {}
    meta = body["metadata"]
    spec = body.get("spec") or {}
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    tenant = tenant_of(body)
    priority = priority_of(body)
    deadline = int(spec.get("deadlineSeconds") or 300)
    resources = effective_resources(spec.get("resources"), cfg)
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PARSEJOB: name[:63].rstrip("-_."),
        LABEL_PARSEJOB_UID: uid,
        LABEL_TENANT: _label_value(tenant),
        LABEL_PRIORITY: priority,
    }
    env = [{"name": k, "value": v} for k, v in member_env(body, cfg, urls).items()] + [
        {"name": "SCHEDGEN_MAX_BYTES", "value": str(cfg.max_bytes)},
        {"name": "SCHEDGEN_MAX_PAGES", "value": str(cfg.max_pages)},
        {"name": "SCHEDGEN_MAX_MEMORY_MB", "value": str(runner_memory_mb(resources, cfg))},
        {"name": "SCHEDGEN_LOG_FORMAT", "value": cfg.log_format},
    ]
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": cfg.runner_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "env": env,
        "resources": resources,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if cfg.runner_command:
        container["command"] = list(cfg.runner_command)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if cfg.node_selector:
        pod_spec["nodeSelector"] = dict(cfg.node_selector)
    if cfg.runner_tolerations:
        pod_spec["tolerations"] = copy.deepcopy(list(cfg.runner_tolerations))
    if cfg.runner_affinity:
        pod_spec["affinity"] = copy.deepcopy(dict(cfg.runner_affinity))
    if priority in cfg.priority_classes:
        pod_spec["priorityClassName"] = cfg.priority_classes[priority]
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(name, uid), "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": int(spec.get("maxRetries", 3)),
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": cfg.job_ttl_seconds,
            "podFailurePolicy": {
                "rules": [
                    # Bad input never gets better: fail the Job after this one pod.
                    {"action": "FailJob", "onExitCodes": {"containerName": RUNNER_CONTAINER,
                                                          "operator": "In", "values": [EXIT_BAD_INPUT]}},
                    # Neither does a misconfigured runner (bad env).
                    {"action": "FailJob", "onExitCodes": {"containerName": RUNNER_CONTAINER,
                                                          "operator": "In", "values": [EXIT_MISCONFIGURED]}},
                    # Evictions, preemption, node drains: not the runner's fault, retry free
                    # (before the SIGKILL rule: an evicted pod may also end with 137).
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    # SIGKILL of a running parse is the kernel's OOM killer at the memory
                    # limit: the same file would need the same memory again, so no retry.
                    {"action": "FailJob", "onExitCodes": {"containerName": RUNNER_CONTAINER,
                                                          "operator": "In", "values": [EXIT_OOM_KILLED]}},
                ]
            },
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
    kopf.adopt(job, owner=dict(body), nested=None)  # ownerReference (controller), namespace
    # kopf.adopt copies the owner's labels too; ours must win.
    job["metadata"]["labels"].update(labels)
    return job


def member_env(body: Mapping[str, Any], cfg: OperatorConfig, urls: Mapping[str, str]) -> dict[str, str]:
    """The runner variables of one ParseJob (a batch Job's runner gets one set per member)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    deadline = int(spec.get("deadlineSeconds") or 300)
    return {
        "SCHEDGEN_JOB_NAMESPACE": meta["namespace"],
        "SCHEDGEN_JOB_NAME": meta["name"],
        "SCHEDGEN_JOB_UID": meta["uid"],
        "SCHEDGEN_TENANT": tenant_of(body),
        "SCHEDGEN_SOURCE_URL": urls.get("source", ""),
        "SCHEDGEN_RESULT_URL": urls.get("result", ""),
        "SCHEDGEN_SCHEDULE_TYPE": spec.get("scheduleType") or "auto",
        "SCHEDGEN_PARSE_TIMEOUT_SECONDS": f"{min(cfg.parse_timeout_seconds, deadline):g}",
    }


def batch_job_name(members: Sequence[Mapping[str, Any]]) -> str:
    """Deterministic per set of members and their transitions (a retried create arrives
    at the same name; the same members back from the queue get a new one)."""
    ids = sorted(f"{b['metadata']['uid']}:{(b.get('status') or {}).get('transitionSeq') or 0}" for b in members)
    digest = hashlib.sha1(",".join(ids).encode()).hexdigest()[:10]
    first = re.sub(r"[^a-z0-9-]", "-", members[0]["metadata"]["name"].lower()).strip("-")[:30].rstrip("-")
    return f"batch-{first or 'pj'}-{digest}"


def build_batch_job(members: Sequence[Mapping[str, Any]], cfg: OperatorConfig,
                    urls: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """One Job for several ParseJobs of one namespace and tenant (batches.py): the
    first member's Job template, with every member's variables in SCHEDGEN_BATCH (the
    runner parses them one after another, runner/batch.py), an ownerReference to each
    member (none the controller: the Job goes when its last member does), no retries
    of the pod (a member's own retries are the operator's), and a deadline that is the
    sum of the members'."""
    first = members[0]
    job = build_job(first, cfg, None)
    items = [member_env(b, cfg, urls[b["metadata"]["uid"]]) for b in members]
    meta = job["metadata"]
    meta["name"] = batch_job_name(members)
    meta["labels"][LABEL_BATCH] = "true"
    for drop in (LABEL_PARSEJOB, LABEL_PARSEJOB_UID):
        meta["labels"].pop(drop, None)
    meta["ownerReferences"] = [
        {"apiVersion": b["apiVersion"], "kind": b["kind"], "name": b["metadata"]["name"],
         "uid": b["metadata"]["uid"], "controller": False, "blockOwnerDeletion": True} for b in members]
    spec = job["spec"]
    spec["backoffLimit"] = 0
    spec.pop("podFailurePolicy", None)
    spec["activeDeadlineSeconds"] = sum(int((b.get("spec") or {}).get("deadlineSeconds") or 300) for b in members)
    spec["template"]["metadata"]["labels"] = dict(meta["labels"])
    container = spec["template"]["spec"]["containers"][0]
    per_member = set(items[0])
    container["env"] = [e for e in container["env"] if e["name"] not in per_member] + [
        {"name": "SCHEDGEN_BATCH", "value": json.dumps(items, separators=(",", ":"))}]
    return job


def _label_value(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return value.strip("-_.")
