"""The Job template: the batch/v1 Job every runner Job is made from.

Everything a reader needs to audit what runs in the cluster is in `runner_job`:
labels, owner references, resources (defaults, a spec may ask less, never more than the
operator's maximum), deadline, no pod retries (retries are the operator's: outcome.py),
pod failure policy, TTL, restricted security context, no service-account token and no
credential of any kind (the runner gets two short-lived presigned URLs: presign.py),
optional PriorityClass, placement (nodeSelector, tolerations, affinity) and imagePullSecrets
(by name). What differs
between a single run and a batch is in runner_jobs.py.
"""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

from schedgen.parsejob import (
    EXIT_BAD_INPUT,
    EXIT_MISCONFIGURED,
    EXIT_OOM_KILLED,
    LABEL_MANAGED_BY,
    LABEL_PRIORITY,
    LABEL_TENANT,
    MANAGED_BY,
    RUN_AS_ID,
    RUNNER_CONTAINER,
    ParseJob,
)

from .config import OperatorConfig

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

# Bad input never gets better, nor does a misconfigured runner, nor a parse the kernel
# OOM-killed at the memory limit (the same file would need the same memory): fail the Job
# after that one pod. Evictions, preemption, node drains are not the runner's fault: a new
# pod, free (listed first: an evicted pod may also end with 137).
SINGLE_RUN_POD_FAILURE_POLICY = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": RUNNER_CONTAINER, "operator": "In",
                                          "values": [EXIT_BAD_INPUT, EXIT_MISCONFIGURED, EXIT_OOM_KILLED]}},
]}


def labels_of(pj: ParseJob) -> dict[str, str]:
    """The labels every runner Job and pod carries (the watches select managed-by)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_TENANT: label_value(pj.tenant), LABEL_PRIORITY: pj.priority}


def owner_reference(pj: ParseJob, controller: bool) -> dict[str, Any]:
    ref = pj.ref()
    return {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "name": pj.name, "uid": pj.uid,
            "controller": controller, "blockOwnerDeletion": True}


def member_env(pj: ParseJob, cfg: OperatorConfig, urls: Mapping[str, str]) -> dict[str, str]:
    """The runner variables of one ParseJob (a batch runner gets one set per member)."""
    return {
        "SCHEDGEN_JOB_NAMESPACE": pj.namespace,
        "SCHEDGEN_JOB_NAME": pj.name,
        "SCHEDGEN_JOB_UID": pj.uid,
        "SCHEDGEN_TENANT": pj.tenant,
        "SCHEDGEN_SOURCE_URL": urls.get("source", ""),
        "SCHEDGEN_RESULT_URL": urls.get("result", ""),
        "SCHEDGEN_SCHEDULE_TYPE": pj.schedule_type,
        "SCHEDGEN_PARSE_TIMEOUT_SECONDS": f"{min(cfg.parse_timeout_seconds, pj.deadline_seconds):g}",
    }


# A runner pod is working from its start to its end: cluster autoscalers must not take
# its node away under it (Karpenter's consolidation, the cluster-autoscaler's scale-down).
# A node that goes anyway (deleted, drained) ends its runs as disruptions: not counted.
WORKING_POD_ANNOTATIONS = {"karpenter.sh/do-not-disrupt": "true",
                           "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}

RUN_DIR = "/run/schedgen"
RUN_FILE = "run.json"


def run_secret(*, name: str, namespace: str, labels: Mapping[str, str], owners: Sequence[Mapping[str, Any]],
               runs: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The Secret holding a runner Job's runs (member_env of each: the presigned URLs
    among them), mounted as the runner's SCHEDGEN_RUN_FILE: whoever may read Jobs and
    pods (`view`) does not see the URLs; only who may read Secrets in the namespace. Owned
    by the ParseJobs it serves (the garbage collector deletes it with the last of them)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                     "ownerReferences": [dict(o) for o in owners]},
        "stringData": {RUN_FILE: json.dumps(list(runs), separators=(",", ":"))},
    }


def runner_job(*, name: str, namespace: str, labels: Mapping[str, str], owners: Sequence[Mapping[str, Any]],
               resources: Mapping[str, Mapping[str, str]], deadline_seconds: int, priority: str,
               cfg: OperatorConfig, pod_failure_policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Job: one runner container reading its runs from the Secret of the same name
    (run_secret), with `resources`."""
    spec: dict[str, Any] = {
        "backoffLimit": 0,  # a retry is a new run, decided by the operator (outcome.conclude)
        "activeDeadlineSeconds": deadline_seconds,
        "ttlSecondsAfterFinished": cfg.job_ttl_seconds,
        "template": {"metadata": {"labels": dict(labels), "annotations": dict(WORKING_POD_ANNOTATIONS)},
                     "spec": _pod_spec(_container(resources, cfg), name, priority, cfg)},
    }
    if pod_failure_policy:
        spec["podFailurePolicy"] = copy.deepcopy(dict(pod_failure_policy))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                     "ownerReferences": [dict(o) for o in owners]},
        "spec": spec,
    }


def _container(resources: Mapping[str, Mapping[str, str]], cfg: OperatorConfig) -> dict[str, Any]:
    """Restricted: no privilege, read-only root, all capabilities dropped, only /tmp
    writable; its runs read from the mounted Secret."""
    container: dict[str, Any] = {
        "name": RUNNER_CONTAINER,
        "image": cfg.runner_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "env": [
            {"name": "SCHEDGEN_RUN_FILE", "value": f"{RUN_DIR}/{RUN_FILE}"},
            {"name": "SCHEDGEN_MAX_BYTES", "value": str(cfg.max_bytes)},
            {"name": "SCHEDGEN_MAX_PAGES", "value": str(cfg.max_pages)},
            {"name": "SCHEDGEN_MAX_MEMORY_MB", "value": str(runner_memory_mb(resources, cfg))},
            {"name": "SCHEDGEN_LOG_FORMAT", "value": cfg.log_format},
            {"name": "SCHEDGEN_LOG_LEVEL", "value": cfg.runner_log_level or cfg.log_level},
        ],
        "resources": copy.deepcopy(dict(resources)),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "run", "mountPath": RUN_DIR, "readOnly": True}],
    }
    if cfg.runner_command:
        container["command"] = list(cfg.runner_command)
    return container


def _pod_spec(container: dict[str, Any], secret: str, priority: str, cfg: OperatorConfig) -> dict[str, Any]:
    """No service-account token, no service links; placement as configured."""
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
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    {"name": "run", "secret": {"secretName": secret, "defaultMode": 0o440}}],
    }
    if priority in cfg.priority_classes:
        pod_spec["priorityClassName"] = cfg.priority_classes[priority]
    return _placed(pod_spec, cfg)


def _placed(pod_spec: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """Where the pod may run and how its node pulls the image: nodeSelector, tolerations,
    affinity, and imagePullSecrets (names only: Secrets in the ParseJob's namespace, by reference)."""
    if cfg.node_selector:
        pod_spec["nodeSelector"] = dict(cfg.node_selector)
    if cfg.runner_tolerations:
        pod_spec["tolerations"] = copy.deepcopy(list(cfg.runner_tolerations))
    if cfg.runner_affinity:
        pod_spec["affinity"] = copy.deepcopy(dict(cfg.runner_affinity))
    if cfg.runner_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in cfg.runner_image_pull_secrets]
    return pod_spec


def safe_name(text: str, limit: int) -> str:
    """`text` as a DNS-1123 label part of at most `limit` characters."""
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:limit].rstrip("-")


def label_value(value: str) -> str:
    value = re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63]
    return value.strip("-_.")
