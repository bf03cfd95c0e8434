"""The runner's configuration, read once from environment variables.

The operator sets these on the Job's container. Everything is validated up front so a
misconfigured Job fails at once with `ConfigurationError` (exit 3) listing every
problem, instead of failing half way through.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from schedgen.errors import ConfigurationError
from schedgen.parsejob import DEFAULT_SCHEDULE_TYPE, SCHEDULE_TYPES

LOG_FORMATS = ("json", "text")
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class RunnerConfig:
    job_namespace: str
    """`SCHEDGEN_JOB_NAMESPACE` (required): namespace of the ParseJob."""
    job_name: str
    """`SCHEDGEN_JOB_NAME` (required): name of the ParseJob."""
    job_uid: str
    """`SCHEDGEN_JOB_UID` (required): the ParseJob's metadata.uid (a UUID), in every log line."""
    tenant: str
    """`SCHEDGEN_TENANT` (required): tenant that owns the job, for the logs."""
    source_url: str
    """`SCHEDGEN_SOURCE_URL` (required): presigned GET URL of the uploaded PDF (http/https)."""
    result_url: str
    """`SCHEDGEN_RESULT_URL` (required): presigned PUT URL of the result object; the runner
    writes its summary and events there as one JSON document. The runner holds no
    credentials: these two short-lived URLs are all it can reach."""
    schedule_type: str = DEFAULT_SCHEDULE_TYPE
    """`SCHEDGEN_SCHEDULE_TYPE` (one of parsejob.SCHEDULE_TYPES, default `auto`): expected
    schedule kind; `auto` takes the first table header that names a known kind."""
    max_bytes: int = 10 * 1024 * 1024
    """`SCHEDGEN_MAX_BYTES` (default 10485760 = 10 MiB): larger objects are rejected
    (`TooLarge`) by their Content-Length, and the download is cut off past it."""
    max_pages: int = 100
    """`SCHEDGEN_MAX_PAGES` (default 100): more pages fail with `TooManyPages`."""
    parse_timeout_seconds: float = 60.0
    """`SCHEDGEN_PARSE_TIMEOUT_SECONDS` (default 60): parse time budget (`ParseTimeout`);
    also enforced by a hard SIGALRM guard in case the PDF library hangs in one page."""
    max_memory_mb: int = 512
    """`SCHEDGEN_MAX_MEMORY_MB` (default 512, 0 disables): address-space limit (RLIMIT_AS)
    of the runner process, so a pathological PDF fails with `MemoryLimitExceeded`
    instead of pushing the node into OOM."""
    termination_log: str = DEFAULT_TERMINATION_LOG
    """`SCHEDGEN_TERMINATION_LOG`, else `TERMINATION_MESSAGE_PATH`, else
    `/dev/termination-log`: file receiving the JSON result summary (at most 4096 bytes)."""
    log_format: str = "json"
    """`SCHEDGEN_LOG_FORMAT` (`json`|`text`, default `json`): stderr log format; json is
    one object per line with ts, level, msg, job, code."""


RUN_FILE_MAX_BYTES = 1024 * 1024
MAX_MEMBERS = 50


def members(env: Mapping[str, str] | None = None) -> list[dict[str, str]] | None:
    """The runs of this pod, from `SCHEDGEN_RUN_FILE` (the operator's per-Job Secret,
    mounted as a file, so reading the Job or pod does not reveal the presigned URLs): a
    JSON list of 1 to 50 objects of strings, each the per-ParseJob variables of one run
    (SCHEDGEN_JOB_*, SCHEDGEN_TENANT, the two URLs, type, timeout). None without a run
    file (a run configured by the environment alone, as `schedgen-runner` by hand).
    ConfigurationError when the file is missing, too big or malformed."""
    env = os.environ if env is None else env
    path = env.get("SCHEDGEN_RUN_FILE")
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(RUN_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE {path} cannot be read: {exc.strerror}") from None
    if len(data) > RUN_FILE_MAX_BYTES:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE is over {RUN_FILE_MAX_BYTES} bytes")
    try:
        items = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE is not JSON: {str(exc)[:200]}") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MEMBERS or not all(
            isinstance(i, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in i.items())
            for i in items):
        raise ConfigurationError(f"SCHEDGEN_RUN_FILE must hold a list of 1 to {MAX_MEMBERS} objects of strings")
    return items


def termination_log_path(env: Mapping[str, str] | None = None) -> str:
    """Resolved separately from `load` so even a config error can be reported there."""
    env = os.environ if env is None else env
    return (env.get("SCHEDGEN_TERMINATION_LOG") or env.get("TERMINATION_MESSAGE_PATH")
            or DEFAULT_TERMINATION_LOG)


def load(env: Mapping[str, str] | None = None) -> RunnerConfig:
    """Build the config from `env` (default: os.environ); raises ConfigurationError."""
    env = os.environ if env is None else env
    problems: list[str] = []

    def text(name: str, required: bool = True) -> str:
        value = env.get(name, "").strip()
        if required and not value:
            problems.append(f"{name} is required")
        return value

    def number(name: str, default: float, kind: type, minimum: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number")
            return default
        if not math.isfinite(value) or value < minimum:
            problems.append(f"{name}={raw!r} must be >= {minimum}")
        return value

    def choice(name: str, options: tuple[str, ...], default: str) -> str:
        value = env.get(name, "").strip().lower() or default
        if value not in options:
            problems.append(f"{name}={value!r} must be one of {', '.join(options)}")
        return value

    def url(name: str) -> str:
        value = text(name)
        if value and urlsplit(value).scheme not in ("http", "https"):
            problems.append(f"{name} must be an http(s) URL")
        return value

    uid = text("SCHEDGEN_JOB_UID")
    if uid:
        try:
            uid = str(uuid.UUID(uid))
        except ValueError:
            problems.append(f"SCHEDGEN_JOB_UID={uid!r} is not a UUID")
    config = RunnerConfig(
        job_namespace=text("SCHEDGEN_JOB_NAMESPACE"),
        job_name=text("SCHEDGEN_JOB_NAME"),
        job_uid=uid,
        tenant=text("SCHEDGEN_TENANT"),
        source_url=url("SCHEDGEN_SOURCE_URL"),
        result_url=url("SCHEDGEN_RESULT_URL"),
        schedule_type=choice("SCHEDGEN_SCHEDULE_TYPE", SCHEDULE_TYPES, DEFAULT_SCHEDULE_TYPE),
        max_bytes=int(number("SCHEDGEN_MAX_BYTES", 10 * 1024 * 1024, int, 1)),
        max_pages=int(number("SCHEDGEN_MAX_PAGES", 100, int, 1)),
        parse_timeout_seconds=float(number("SCHEDGEN_PARSE_TIMEOUT_SECONDS", 60.0, float, 0.1)),
        max_memory_mb=int(number("SCHEDGEN_MAX_MEMORY_MB", 512, int, 0)),
        termination_log=termination_log_path(env),
        log_format=choice("SCHEDGEN_LOG_FORMAT", LOG_FORMATS, "json"),
    )
    if problems:
        raise ConfigurationError("invalid runner configuration: " + "; ".join(problems))
    return config
