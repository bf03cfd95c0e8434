"""ParseJob status: phases, conditions and the transition history, as pure functions.

The status is the source of truth. Every phase change increments
`status.transitionSeq` and appends to `status.history` (at most one entry per phase,
so it stays tiny); the Postgres reconciler replays that history into
parse_job_transitions and parse_jobs.transition_seq, so a database outage loses
nothing and a replay never records a transition twice.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

from .outcome import Outcome

from schedgen.parsejob import CANCELLED, CONDITION_TYPES, FAILED, FINAL_PHASES, QUEUED, RUNNING, SUCCEEDED  # noqa: F401


def now_rfc3339(ts: float | None = None) -> str:
    dt = datetime.now(timezone.utc) if ts is None else datetime.fromtimestamp(ts, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def phase_of(body: Mapping[str, Any]) -> str | None:
    return (body.get("status") or {}).get("phase")


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


def _transition(body: Mapping[str, Any], phase: str, reason: str, message: str, at: str) -> dict[str, Any]:
    status = dict(body.get("status") or {})
    seq = int(status.get("transitionSeq") or 0) + 1
    history = [h for h in status.get("history") or [] if h.get("phase") != phase]
    history.append({"seq": seq, "phase": phase, "reason": reason, "message": message, "at": at})
    return {
        "phase": phase,
        "transitionSeq": seq,
        "history": history,
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
    }


def queued(body: Mapping[str, Any], at: str | None = None) -> dict[str, Any]:
    at = at or now_rfc3339()
    gen = (body.get("metadata") or {}).get("generation")
    patch = _transition(body, QUEUED, "Queued", "waiting for admission", at)
    patch["enqueuedAt"] = at
    patch["attempts"] = 0
    patch["conditions"] = [
        _condition("Admitted", False, "Queued", "waiting for admission", at, gen),
        _condition("Complete", False, "Queued", "", at, gen),
        _condition("Failed", False, "Queued", "", at, gen),
    ]
    return patch


def running(body: Mapping[str, Any], job_name: str, at: str | None = None, batch_size: int = 1) -> dict[str, Any]:
    at = at or now_rfc3339()
    gen = (body.get("metadata") or {}).get("generation")
    message = f"Job {job_name} created" + (f" for a batch of {batch_size}" if batch_size > 1 else "")
    patch = _transition(body, RUNNING, "Admitted", message, at)
    # attempts counts runs; this one is on its way (retries raise it; a batch member put
    # back in the queue before its turn came keeps its count)
    tried = int((body.get("status") or {}).get("attempts") or 0)
    patch.update({"startedAt": at, "jobName": job_name, "queuePosition": None, "attempts": tried + 1,
                  "priorAttempts": tried or None, "batchSize": batch_size if batch_size > 1 else None})
    conditions = list((body.get("status") or {}).get("conditions") or [])
    patch["conditions"] = set_condition(conditions, _condition("Admitted", True, "Admitted", message, at, gen))
    return patch


def requeued(body: Mapping[str, Any], reason: str, message: str, counted: bool,
             at: str | None = None) -> dict[str, Any]:
    """A batch member back in the queue: its batch ended before its turn (`counted`
    False: not a retry) or its run was interrupted (`counted`: one attempt used). It keeps
    its enqueuedAt, so it keeps its place."""
    at = at or now_rfc3339()
    gen = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    patch = _transition(body, QUEUED, reason, message, at)
    tried = int(status.get("attempts") or 0)
    patch.update({"attempts": tried if counted else max(0, tried - 1), "jobName": None, "startedAt": None,
                  "batchSize": None, "queuePosition": None})
    conditions = list(status.get("conditions") or [])
    patch["conditions"] = set_condition(conditions, _condition("Admitted", False, reason, message, at, gen))
    return patch


def finished(body: Mapping[str, Any], outcome: Outcome, at: str | None = None) -> dict[str, Any]:
    at = at or now_rfc3339()
    gen = (body.get("metadata") or {}).get("generation")
    patch = _transition(body, outcome.phase, outcome.reason, outcome.message, at)
    patch.update({"completedAt": at, "queuePosition": None, "attempts": outcome.attempts})
    conditions = list((body.get("status") or {}).get("conditions") or [])
    if outcome.phase == SUCCEEDED:
        patch["result"] = outcome.result or {}
        patch["error"] = None
        conditions = set_condition(conditions, _condition("Complete", True, outcome.reason, outcome.message, at, gen))
    else:
        error = {"reason": outcome.reason, "message": outcome.message}
        if outcome.code:
            error["code"] = outcome.code
        patch["error"] = error
        conditions = set_condition(conditions, _condition("Failed", True, outcome.reason, outcome.message, at, gen))
    patch["conditions"] = conditions
    return patch


def cancelled(body: Mapping[str, Any], at: str | None = None) -> dict[str, Any]:
    at = at or now_rfc3339()
    gen = (body.get("metadata") or {}).get("generation")
    message = "the ParseJob was deleted before it finished"
    patch = _transition(body, CANCELLED, "Cancelled", message, at)
    patch.update({"completedAt": at, "queuePosition": None,
                  "error": {"reason": "Cancelled", "message": message}})
    conditions = list((body.get("status") or {}).get("conditions") or [])
    patch["conditions"] = set_condition(conditions, _condition("Failed", True, "Cancelled", message, at, gen))
    return patch


def merged(body: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The body as it will look after the status patch (for chaining and records)."""
    status = {k: v for k, v in {**(body.get("status") or {}), **patch}.items() if v is not None}
    return {**body, "status": status}
