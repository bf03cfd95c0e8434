"""API configuration: one frozen dataclass read from the environment (docs/api.md)."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Mapping

from schedgen.errors import ConfigurationError
from schedgen.strict_values import coerce

TENANT_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REMOVED_REQUIRE_KEY = "SCHEDGEN_API_REQUIRE_KEY"  # keys are required unless SCHEDGEN_API_ALLOW_ANONYMOUS
ANONYMOUS_MAX_PRIORITY = "normal"
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
PUBLIC_URL = re.compile(r"^https?://[^\s?#]+$")


@dataclass(frozen=True)
class ApiConfig:
    database_url: str = ""
    s3_endpoint_url: str = ""
    s3_bucket: str = "schedgen-uploads"
    aws_region: str = "us-east-1"
    namespace: str = "default"
    kubeconfig: str = ""  # empty: $KUBECONFIG / ~/.kube/config, else in-cluster
    max_upload_bytes: int = 10 * 1024 * 1024
    uploads_per_minute: int = 5  # per API key (anonymous: per client address)
    reads_per_minute: int = 100  # per API key (anonymous: per client address)
    tenant_uploads_per_minute: int = 0  # all keys of a tenant together; 0: no tenant quota
    tenant_reads_per_minute: int = 0
    auth_failures_per_minute: int = 20  # missing or invalid keys per client address (IPv6: per /64)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    default_tenant: str = "default"
    default_deadline_seconds: int = 300  # spec.deadlineSeconds of uploaded ParseJobs
    default_max_retries: int = 3  # spec.maxRetries of uploaded ParseJobs
    request_timeout_seconds: float = 30.0
    allow_anonymous: bool = False  # requests without a key: tenant default_tenant, priority up to normal
    log_format: str = "json"
    db_pool_size: int = 10
    idempotency_ttl_seconds: int = 86400
    queue_cache_seconds: float = 2.0
    key_cache_seconds: float = 30.0
    spool_memory_bytes: int = 1024 * 1024
    watch_cache: bool = True
    results_bucket: str = ""  # where the operator puts result objects ("": s3_bucket), erased with a job
    public_url: str = ""  # base of feed URLs ("": the request's own scheme and host)
    erase_wait_seconds: float = 10.0  # DELETE waits this long for the ParseJob's finalizer
    compat_routes: bool = False  # the ScheduleGenerator web app's routes (routers/compat.py)
    compat_upload_wait_seconds: float = 20.0  # POST /api/upload waits this long for the parse
    cors_origins: tuple[str, ...] = ()  # origins allowed to call with credentials (never "*")
    metrics_port: int = 9091  # /metrics on a listener of its own (0: none); `serve` starts it
    max_upload_bytes_in_flight: int = 128 * 1024 * 1024  # uploads being received at once, per process
    feed_max_days: int = 365  # a feed's longest life (expiresInDays); 0: feeds may live forever
    feed_refresh_minutes: int = 360  # calendars' REFRESH-INTERVAL and X-PUBLISHED-TTL; 0: none
    # The operator's queue summary, `namespace/name` of its ConfigMap (schedgen.queue_summary):
    # where a waiting job's place comes from ("": none is served).
    queue_configmap: str = ""

    ENV = {
        "database_url": "SCHEDGEN_DATABASE_URL",
        "s3_endpoint_url": "SCHEDGEN_S3_ENDPOINT_URL",
        "s3_bucket": "SCHEDGEN_S3_BUCKET",
        "aws_region": "AWS_REGION",
        "namespace": "SCHEDGEN_API_NAMESPACE",
        "queue_configmap": "SCHEDGEN_API_QUEUE_CONFIGMAP",
        "kubeconfig": "KUBECONFIG",
        "max_upload_bytes": "SCHEDGEN_API_MAX_UPLOAD_BYTES",
        "uploads_per_minute": "SCHEDGEN_API_UPLOADS_PER_MINUTE",
        "reads_per_minute": "SCHEDGEN_API_READS_PER_MINUTE",
        "tenant_uploads_per_minute": "SCHEDGEN_API_TENANT_UPLOADS_PER_MINUTE",
        "tenant_reads_per_minute": "SCHEDGEN_API_TENANT_READS_PER_MINUTE",
        "auth_failures_per_minute": "SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE",
        "trusted_proxies": "SCHEDGEN_API_TRUSTED_PROXIES",
        "default_tenant": "SCHEDGEN_API_DEFAULT_TENANT",
        "default_deadline_seconds": "SCHEDGEN_API_DEFAULT_DEADLINE_SECONDS",
        "default_max_retries": "SCHEDGEN_API_DEFAULT_MAX_RETRIES",
        "request_timeout_seconds": "SCHEDGEN_API_REQUEST_TIMEOUT_SECONDS",
        "allow_anonymous": "SCHEDGEN_API_ALLOW_ANONYMOUS",
        "log_format": "SCHEDGEN_LOG_FORMAT",
        "db_pool_size": "SCHEDGEN_API_DB_POOL_SIZE",
        "idempotency_ttl_seconds": "SCHEDGEN_API_IDEMPOTENCY_TTL_SECONDS",
        "queue_cache_seconds": "SCHEDGEN_API_QUEUE_CACHE_SECONDS",
        "key_cache_seconds": "SCHEDGEN_API_KEY_CACHE_SECONDS",
        "watch_cache": "SCHEDGEN_API_WATCH_CACHE",
        "results_bucket": "SCHEDGEN_RESULTS_BUCKET",
        "public_url": "SCHEDGEN_API_PUBLIC_URL",
        "erase_wait_seconds": "SCHEDGEN_API_ERASE_WAIT_SECONDS",
        "compat_routes": "SCHEDGEN_API_COMPAT_ROUTES",
        "compat_upload_wait_seconds": "SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS",
        "cors_origins": "SCHEDGEN_API_CORS_ORIGINS",
        "metrics_port": "SCHEDGEN_API_METRICS_PORT",
        "max_upload_bytes_in_flight": "SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT",
        "feed_max_days": "SCHEDGEN_API_FEED_MAX_DAYS",
        "feed_refresh_minutes": "SCHEDGEN_API_FEED_REFRESH_MINUTES",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "ApiConfig":
        env = os.environ if env is None else env
        if env.get(REMOVED_REQUIRE_KEY):
            raise ConfigurationError(f"{REMOVED_REQUIRE_KEY} is gone: API keys are always required; set "
                                     "SCHEDGEN_API_ALLOW_ANONYMOUS=true to serve requests without a key")
        values: dict = {}
        for f in dataclasses.fields(cls):
            name = cls.ENV.get(f.name)
            raw = env.get(name) if name else None
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _coerce(f.name, f.type, raw)
            except ValueError as exc:
                raise ConfigurationError(f"{name}={raw!r} is invalid: {exc}") from None
        values.update(overrides)
        if isinstance(values.get("trusted_proxies"), str):
            values["trusted_proxies"] = parse_networks(values["trusted_proxies"])
        if isinstance(values.get("cors_origins"), str):
            values["cors_origins"] = parse_origins(values["cors_origins"])
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("request_timeout_seconds", "queue_cache_seconds", "key_cache_seconds", "erase_wait_seconds",
                     "compat_upload_wait_seconds"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigurationError(f"{self.ENV[name]} must be a finite number")
        if not TENANT_PATTERN.match(self.default_tenant) or len(self.default_tenant) > 63:
            raise ConfigurationError("SCHEDGEN_API_DEFAULT_TENANT must be a DNS label")
        if self.max_upload_bytes < 1024:
            raise ConfigurationError("SCHEDGEN_API_MAX_UPLOAD_BYTES must be at least 1024")
        self._validate_limits()
        if self.request_timeout_seconds <= 0:
            raise ConfigurationError("SCHEDGEN_API_REQUEST_TIMEOUT_SECONDS must be positive")
        if not TENANT_PATTERN.match(self.namespace) or len(self.namespace) > 63:
            raise ConfigurationError("SCHEDGEN_API_NAMESPACE must be a DNS label")
        if self.db_pool_size < 1:
            raise ConfigurationError("SCHEDGEN_API_DB_POOL_SIZE must be at least 1")
        if self.default_deadline_seconds < 1 or self.default_max_retries < 0:
            raise ConfigurationError("SCHEDGEN_API_DEFAULT_DEADLINE_SECONDS must be positive and "
                                     "SCHEDGEN_API_DEFAULT_MAX_RETRIES not negative")
        if self.idempotency_ttl_seconds < 60:
            raise ConfigurationError("SCHEDGEN_API_IDEMPOTENCY_TTL_SECONDS must be at least 60")
        if self.queue_cache_seconds < 0 or self.key_cache_seconds < 0:
            raise ConfigurationError("SCHEDGEN_API_QUEUE_CACHE_SECONDS and SCHEDGEN_API_KEY_CACHE_SECONDS "
                                     "must not be negative")
        if self.log_format not in ("json", "text"):
            raise ConfigurationError("SCHEDGEN_LOG_FORMAT must be json or text")
        if not 0 < self.erase_wait_seconds <= 120:
            raise ConfigurationError("SCHEDGEN_API_ERASE_WAIT_SECONDS must be in (0, 120]")
        if not 0 <= self.compat_upload_wait_seconds <= 60:
            raise ConfigurationError("SCHEDGEN_API_COMPAT_UPLOAD_WAIT_SECONDS must be in [0, 60]")
        if self.public_url and not PUBLIC_URL.match(self.public_url):
            raise ConfigurationError("SCHEDGEN_API_PUBLIC_URL must be an http(s) URL without a query")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigurationError("SCHEDGEN_API_METRICS_PORT must be a port (0: no metrics listener)")
        if not 0 <= self.feed_max_days <= 3650:
            raise ConfigurationError("SCHEDGEN_API_FEED_MAX_DAYS must be in [0, 3650] (0: no maximum)")
        if not (self.feed_refresh_minutes == 0 or 15 <= self.feed_refresh_minutes <= 10080):
            raise ConfigurationError("SCHEDGEN_API_FEED_REFRESH_MINUTES must be 0 (none) or in [15, 10080]")

    def _validate_limits(self) -> None:
        """Quotas and budgets: a typo must not switch protection off."""
        if self.uploads_per_minute < 1 or self.reads_per_minute < 1 or self.auth_failures_per_minute < 1:
            raise ConfigurationError("SCHEDGEN_API_UPLOADS_PER_MINUTE, SCHEDGEN_API_READS_PER_MINUTE and "
                                     "SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE must be at least 1 per minute")
        if self.tenant_uploads_per_minute < 0 or self.tenant_reads_per_minute < 0:
            raise ConfigurationError("SCHEDGEN_API_TENANT_UPLOADS_PER_MINUTE and SCHEDGEN_API_TENANT_READS_PER_MINUTE"
                                     " must not be negative (0: no tenant quota)")
        if self.max_upload_bytes_in_flight < self.max_upload_bytes:
            raise ConfigurationError("SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT must be at least "
                                     "SCHEDGEN_API_MAX_UPLOAD_BYTES (else no upload of the largest size fits)")


def parse_networks(raw: str) -> tuple:
    out = []
    for part in raw.replace(";", ",").split(","):
        part = part.strip()
        if part:
            out.append(ipaddress.ip_network(part, strict=False))
        elif raw.strip():
            raise ValueError("an empty entry in the list")
    return tuple(out)


def parse_origins(raw: str) -> tuple[str, ...]:
    """Comma-separated `scheme://host[:port]` origins; "*" is refused (credentials)."""
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            raise ValueError("an empty entry in the list")
        if not ORIGIN.match(part):
            raise ValueError(f"{part!r} is not an origin (scheme://host[:port], no path, never '*')")
        out.append(part)
    return tuple(out)


def _coerce(name: str, type_name, raw: str):
    if name == "trusted_proxies":
        return parse_networks(raw)
    if name == "cors_origins":
        return parse_origins(raw)
    return coerce(type_name, raw)
