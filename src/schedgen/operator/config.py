"""Operator settings: static ones from the environment (`OperatorConfig`, `SCHEDGEN_<FIELD>`),
runtime ones from the environment overridden by the operator's ConfigMap (`RuntimeConfig`).

Static settings (image, credentials, resource defaults) need a restart to change; an
invalid one stops the start (ConfigurationError naming it). Runtime settings
(concurrency, rate, capacity guard, retention) are re-read on every scheduling tick from
the ConfigMap `SCHEDGEN_OPERATOR_CONFIGMAP` in `SCHEDGEN_OPERATOR_NAMESPACE` (keys: the
camelCase field names), so `kubectl edit configmap` takes effect within a tick; there an
invalid value is logged and ignored (the operator keeps running) and values are clamped
to what works. See docs/operator.md for the table of settings.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from typing import Annotated, Any, Mapping

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, \
    field_validator
from pydantic_settings import SettingsConfigDict

from schedgen.models import camel_case
from schedgen.settings import Flag, LogLevel, Settings, split_list

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 50  # the runner reads at most 50 runs from its run file (runner/config.py)


def at_least(low: float, high: float | None = None) -> AfterValidator:
    return AfterValidator(lambda v: max(low, v) if high is None else min(high, max(low, v)))


class RuntimeConfig(BaseModel):
    """Settings read on every tick (ConfigMap keys are the camelCase field names)."""

    model_config = ConfigDict(frozen=True, alias_generator=camel_case, validate_by_name=True, allow_inf_nan=False)

    max_concurrent: Annotated[int, at_least(0)] = 10
    max_per_tenant: Annotated[int, at_least(0)] = 5
    admissions_per_second: Annotated[float, at_least(0.0)] = 20.0
    admission_burst: Annotated[int, at_least(1)] = 20
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
    queue_position_interval_seconds: Annotated[float, at_least(0.5)] = 10.0
    queue_position_max_writes: int = 20
    # Batch mode (batches.py): while more than `batch_threshold` ParseJobs of one tenant
    # wait in one namespace, up to `batch_size` of them share one Job (one pod parses them
    # one after another). `batch_size` 1 switches it off.
    batch_threshold: Annotated[int, at_least(0)] = 4
    batch_size: Annotated[int, at_least(1, MAX_BATCH_SIZE)] = 10
    # A full batch grows with the backlog: a quarter of the tenant's waiting ParseJobs in
    # the namespace, up to this (never below batch_size).
    batch_max_size: int = 50
    # A transient failure is retried as a new run (outcome.py), after this many seconds,
    # doubling per counted attempt (capped at 5 min); 0: at once.
    retry_backoff_seconds: Annotated[float, at_least(0.0)] = 10.0

    @field_validator("batch_max_size")
    @classmethod
    def _not_below_batch_size(cls, value: int, info: ValidationInfo) -> int:
        return min(MAX_BATCH_SIZE, max(1, info.data.get("batch_size", 1), value))

    @classmethod
    def from_sources(cls, env: Mapping[str, str], data: Mapping[str, str] | None = None) -> "RuntimeConfig":
        """`data` (the ConfigMap's) over `env` (`SCHEDGEN_<FIELD>`); invalid values are
        logged and left at their defaults."""
        data = data or {}
        raw = {name: data.get(camel_case(name), env.get("SCHEDGEN_" + name.upper())) for name in cls.model_fields}
        raw = {name: value for name, value in raw.items() if value not in (None, "")}
        try:
            return cls(**raw)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            for name in sorted(bad):
                log.warning("ignoring invalid setting %s=%r", camel_case(name), raw.get(name))
            return cls(**{name: value for name, value in raw.items() if name not in bad})

    @classmethod
    def of_configmap(cls, body: Mapping[str, Any]) -> "RuntimeConfig":
        """The operator's ConfigMap (its `data`) over the environment."""
        return cls.from_sources(os.environ, dict(body.get("data") or {}))


def parse_command(raw: Any) -> Any:
    """A JSON list, or a shell-quoted string."""
    if not isinstance(raw, str):
        return raw
    raw = raw.strip()
    return json.loads(raw) if raw.startswith("[") else shlex.split(raw)


def parse_pairs(raw: Any) -> Any:
    """`high=schedgen-high,low=schedgen-low` -> dict (blank keys or values skipped)."""
    if not isinstance(raw, str):
        return raw
    pairs = (part.split("=", 1) for part in raw.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs if k.strip() and v.strip()}


def parse_namespaces(raw: Any) -> Any:
    """`team-a, team-b` -> ("team-a", "team-b"): order kept, blanks and repeats dropped."""
    return tuple(dict.fromkeys(p for p in split_list(raw) if p)) if isinstance(raw, str) else raw


def json_setting(empty: Any) -> BeforeValidator:
    """A JSON setting (tolerations, affinity); `null` means `empty`."""

    def parse(raw: Any) -> Any:
        value = json.loads(raw) if isinstance(raw, str) else raw
        return empty if value is None else value

    return BeforeValidator(parse)


Namespaces = Annotated[tuple[str, ...], BeforeValidator(parse_namespaces)]
Pairs = Annotated[dict[str, str], BeforeValidator(parse_pairs)]


IMAGE_PULL_GRACE_SECONDS = 120.0  # a runner pod's image unavailable this long: the run fails


class OperatorConfig(Settings):
    """Static settings (environment only)."""

    model_config = SettingsConfigDict(env_prefix="SCHEDGEN_")

    namespace: str = Field("schedgen-system", validation_alias="SCHEDGEN_OPERATOR_NAMESPACE")
    configmap: str = Field("schedgen-operator", validation_alias="SCHEDGEN_OPERATOR_CONFIGMAP")
    runner_image: str = "schedgen-runner:0.1.0"
    runner_command: Annotated[tuple[str, ...], BeforeValidator(parse_command)] = ()  # (): the image's default
    image_pull_policy: str = "IfNotPresent"
    default_bucket: str = "schedgen-uploads"
    # The runner holds no secrets: it gets two presigned URLs (operator/results.py).
    # Result objects go to results/<namespace>/<uid>.json in results_bucket ("": default_bucket).
    result_max_bytes: int = 4 * 1024 * 1024  # a result object's size cap
    result_max_events: int = 5000  # a result object's event-count cap
    runner_log_level: LogLevel | None = None  # the runner Jobs' SCHEDGEN_LOG_LEVEL (None: log_level)
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
    priority_classes: Pairs = {}
    node_selector: Pairs = {}  # e.g. a dedicated runner pool
    # Runner pod placement next to node_selector (JSON in the environment, as the chart
    # passes them): a list of tolerations and an affinity object, copied verbatim.
    runner_tolerations: Annotated[tuple[dict[str, Any], ...], json_setting(())] = ()
    runner_affinity: Annotated[dict[str, Any], json_setting({})] = {}
    # Secrets (names, comma-separated) the kubelet pulls the runner image with: referenced by
    # every runner pod, so each must exist in the ParseJob's namespace (the user makes them;
    # the operator never reads or copies a Secret).
    runner_image_pull_secrets: Namespaces = ()
    # Namespaces the operator serves (comma-separated); empty: all namespaces.
    watch_namespaces: Namespaces = ()
    # Where a ParseJob's PDF may come from (admission.source_refusal): these buckets
    # (empty: default_bucket), under uploads/namespaces/<its namespace>/ only. In the API's
    # namespaces also the legacy uploads/sha256/ (ParseJobs an older API queued).
    source_buckets: Namespaces = ()
    api_namespaces: Namespaces = ()
    # The runner pods' NetworkPolicy (the chart's): when set, no runner Job is made in a
    # namespace without it (the ParseJob fails NoNetworkPolicy).
    runner_network_policy: str = ""
    metrics_port: int = 9090
    liveness_port: int = 8080
    peering_name: str = "schedgen-operator"
    peering_lifetime: int = 15
    standalone: Flag = False
    tick_seconds: float = 0.5
    records_interval_seconds: float = 1.0
    retention_interval_seconds: float = 10.0
    # How long the finalizer retries writing a deleted ParseJob's last row while Postgres
    # is unavailable before it lets the object go anyway (Warning Event RecordAbandoned).
    finalize_record_timeout_seconds: float = 300.0
    # How long a runner pod may wait for its image (ErrImagePull, ImagePullBackOff, ...)
    # before its run fails ImagePullFailed: the kubelet retries, a registry's hiccup passes.
    image_pull_grace_seconds: float = Field(IMAGE_PULL_GRACE_SECONDS, gt=0)
