"""The queue as one object, the contract between the operator (which publishes it) and
the API (which serves a job's place from it): what waits, what runs, and the front of the
queue in order, in the ConfigMap `<operator ConfigMap>-queue` (next to the operator's
own) instead of a position written into every waiting ParseJob. One write per interval at
most, whatever the backlog (positions at a 15,000-deep backlog were thousands of status
writes); the API serves a job's position from it on request, `kubectl` reads it:

    kubectl -n schedgen-system get configmap schedgen-operator-queue -o jsonpath='{.data.summary}'

data:
    summary    JSON: {"at", "waiting", "running", "byPriority": {p: {"waiting", "running"}},
               "tenants": {t: {"waiting", "running"}}}
    positions  the first POSITIONS_MAX waiting ParseJobs in admission order, one
               `namespace/name` per line (line n: position n)
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable, Mapping

from schedgen.parsejob import PRIORITIES, ParseJob

POSITIONS_MAX = 2000
SUFFIX = "-queue"


def configmap_name(operator_configmap: str) -> str:
    return f"{operator_configmap}{SUFFIX}"


def summary_data(ordered: Iterable[ParseJob], running: Iterable[ParseJob], at: str) -> dict[str, str]:
    """The ConfigMap's data for the queue `ordered` (admission order) and `running`."""
    queue, run = list(ordered), list(running)
    waiting_by, running_by = Counter(pj.priority for pj in queue), Counter(pj.priority for pj in run)
    tenants_waiting, tenants_running = Counter(pj.tenant for pj in queue), Counter(pj.tenant for pj in run)
    summary = {
        "at": at, "waiting": len(queue), "running": len(run),
        "byPriority": {p: {"waiting": waiting_by[p], "running": running_by[p]} for p in PRIORITIES},
        "tenants": {t: {"waiting": tenants_waiting[t], "running": tenants_running[t]}
                    for t in sorted(set(tenants_waiting) | set(tenants_running))},
    }
    positions = "\n".join(f"{pj.namespace}/{pj.name}" for pj in queue[:POSITIONS_MAX])
    return {"summary": json.dumps(summary, separators=(",", ":")), "positions": positions}


def position_of(data: Mapping[str, str] | None, namespace: str, name: str) -> int | None:
    """A waiting ParseJob's place in the published queue (1-based), None when it is not
    among the first POSITIONS_MAX (or nothing is published)."""
    wanted = f"{namespace}/{name}"
    for i, line in enumerate(((data or {}).get("positions") or "").splitlines(), start=1):
        if line == wanted:
            return i
    return None


def same_queue(old: Mapping[str, str] | None, new: Mapping[str, str]) -> bool:
    """Nothing to publish: the same positions and counts (the time aside)."""
    if not old or old.get("positions") != new.get("positions"):
        return False
    strip = lambda text: {k: v for k, v in json.loads(text or "{}").items() if k != "at"}  # noqa: E731
    return strip(old.get("summary")) == strip(new.get("summary"))
