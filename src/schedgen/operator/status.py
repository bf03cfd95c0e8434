"""ParseJob status: phases, conditions and the transition history, as pure functions
of the typed ParseJob; each returns the whole new status (status_writer.py writes it).

The status is the source of truth. Every phase change increments
`status.transitionSeq` and appends to `status.history` (at most one entry per phase,
so it stays tiny); the records catch-up replays that history into
parse_job_transitions and parse_jobs.transition_seq, so a database outage loses
nothing and a replay never records a transition twice.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from schedgen.parsejob import CANCELLED, CONDITION_TYPES, QUEUED, RUNNING, SUCCEEDED, ParseJob

from .outcome import Outcome, Requeue


def now_rfc3339(ts: float | None = None) -> str:
    dt = datetime.now(timezone.utc) if ts is None else datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _condition(ctype: str, status: bool, reason: str, message: str, at: str, generation: int | None) -> dict[str, Any]:
    cond = {"type": ctype, "status": "True" if status else "False", "reason": reason,
            "message": message, "lastTransitionTime": at}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def set_condition(conditions: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Replace a condition by type; keep lastTransitionTime if the status did not change."""
    out = []
    found = False
    for c in conditions:
        if c.get("type") == new["type"]:
            found = True
            if c.get("status") == new["status"]:
                new = {**new, "lastTransitionTime": c.get("lastTransitionTime", new["lastTransitionTime"])}
            out.append(new)
        else:
            out.append(c)
    if not found:
        out.append(new)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.get("type"), 99))


def _transition(pj: ParseJob, phase: str, reason: str, message: str, at: str, **fields: Any) -> dict[str, Any]:
    """The new status: the old one, a transition on top, `fields` set (None: removed)."""
    status = dict(pj.status.raw)
    seq = pj.status.seq + 1
    history = [h for h in status.get("history") or [] if h.get("phase") != phase]
    history.append({"seq": seq, "phase": phase, "reason": reason, "message": message, "at": at})
    status.update(phase=phase, transitionSeq=seq, history=history, observedGeneration=pj.generation, **fields)
    return {k: v for k, v in status.items() if v is not None}


def _conditions(pj: ParseJob, *new: dict[str, Any]) -> list[dict[str, Any]]:
    conditions = list(pj.status.raw.get("conditions") or [])
    for condition in new:
        conditions = set_condition(conditions, condition)
    return conditions


def written_queued(pj: ParseJob) -> ParseJob:
    """The ParseJob with its Queued transition, as of its creation, when none was written
    yet: a waiting ParseJob is never written (the CRD defaults its phase to Queued), so its
    first write records Queued and the next phase together."""
    return pj if pj.status.seq else pj.with_status(queued(pj, pj.created or None))


def queued(pj: ParseJob, at: str | None = None) -> dict[str, Any]:
    """A new ParseJob waits for admission."""
    at = at or now_rfc3339()
    gen = pj.generation
    return _transition(pj, QUEUED, "Queued", "waiting for admission", at, enqueuedAt=at, attempts=0, conditions=[
        _condition("Admitted", False, "Queued", "waiting for admission", at, gen),
        _condition("Complete", False, "Queued", "", at, gen),
        _condition("Failed", False, "Queued", "", at, gen),
    ])


def running(pj: ParseJob, job_name: str, at: str | None = None, batch_size: int = 1,
            job_uid: str | None = None) -> dict[str, Any]:
    """Admitted: its Job exists (`job_uid`: only that Job is this run's). `attempts` counts
    this run on its way; `priorAttempts` the counted runs before it (outcome.conclude
    counts from it)."""
    at = at or now_rfc3339()
    base = written_queued(pj)
    message = f"Job {job_name} created" + (f" for a batch of {batch_size}" if batch_size > 1 else "")
    prior = base.status.attempts
    return _transition(base, RUNNING, "Admitted", message, at, startedAt=at, jobName=job_name, jobUid=job_uid,
                       queuePosition=None,
                       attempts=prior + 1, priorAttempts=prior, retryAfter=None,
                       batchSize=batch_size if batch_size > 1 else None,
                       conditions=_conditions(base, _condition("Admitted", True, "Admitted", message, at,
                                                               pj.generation)))


def requeued(pj: ParseJob, requeue: Requeue, at: str | None = None) -> dict[str, Any]:
    """Back in the queue (a retry, or a batch member its Job did not reach). It keeps its
    enqueuedAt, so its place; a counted retry may start again after `requeue.delay`."""
    at = at or now_rfc3339()
    before = pj.status.prior_attempts if pj.phase == RUNNING else pj.status.attempts  # counted runs before
    attempts = before + (1 if requeue.counted else 0)
    after = now_rfc3339(epoch(at) + requeue.delay) if requeue.delay > 0 else None
    disruptions = {"disruptions": pj.status.disruptions + 1} if requeue.disruption else {}
    return _transition(pj, QUEUED, requeue.reason, requeue.message, at, attempts=attempts, priorAttempts=None,
                       **disruptions,
                       jobName=None, jobUid=None, startedAt=None, batchSize=None, queuePosition=None,
                       retryAfter=after,
                       conditions=_conditions(pj, _condition("Admitted", False, requeue.reason, requeue.message,
                                                             at, pj.generation)))


def finished(pj: ParseJob, outcome: Outcome, at: str | None = None) -> dict[str, Any]:
    at = at or now_rfc3339()
    gen = pj.generation
    base = written_queued(pj)
    if outcome.phase == SUCCEEDED:
        condition = _condition("Complete", True, outcome.reason, outcome.message, at, gen)
        return _transition(base, outcome.phase, outcome.reason, outcome.message, at, completedAt=at,
                           queuePosition=None, retryAfter=None, attempts=outcome.attempts,
                           result=outcome.result or {}, error=None, conditions=_conditions(base, condition))
    error = {"reason": outcome.reason, "message": outcome.message}
    if outcome.code:
        error["code"] = outcome.code
    condition = _condition("Failed", True, outcome.reason, outcome.message, at, gen)
    return _transition(base, outcome.phase, outcome.reason, outcome.message, at, completedAt=at,
                       queuePosition=None, retryAfter=None, attempts=outcome.attempts, error=error,
                       conditions=_conditions(base, condition))


def cancelled(pj: ParseJob, at: str | None = None) -> dict[str, Any]:
    at = at or now_rfc3339()
    base = written_queued(pj)
    message = "the ParseJob was deleted before it finished"
    return _transition(base, CANCELLED, "Cancelled", message, at, completedAt=at, queuePosition=None,
                       retryAfter=None, error={"reason": "Cancelled", "message": message},
                       conditions=_conditions(base, _condition("Failed", True, "Cancelled", message, at,
                                                               pj.generation)))


def epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
