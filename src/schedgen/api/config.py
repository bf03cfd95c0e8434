"""API settings: `SCHEDGEN_API_<FIELD>` variables (and the shared ones of
schedgen.settings), read by `ApiConfig.from_env()`; docs/api.md has the table."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from schedgen.settings import Flag, Settings, matching, split_list

TENANT_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ANONYMOUS_MAX_PRIORITY = "normal"
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
PUBLIC_URL = re.compile(r"^https?://[^\s?#]+$")
DNS_LABEL = re.compile(r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: Any) -> Any:
    """`10.0.0.0/8, 192.168.1.1` (commas or semicolons; host bits allowed) -> networks."""
    if not isinstance(raw, str):
        return raw
    parts = split_list(raw.replace(";", ","))
    if raw.strip() and not all(parts):
        raise ValueError("an empty entry in the list")
    return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)


def parse_origins(raw: Any) -> Any:
    """Comma-separated `scheme://host[:port]` origins; "*" is refused (credentials)."""
    if not isinstance(raw, str):
        return raw
    for part in (parts := split_list(raw)):
        if not part:
            raise ValueError("an empty entry in the list")
        if not ORIGIN.match(part):
            raise ValueError(f"{part!r} is not an origin (scheme://host[:port], no path, never '*')")
    return parts


DnsLabel = Annotated[str, matching(DNS_LABEL, "a DNS label")]


class ApiConfig(Settings):
    model_config = SettingsConfigDict(env_prefix="SCHEDGEN_API_")
    REMOVED = {"SCHEDGEN_API_REQUIRE_KEY": "API keys are always required; set SCHEDGEN_API_ALLOW_ANONYMOUS=true "
                                           "to serve requests without a key"}

    s3_bucket: str = Field("schedgen-uploads", validation_alias="SCHEDGEN_S3_BUCKET")
    namespace: DnsLabel = "default"
    kubeconfig: str = Field("", validation_alias="KUBECONFIG")  # "": ~/.kube/config, else in-cluster
    # The operator's queue summary, `namespace/name` of its ConfigMap (schedgen.queue_summary):
    # where a waiting job's place comes from ("": none is served).
    queue_configmap: str = ""
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    uploads_per_minute: int = Field(5, ge=1)  # per API key (anonymous: per client address)
    reads_per_minute: int = Field(100, ge=1)
    tenant_uploads_per_minute: int = Field(0, ge=0)  # all keys of a tenant together; 0: no tenant quota
    tenant_reads_per_minute: int = Field(0, ge=0)
    auth_failures_per_minute: int = Field(20, ge=1)  # missing or invalid keys per client address (IPv6: /64)
    trusted_proxies: Annotated[tuple[Network, ...], BeforeValidator(parse_networks)] = ()
    default_tenant: DnsLabel = "default"
    default_deadline_seconds: int = Field(300, ge=1)  # spec.deadlineSeconds of uploaded ParseJobs
    default_max_retries: int = Field(3, ge=0)
    request_timeout_seconds: float = Field(30.0, gt=0)
    allow_anonymous: Flag = False  # requests without a key: tenant default_tenant, priority up to normal
    db_pool_size: int = Field(10, ge=1)
    idempotency_ttl_seconds: int = Field(86400, ge=60)
    queue_cache_seconds: float = Field(2.0, ge=0)
    key_cache_seconds: float = Field(30.0, ge=0)
    spool_memory_bytes: int = Field(1024 * 1024, ge=0)  # an upload larger than this spools to TMPDIR
    watch_cache: Flag = True
    public_url: Annotated[str, matching(PUBLIC_URL, "an http(s) URL without a query")] = ""  # "": the request's
    erase_wait_seconds: float = Field(10.0, gt=0, le=120)  # DELETE waits this long for the finalizer
    compat_routes: Flag = False  # the ScheduleGenerator web app's routes (routers/compat.py)
    compat_upload_wait_seconds: float = Field(20.0, ge=0, le=60)  # POST /api/upload waits this long
    cors_origins: Annotated[tuple[str, ...], BeforeValidator(parse_origins)] = ()  # with credentials; never "*"
    metrics_port: int = Field(9091, ge=0, le=65535)  # /metrics on a listener of its own (0: none)
    max_upload_bytes_in_flight: int = 128 * 1024 * 1024  # uploads being received at once, per process
    feed_max_days: int = Field(365, ge=0, le=3650)  # a feed's longest life; 0: feeds may live forever
    feed_refresh_minutes: int = 360  # calendars' REFRESH-INTERVAL and X-PUBLISHED-TTL; 0: none

    @field_validator("feed_refresh_minutes")
    @classmethod
    def _refresh_interval(cls, minutes: int) -> int:
        if not (minutes == 0 or 15 <= minutes <= 10080):
            raise ValueError("must be 0 (none) or in [15, 10080]")
        return minutes

    @model_validator(mode="after")
    def _largest_upload_fits(self) -> "ApiConfig":
        if self.max_upload_bytes_in_flight < self.max_upload_bytes:
            raise ValueError("SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT must be at least "
                             "SCHEDGEN_API_MAX_UPLOAD_BYTES (else no upload of the largest size fits)")
        return self
