"""The runner's configuration, read once from environment variables.

The operator sets these on the Job's container. Everything is validated up front so a
misconfigured Job fails at once with `ConfigurationError` (exit 3) listing every
problem, instead of failing half way through. Plain Python, not the pydantic-settings
models of the API and the operator (schedgen.settings): the runner image carries no
pydantic (a third more start-up time and memory per runner pod for a dozen variables).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from schedgen.errors import ConfigurationError
from schedgen.logs import LOG_FORMATS, LOG_LEVELS
from schedgen.parsejob import DEFAULT_SCHEDULE_TYPE, SCHEDULE_TYPES

DEFAULT_TERMINATION_LOG = "/dev/termination-log"


@dataclass(frozen=True)
class RunnerConfig:
    """One run's settings; `ENV_HELP` in runner/main.py documents each variable."""

    job_namespace: str  # SCHEDGEN_JOB_NAMESPACE (required), the ParseJob's
    job_name: str  # SCHEDGEN_JOB_NAME (required)
    job_uid: str  # SCHEDGEN_JOB_UID (required): its metadata.uid (a UUID), in every log line
    tenant: str  # SCHEDGEN_TENANT (required), for the logs
    # SCHEDGEN_SOURCE_URL, SCHEDGEN_RESULT_URL (required, http/https): presigned GET of the
    # PDF, presigned PUT of the result object; the runner holds no other credential.
    source_url: str
    result_url: str
    schedule_type: str = DEFAULT_SCHEDULE_TYPE  # SCHEDGEN_SCHEDULE_TYPE: parsejob.SCHEDULE_TYPES
    max_bytes: int = 10 * 1024 * 1024  # SCHEDGEN_MAX_BYTES: larger fail TooLarge
    max_pages: int = 100  # SCHEDGEN_MAX_PAGES: more fail TooManyPages
    parse_timeout_seconds: float = 60.0  # SCHEDGEN_PARSE_TIMEOUT_SECONDS: ParseTimeout (+ a SIGALRM guard)
    max_memory_mb: int = 512  # SCHEDGEN_MAX_MEMORY_MB (0 disables): RLIMIT_AS, MemoryLimitExceeded
    termination_log: str = DEFAULT_TERMINATION_LOG  # see termination_log_path
    log_format: str = "json"  # SCHEDGEN_LOG_FORMAT: json | text (schedgen.logs)
    log_level: str = "info"  # SCHEDGEN_LOG_LEVEL: debug | info | warning | error

    def log_context(self) -> dict[str, str]:
        """This run's fields in every log line (schedgen.logs)."""
        return {"parsejob_uid": self.job_uid, "parsejob": f"{self.job_namespace}/{self.job_name}",
                "tenant": self.tenant}


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


def _text(name: str, raw: str) -> str:
    if not raw:
        raise ValueError(f"{name} is required")
    return raw


def _url(name: str, raw: str) -> str:
    if urlsplit(_text(name, raw)).scheme not in ("http", "https"):
        raise ValueError(f"{name} must be an http(s) URL")
    return raw


def _uuid(name: str, raw: str) -> str:
    try:
        return str(uuid.UUID(_text(name, raw)))
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a UUID") from None


def _number(kind: type, minimum: float) -> Callable[[str, str], Any]:
    def parse(name: str, raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value) or value < minimum:
            raise ValueError(f"{name}={raw!r} must be >= {minimum}")
        return value
    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(f"{name}={raw.lower()!r} must be one of {', '.join(options)}")
        return raw.lower()
    return parse


# field -> (variable, parser); an optional field's empty variable keeps its default
RULES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "job_namespace": ("SCHEDGEN_JOB_NAMESPACE", _text),
    "job_name": ("SCHEDGEN_JOB_NAME", _text),
    "job_uid": ("SCHEDGEN_JOB_UID", _uuid),
    "tenant": ("SCHEDGEN_TENANT", _text),
    "source_url": ("SCHEDGEN_SOURCE_URL", _url),
    "result_url": ("SCHEDGEN_RESULT_URL", _url),
    "schedule_type": ("SCHEDGEN_SCHEDULE_TYPE", _choice(SCHEDULE_TYPES)),
    "max_bytes": ("SCHEDGEN_MAX_BYTES", _number(int, 1)),
    "max_pages": ("SCHEDGEN_MAX_PAGES", _number(int, 1)),
    "parse_timeout_seconds": ("SCHEDGEN_PARSE_TIMEOUT_SECONDS", _number(float, 0.1)),
    "max_memory_mb": ("SCHEDGEN_MAX_MEMORY_MB", _number(int, 0)),
    "log_format": ("SCHEDGEN_LOG_FORMAT", _choice(LOG_FORMATS)),
    "log_level": ("SCHEDGEN_LOG_LEVEL", _choice(LOG_LEVELS)),
}
REQUIRED = ("job_namespace", "job_name", "job_uid", "tenant", "source_url", "result_url")


def load(env: Mapping[str, str] | None = None) -> RunnerConfig:
    """Build the config from `env` (default: os.environ); a ConfigurationError lists
    every problem."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"termination_log": termination_log_path(env)}
    problems: list[str] = []
    for field, (name, parse) in RULES.items():
        raw = env.get(name, "").strip()
        if raw or field in REQUIRED:
            try:
                values[field] = parse(name, raw)
            except ValueError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigurationError("invalid runner configuration: " + "; ".join(problems))
    return RunnerConfig(**values)
