"""Operator configuration: static settings from the environment, runtime settings
from the environment overridden by the operator's ConfigMap.

Static settings (image, credentials, resource defaults) need a restart to change.
Runtime settings (`RuntimeConfig`: concurrency, rate, capacity guard, retention) are
re-read on every scheduling tick from the ConfigMap `SCHEDGEN_OPERATOR_CONFIGMAP` in
`SCHEDGEN_OPERATOR_NAMESPACE`, so `kubectl edit configmap` takes effect within a tick.
See docs/operator.md for the table of settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from schedgen.errors import ConfigurationError
from schedgen.models import camel_case
from schedgen.strict_values import coerce

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 50  # the runner reads at most 50 runs from its run file (runner/config.py)


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings read on every tick (ConfigMap keys are the camelCase field names)."""

    max_concurrent: int = 10
    max_per_tenant: int = 5
    admissions_per_second: float = 20.0
    admission_burst: int = 20
    # Runner pods waiting for a node (admission.pod_room): while capacity is provisioned
    # (a cluster autoscaler adds nodes for Pending pods), at most this many runner pods
    # wait unplaced: a share of the backlog (`pending_runners_per_waiting` of the waiting
    # ParseJobs), at least `pending_runners_min`, at most `pending_runners_max` (< 0: no
    # bound). Enough demand for the autoscaler to scale on, never a flood.
    pending_runners_min: int = 10
    pending_runners_max: int = 100
    pending_runners_per_waiting: float = 0.1
    # Capacity guard: stop admitting while more than `guard_max_unschedulable` runner
    # pods have been Pending-Unschedulable for longer than `guard_unschedulable_seconds`
    # (no autoscaler is adding nodes). A negative `guard_max_unschedulable` disables it.
    guard_max_unschedulable: int = 0
    guard_unschedulable_seconds: float = 300.0
    retention_succeeded_seconds: float = 3600.0
    retention_failed_seconds: float = 86400.0
    retention_succeeded_count: int = 1000
    retention_failed_count: int = 5000
    # status.queuePosition is refreshed at most this often, and only for this many
    # objects per refresh (writes are the operator's scarcest resource).
    queue_position_interval_seconds: float = 10.0
    queue_position_max_writes: int = 20
    # Batch mode (batches.py): while more than `batch_threshold` ParseJobs of one tenant
    # wait in one namespace, up to `batch_size` of them share one Job (one pod parses them
    # one after another). `batch_size` 1 switches it off.
    batch_threshold: int = 4
    batch_size: int = 10
    # A full batch grows with the backlog: a quarter of the tenant's waiting ParseJobs in
    # the namespace, up to this (never below batch_size).
    batch_max_size: int = 50
    # A transient failure is retried as a new run (outcome.py), after this many seconds,
    # doubling per counted attempt (capped at 5 min); 0: at once.
    retry_backoff_seconds: float = 10.0

    @classmethod
    def from_sources(cls, env: Mapping[str, str], data: Mapping[str, str] | None = None) -> "RuntimeConfig":
        values: dict[str, Any] = {}
        data = data or {}
        for f in dataclasses.fields(cls):
            env_name = "SCHEDGEN_" + f.name.upper()
            cm_name = camel_case(f.name)
            raw = data.get(cm_name, env.get(env_name))
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = coerce(f.type, raw)
            except ValueError:
                log.warning("ignoring invalid setting %s=%r", cm_name, raw)
        cfg = cls(**values)
        return cfg.clamped()

    @classmethod
    def of_configmap(cls, body: Mapping[str, Any]) -> "RuntimeConfig":
        """The operator's ConfigMap (its `data`) over the environment."""
        return cls.from_sources(os.environ, dict(body.get("data") or {}))

    def clamped(self) -> "RuntimeConfig":
        return dataclasses.replace(
            self,
            max_concurrent=max(0, self.max_concurrent),
            max_per_tenant=max(0, self.max_per_tenant),
            admissions_per_second=max(0.0, self.admissions_per_second),
            admission_burst=max(1, self.admission_burst),
            queue_position_interval_seconds=max(0.5, self.queue_position_interval_seconds),
            batch_threshold=max(0, self.batch_threshold),
            batch_size=min(MAX_BATCH_SIZE, max(1, self.batch_size)),
            batch_max_size=min(MAX_BATCH_SIZE, max(1, self.batch_size, self.batch_max_size)),
            retry_backoff_seconds=max(0.0, self.retry_backoff_seconds),
        )


@dataclass(frozen=True)
class OperatorConfig:
    """Static settings (environment only)."""

    namespace: str = "schedgen-system"
    configmap: str = "schedgen-operator"
    runner_image: str = "schedgen-runner:0.1.0"
    runner_command: tuple[str, ...] = ()  # empty: the image's default command
    image_pull_policy: str = "IfNotPresent"
    default_bucket: str = "schedgen-uploads"
    s3_endpoint_url: str = ""
    aws_region: str = "us-east-1"
    # The runner holds no secrets: it gets two presigned URLs (operator/results.py).
    # Result objects go to results/<namespace>/<uid>.json here (empty: default_bucket).
    results_bucket: str = ""
    result_max_bytes: int = 4 * 1024 * 1024  # a result object's size cap
    result_max_events: int = 5000  # a result object's event-count cap
    database_url: str = ""  # the operator's own DSN (records)
    log_format: str = "json"
    max_bytes: int = 10 * 1024 * 1024
    max_pages: int = 100
    parse_timeout_seconds: float = 60.0  # capped to the ParseJob's deadlineSeconds
    # The runner's address-space limit (RLIMIT_AS) as a fraction of its Job's memory
    # limit, so a PDF that needs too much memory usually ends as the typed
    # MemoryLimitExceeded (exit 2) before the kernel OOM-kills the container. 0 disables;
    # limits too small for the interpreter itself (job_template.MIN_RLIMIT_MB) get none.
    runner_memory_fraction: float = 0.75
    job_ttl_seconds: int = 300
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    cpu_limit: str = "1"
    memory_limit: str = "512Mi"
    max_cpu: str = "2"
    max_memory: str = "2Gi"
    priority_classes: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)  # e.g. a dedicated runner pool
    # Runner pod placement next to node_selector (JSON in the environment, as the chart
    # passes them): a list of tolerations and an affinity object, copied verbatim.
    runner_tolerations: tuple[dict[str, Any], ...] = ()
    runner_affinity: dict[str, Any] = field(default_factory=dict)
    # Secrets (names, comma-separated) the kubelet pulls the runner image with: referenced by
    # every runner pod, so each must exist in the ParseJob's namespace (the user makes them;
    # the operator never reads or copies a Secret).
    runner_image_pull_secrets: tuple[str, ...] = ()
    # Namespaces the operator serves (comma-separated); empty: all namespaces.
    watch_namespaces: tuple[str, ...] = ()
    # Where a ParseJob's PDF may come from (admission.source_refusal): these buckets
    # (empty: default_bucket), under uploads/namespaces/<its namespace>/ only. In the API's
    # namespaces also the legacy uploads/sha256/ (ParseJobs an older API queued).
    source_buckets: tuple[str, ...] = ()
    api_namespaces: tuple[str, ...] = ()
    # The runner pods' NetworkPolicy (the chart's): when set, no runner Job is made in a
    # namespace without it (the ParseJob fails NoNetworkPolicy).
    runner_network_policy: str = ""
    metrics_port: int = 9090
    liveness_port: int = 8080
    peering_name: str = "schedgen-operator"
    peering_lifetime: int = 15
    standalone: bool = False
    tick_seconds: float = 0.5
    records_interval_seconds: float = 1.0
    retention_interval_seconds: float = 10.0
    # How long the finalizer retries writing a deleted ParseJob's last row while Postgres
    # is unavailable before it lets the object go anyway (Warning Event RecordAbandoned).
    finalize_record_timeout_seconds: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OperatorConfig":
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        special = {
            "namespace": "SCHEDGEN_OPERATOR_NAMESPACE",
            "configmap": "SCHEDGEN_OPERATOR_CONFIGMAP",
            "s3_endpoint_url": "SCHEDGEN_S3_ENDPOINT_URL",
            "aws_region": "AWS_REGION",
            "database_url": "SCHEDGEN_DATABASE_URL",
            "log_format": "SCHEDGEN_LOG_FORMAT",
        }
        for f in dataclasses.fields(cls):
            name = special.get(f.name, "SCHEDGEN_" + f.name.upper())
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _parse_field(f, name, raw)
            except ValueError as exc:  # a typo must stop the start, not switch a feature off
                raise ConfigurationError(f"{name}={raw[:200]!r} is invalid: {exc}") from None
        return cls(**values)


def _parse_field(f: dataclasses.Field, name: str, raw: str) -> Any:
    if f.name == "runner_command":
        raw = raw.strip()
        return tuple(json.loads(raw) if raw.startswith("[") else shlex.split(raw))
    if f.name in ("priority_classes", "node_selector"):
        return _parse_pairs(raw)
    if f.name == "runner_tolerations":
        return tuple(_parse_json(name, raw, list))
    if f.name == "runner_affinity":
        return _parse_json(name, raw, dict)
    if f.name in ("watch_namespaces", "source_buckets", "api_namespaces", "runner_image_pull_secrets"):
        return parse_namespaces(raw)
    return coerce(f.type, raw)



def parse_namespaces(raw: str) -> tuple[str, ...]:
    """`team-a, team-b` -> ("team-a", "team-b"): order kept, blanks and repeats dropped."""
    out: list[str] = []
    for part in raw.split(","):
        ns = part.strip()
        if ns and ns not in out:
            out.append(ns)
    return tuple(out)


def _parse_json(name: str, raw: str, kind: type) -> Any:
    """A JSON list/object setting (tolerations, affinity); `null` means unset."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None
    if value is None:
        return kind()
    if not isinstance(value, kind) or (kind is list and not all(isinstance(v, dict) for v in value)):
        expected = "a JSON list of objects" if kind is list else "a JSON object"
        raise ValueError(f"{name} must be {expected}, got {raw[:200]!r}")
    return value


def _parse_pairs(raw: str) -> dict[str, str]:
    """`high=schedgen-high,low=schedgen-low` -> dict."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip() and v.strip():
                out[k.strip()] = v.strip()
    return out
