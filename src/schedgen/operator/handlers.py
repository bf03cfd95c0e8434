"""The kopf app: `kopf run -m schedgen.operator.handlers -A` (or `schedgen-operator`;
`-n NS ...` when namespace-scoped, see main.py).

Registrations only; each handler does one thing and delegates to a pure module:

    indexes      parsejob_index, runner_job_index, runner_pod_index (in-memory views)
    daemons      scheduler  (scheduler.Scheduler.tick: Job reconciler + admission + queue)
                 records    (records.sync: Postgres rows catch up with statuses)
                 retention  (retention.select_expired: delete old finished ParseJobs)
                 They accompany the operator's ConfigMap, so they run once per cluster and
                 only in the replica that holds the kopf peering lead (kopf stops daemons
                 while paused); the ConfigMap's data is the run-time configuration.
    on.delete    finalize: cancel (delete the Job) and record the final row before the
                 object goes (the finalizer `schedgen.io/record`)
    on.probe     liveness details; on.startup/on.cleanup wiring
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from dataclasses import dataclass
from typing import Any

import kopf

from . import metrics
from . import status as st
from schedgen.parsejob import FINALIZER, GROUP, KOPF_ANNOTATION_PREFIX, LABEL_MANAGED_BY, LABEL_PARSEJOB_UID, MANAGED_BY, PLURAL, VERSION

from .config import (
    OperatorConfig,
    RuntimeConfig,
)
from .scheduler import Scheduler
from .job_template import job_name
from .kube import Conflict, Kube, NotFound
from .recorder import PostgresUnavailable, Recorder
from .views import epoch_of, index_objects, job_view, pod_view
from .retention import Finished, select_expired

CFG = OperatorConfig.from_env()
RECORDS_BATCH = 500
STUCK_TICK_SECONDS = 60.0


@dataclass
class _State:
    kube: Kube | None = None
    controller: Scheduler | None = None
    recorder: Recorder | None = None
    active: bool = False


STATE = _State()


def _kick() -> None:
    if STATE.controller is not None:
        STATE.controller.kick()


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """ParseJobs have no on.create/on.update handlers (the scheduler is level-based), so
    kopf need not write its last-handled-configuration annotation: one API write less
    per ParseJob. Deletion handling does not depend on the diff base."""

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:  # type: ignore[override]
        return kopf.BodyEssence()  # no deep copy of every object on every event

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# --- wiring ------------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.posting.enabled = False  # our own Events only (kube.emit), not kopf's log lines
    settings.peering.lifetime = CFG.peering_lifetime
    settings.watching.server_timeout = 300
    settings.batching.error_delays = (1, 2, 5, 10)
    if CFG.watch_namespaces:
        # Namespace-scoped (SCHEDGEN_WATCH_NAMESPACES): serve exactly those namespaces.
        # Without this kopf first lists/watches all Namespaces (forbidden by the chart's
        # Roles: ~1 min of retries and errors at every start); resources are then
        # discovered once at startup (the CRDs are installed before the operator).
        settings.scanning.disabled = True
    STATE.kube = Kube()
    STATE.controller = Scheduler(CFG, STATE.kube)
    STATE.recorder = Recorder(CFG.database_url, CFG) if CFG.database_url else None
    if CFG.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(CFG.metrics_port)
    await STATE.kube.ensure_configmap(CFG.namespace, CFG.configmap, {LABEL_MANAGED_BY: MANAGED_BY})
    logger.info("schedgen operator configured: image=%s configmap=%s/%s",
                CFG.runner_image, CFG.namespace, CFG.configmap)


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if STATE.kube is not None:
        STATE.kube.close()


@kopf.on.probe(id="scheduler")
def scheduler_probe(**_: Any) -> dict[str, Any]:
    ctl = STATE.controller
    last = ctl.last_tick if ctl else 0.0
    age = time.time() - last if last else None
    if STATE.active and age is not None and age > STUCK_TICK_SECONDS:
        raise kopf.PermanentError(f"scheduler has not ticked for {age:.0f}s")
    return {"active": STATE.active, "lastTickAgeSeconds": age}


# --- indexes (what the daemons read) -------------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL)
async def parsejob_index(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    _kick()
    meta = body.metadata
    view = {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation", "resourceVersion",
                                                "creationTimestamp", "deletionTimestamp")},
        "spec": copy.deepcopy(dict(body.spec)),
        "status": copy.deepcopy(dict(body.status)),
    }
    return {(namespace, name): view}


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def runner_job_index(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    _kick()
    return {(namespace, labels.get(LABEL_PARSEJOB_UID, "")): job_view(body)}


@kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def runner_pod_index(body: kopf.Body, namespace: str, **_: Any) -> dict:
    _kick()
    view = pod_view(body)
    return {(namespace, view["job"] or ""): view}


# --- the singleton loops ---------------------------------------------------------------


def is_operator_configmap(name: str, namespace: str, **_: Any) -> bool:
    return name == CFG.configmap and namespace == CFG.namespace


def runtime_config(body: kopf.Body) -> RuntimeConfig:
    return RuntimeConfig.from_sources(os.environ, dict(body.get("data") or {}))


@kopf.daemon("", "v1", "configmaps", id="scheduler", when=is_operator_configmap, cancellation_timeout=10)
async def scheduler(stopped: kopf.DaemonStopped, body: kopf.Body, logger: kopf.Logger,
                    parsejob_index: kopf.Index, runner_job_index: kopf.Index,
                    runner_pod_index: kopf.Index, **_: Any) -> None:
    ctl = STATE.controller
    assert ctl is not None
    STATE.active = True
    metrics.ACTIVE.set(1)
    logger.info("scheduler active")
    try:
        while not stopped:
            try:
                await ctl.tick(runtime_config(body), parsejob_index, runner_job_index, runner_pod_index)
            except Exception:  # noqa: BLE001 - level-based: the next tick tries again
                logger.exception("scheduling tick failed")
                await asyncio.sleep(1)
            await ctl.wait(CFG.tick_seconds)
    finally:
        STATE.active = False
        metrics.ACTIVE.set(0)


@kopf.daemon("", "v1", "configmaps", id="records", when=is_operator_configmap, cancellation_timeout=10)
async def records_daemon(stopped: kopf.DaemonStopped, logger: kopf.Logger,
                         parsejob_index: kopf.Index, **_: Any) -> None:
    if STATE.recorder is None:
        logger.warning("SCHEDGEN_DATABASE_URL is not set: ParseJob rows are not recorded")
        return
    await STATE.recorder.run(stopped, lambda: index_objects(parsejob_index), logger)


@kopf.daemon("", "v1", "configmaps", id="retention", when=is_operator_configmap, cancellation_timeout=10)
async def retention_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, logger: kopf.Logger,
                           parsejob_index: kopf.Index, **_: Any) -> None:
    kube = STATE.kube
    assert kube is not None
    while not stopped:
        finished = []
        for _key, store in list(parsejob_index.items()):
            for b in store:
                s = b.get("status") or {}
                done = epoch_of(s.get("completedAt"))
                if s.get("phase") in st.FINAL_PHASES and done and not b["metadata"].get("deletionTimestamp"):
                    finished.append(Finished((b["metadata"]["namespace"], b["metadata"]["name"]),
                                             b["metadata"]["uid"], s["phase"], done))
        expired = select_expired(finished, runtime_config(body), time.time())
        sem = asyncio.Semaphore(8)

        async def delete(f: Finished) -> None:
            async with sem:
                await kube.delete_parsejob(f.key[0], f.key[1], f.uid)
                metrics.RETENTION_DELETED.labels(phase=f.phase).inc()

        if expired:
            logger.info("retention: deleting %d finished ParseJobs", len(expired))
            await asyncio.gather(*(delete(f) for f in expired), return_exceptions=True)
        await stopped.wait(CFG.retention_interval_seconds)


# --- cancellation and the last record ----------------------------------------------------


@kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize")
async def finalize(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    """Stop the Job of an unfinished ParseJob, mark it Cancelled, and make sure its
    Postgres row has every transition before the finalizer lets the object go."""
    kube = STATE.kube
    assert kube is not None
    current: dict[str, Any] = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                               "metadata": dict(body.metadata), "spec": dict(body.spec),
                               "status": dict(body.status)}
    if st.phase_of(current) not in st.FINAL_PHASES:
        meta = current["metadata"]
        await kube.delete_job(meta["namespace"], current["status"].get("jobName") or job_name(meta["name"], meta["uid"]))
        base = current if st.phase_of(current) else st.merged(current, st.queued(current))
        final = st.merged(base, st.cancelled(base))
        try:
            seq = int(current["status"].get("transitionSeq") or 0)
            await kube.replace_status(meta["namespace"], meta["name"], final["status"], seq)
        except Conflict:
            raise kopf.TemporaryError("the status moved on meanwhile; re-reading", delay=1) from None
        except NotFound:
            pass
        kube.emit(final, "Normal", "Cancelled", "deleted before it finished; its Job is stopped")
        metrics.COMPLETED.labels(kind="unknown", outcome=st.CANCELLED, reason="Cancelled").inc()
        current = final
    if STATE.recorder is None:
        return
    try:
        record = await STATE.recorder.record_now(current)
    except PostgresUnavailable as exc:
        raise kopf.TemporaryError(f"Postgres unavailable, the row must be written first: {exc}", delay=5) from None
    if record is not None:
        logger.info("recorded %s (transition %d)", record.phase, record.seq)
