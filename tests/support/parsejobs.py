"""Typed ParseJobs for unit tests: bodies written by hand as the API server returns them
(camelCase, RFC 3339 times), read by the product's own `ParseJob.of`.

Times are seconds after 2026-01-01T00:00:00Z (`EPOCH`), so a test says `created=30`
instead of spelling out timestamps.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

from schedgen.parsejob import ParseJob

EPOCH = 1767225600  # 2026-01-01T00:00:00Z
_UIDS = uuid.UUID("6f1c2b1e-0000-4000-8000-000000000000")


@lru_cache(maxsize=65536)
def at(seconds: float) -> str:
    """RFC 3339 as the API server writes it, `seconds` after EPOCH (a fraction if any)."""
    dt = datetime.fromtimestamp(EPOCH + seconds, timezone.utc)
    if float(seconds).is_integer():
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@lru_cache(maxsize=65536)
def uid_of(namespace: str, name: str) -> str:
    """A stable, realistic uid per object (runner Job names use its first hex digits)."""
    return str(uuid.uuid5(_UIDS, f"{namespace}/{name}"))


def body(name: str, *, namespace: str = "ns", uid: str | None = None, tenant: str | None = None,
         priority: str | None = None, created: float | str = 0, status: Mapping[str, Any] | None = None,
         labels: Mapping[str, str] | None = None, deleting: bool = False, generation: int = 1,
         **spec: Any) -> dict[str, Any]:
    """A ParseJob object; `spec` adds spec fields (camelCase: maxRetries=2, resources={...})."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or uid_of(namespace, name),
                            "generation": generation,
                            "creationTimestamp": created if isinstance(created, str) else at(created),
                            "labels": dict(labels or {})}
    if deleting:
        meta["deletionTimestamp"] = at(0)
    full_spec: dict[str, Any] = {"source": {"s3": {"key": f"uploads/{name}.pdf"}}}
    if tenant is not None:
        full_spec["tenant"] = tenant
    if priority is not None:
        full_spec["priority"] = priority
    full_spec.update(spec)
    out: dict[str, Any] = {"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob", "metadata": meta,
                           "spec": full_spec}
    if status is not None:
        out["status"] = dict(status)
    return out


def parsejob(name: str, **kw: Any) -> ParseJob:
    """`ParseJob.of(body(name, **kw))`."""
    return ParseJob.of(body(name, **kw))


def waiting(name: str, tenant: str = "a", *, created: float = 0, seq: int = 1,
            retry_after: float | None = None, **kw: Any) -> ParseJob:
    """A Queued ParseJob (transitionSeq `seq`; `retry_after`: seconds after EPOCH)."""
    status: dict[str, Any] = {"phase": "Queued", "transitionSeq": seq, "enqueuedAt": at(created)}
    if retry_after is not None:
        status["retryAfter"] = at(retry_after)
    return parsejob(name, tenant=tenant, created=created, status=status, **kw)


def running(name: str, tenant: str = "a", *, batch_size: int = 1, attempts: int = 1, **kw: Any) -> ParseJob:
    """A Running ParseJob (in a batch of `batch_size` when more than one)."""
    status: dict[str, Any] = {"phase": "Running", "transitionSeq": 2, "jobName": f"job-{name}",
                              "attempts": attempts, "priorAttempts": attempts - 1, "startedAt": at(1)}
    if batch_size > 1:
        status["batchSize"] = batch_size
    return parsejob(name, tenant=tenant, status=status, **kw)
