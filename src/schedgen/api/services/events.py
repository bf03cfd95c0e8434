"""The events of a Succeeded job, as the runner wrote them (the events route, the
calendars and the compatibility routes all read them here)."""

from __future__ import annotations

from schedgen.models import Event
from schedgen.parsejob import CANCELLED, FAILED, SCHEDULE_KINDS, SUCCEEDED

from ..backends import postgres
from ..context import ApiContext
from ..errors import ApiError
from .lookup import Job

NOT_RECORDED = {"Retry-After": "2"}  # the operator records results within moments


async def succeeded_events(ctx: ApiContext, job: Job) -> tuple[str, list[Event]]:
    """The schedule kind and events of a Succeeded job; 409 for any other."""
    if job.phase != SUCCEEDED:
        if job.phase in (FAILED, CANCELLED):
            raise ApiError(409, "JobNotSucceeded", f"job {job.name} is {job.phase}; it has no events")
        raise ApiError(409, "JobNotFinished", f"job {job.name} is {job.phase}; events come when it has Succeeded",
                       NOT_RECORDED)
    events = await postgres.read_events(ctx.pool, job.tenant, job.uid)
    kind = job.kind
    if kind not in SCHEDULE_KINDS:
        record = await postgres.job_record(ctx.pool, job.tenant, ctx.cfg.namespace, job.name)
        kind = (record or {}).get("kind")
    if kind not in SCHEDULE_KINDS:
        raise ApiError(409, "JobNotFinished", "the job's result is not recorded yet", NOT_RECORDED)
    return kind, events
