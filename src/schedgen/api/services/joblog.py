"""A job's log (`GET /api/v1/jobs/{id}/log`, `schedgen logs`): what its run reported
and the ParseJob's Kubernetes Events, oldest first.

The summary is the runner's summary (`schedgen.parsejob.RunnerSummary`'s shape) as the
operator recorded it in the job's status: `{ok: true, kind, events, pages, seconds}`
after a success, `{ok: false, reason, code, message}` after a failure or a cancel, null
while the job waits or runs. Events come from the Kubernetes API while the ParseJob
exists (the API server keeps them about an hour); a job known only from its Postgres
record (retention deleted its ParseJob) has none.
"""

from __future__ import annotations

import datetime as dt

from schedgen.parsejob import CANCELLED, FAILED, SUCCEEDED

from ..context import ApiContext
from .lookup import Job


def summary(status: dict) -> dict | None:
    """The run's summary from a status document (lookup.status_from_*)."""
    if status["phase"] == SUCCEEDED and status.get("result"):
        r = status["result"]
        return {"ok": True, "kind": r.get("kind"), "events": r.get("events"), "pages": r.get("pages"),
                "seconds": r.get("parseSeconds")}
    if status["phase"] in (FAILED, CANCELLED):
        e = status.get("error") or {}
        return {"ok": False, "reason": e.get("reason") or status["phase"], "code": e.get("code"),
                "message": e.get("message") or ""}
    return None


def event_out(obj: dict) -> dict:
    """A core/v1 Event as the API shows it: kopf (the operator) sets first/lastTimestamp
    and eventTime; an events.k8s.io-style Event may carry only eventTime and a series."""
    series = obj.get("series") or {}
    meta = obj.get("metadata") or {}
    first = obj.get("firstTimestamp") or obj.get("eventTime") or meta.get("creationTimestamp")
    last = obj.get("lastTimestamp") or series.get("lastObservedTime") or obj.get("eventTime") or first
    source = obj.get("source") or {}
    return {"type": obj.get("type") or "Normal", "reason": obj.get("reason") or "", "message": obj.get("message") or "",
            "count": int(obj.get("count") or series.get("count") or 1), "firstTime": first, "lastTime": last,
            "from": source.get("component") or obj.get("reportingComponent") or None}


async def job_log(ctx: ApiContext, job: Job) -> dict:
    events: list[dict] = []
    if job.status.get("source") == "kubernetes":
        events = [event_out(e) for e in await ctx.blocking(ctx.jobs.events, job.uid)]
        events.sort(key=lambda e: (_when(e["firstTime"]), _when(e["lastTime"])))
    return {"id": job.name, "phase": job.phase, "attempts": job.status.get("attempts"),
            "source": job.status.get("source"), "summary": summary(job.status), "events": events}


def _when(value: str | None) -> dt.datetime:
    """A timestamp for ordering (second and microsecond precision mix in Events)."""
    try:
        when = dt.datetime.fromisoformat(value or "")
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
