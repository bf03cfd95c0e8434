"""The kopf app: `kopf run -m schedgen.operator.handlers -A` (or `schedgen-operator`;
`-n NS ...` when namespace-scoped, see main.py).

Wiring only: each handler does one thing and delegates. State lives in kopf's `memo`
(set up at startup: cfg, kube, results, records, catchup, scheduler); the per-object memos kopf hands
to the other handlers are shallow copies of it, so they share these objects.

    on.startup   kopf's settings (kopf_settings.apply), the memo, metrics, the ConfigMap
    on.login     kopf's usual login in a session that counts kopf's requests
    indexes      parsejob_index (parsejob.ParseJob), runner_job_index, runner_pod_index
                 (runner_objects.py); every change wakes the scheduler
    daemons      scheduler  (scheduler.Scheduler.run: Job reconciler, queue manager,
                             status writer)
                 records    (row_catchup.RowCatchUp.run: Postgres rows catch up with statuses)
                 retention  (retention.sweep: delete old finished ParseJobs)
                 They accompany the operator's ConfigMap, so they run once per cluster and
                 only in the replica that holds the kopf peering lead (kopf stops daemons
                 while paused); the ConfigMap's data is the run-time configuration.
    on.delete    finalize: Scheduler.cancel, then RowCatchUp.record_now, before the
                 finalizer `schedgen.io/record` lets the object go
    on.probe     the scheduler's liveness
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import kopf

from schedgen import logs
from schedgen.parsejob import FINALIZER, GROUP, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION, ParseJob

from . import kopf_settings, metrics, retention
from .backoff import Unavailable
from .config import OperatorConfig, RuntimeConfig
from .kube import Conflict, Kube, counted_session
from .record_store import RecordStore
from .result_store import ResultStore
from .row_catchup import RowCatchUp
from .runner_objects import RunnerJob, RunnerPod
from .scheduler import Scheduler


def index_objects(index: kopf.Index) -> list[Any]:
    """Every value in a kopf index (a snapshot: the index may change while we read)."""
    return [value for _, store in list(index.items()) for value in store]

# --- the operator ----------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    cfg = memo.cfg = OperatorConfig.from_env()
    kopf_settings.apply(settings, cfg)
    memo.kube = Kube()
    memo.results = ResultStore(cfg)
    dsn = cfg.database_url.get_secret_value()
    memo.records = RecordStore(dsn) if dsn else None
    memo.catchup = (RowCatchUp(memo.records, cfg.default_bucket, cfg.records_interval_seconds)
                    if memo.records else None)
    memo.scheduler = Scheduler(cfg, memo.kube, memo.results, memo.records)
    if cfg.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(cfg.metrics_port)
    await memo.kube.ensure_configmap(cfg.namespace, cfg.configmap, {LABEL_MANAGED_BY: MANAGED_BY})
    logger.info("schedgen operator configured: image=%s configmap=%s/%s",
                cfg.runner_image, cfg.namespace, cfg.configmap)


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(**kwargs)
    return counted_session(info) if info is not None else None


@kopf.on.cleanup()
async def close(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if memo.get("kube") is not None:  # absent if the startup failed
        try:  # kopf's daemon finalizer on the ConfigMap must not outlive the operator
            if await memo.kube.release_configmap(memo.cfg.namespace, memo.cfg.configmap, FINALIZER):
                logger.info("removed the finalizer %s from ConfigMap %s/%s", FINALIZER, memo.cfg.namespace,
                            memo.cfg.configmap)
        except Exception as exc:  # noqa: BLE001 - shutting down either way
            logger.warning("could not remove the finalizer from the operator's ConfigMap: %s", exc)
        memo.kube.close()
    if memo.get("records") is not None:
        await memo.records.close()


@kopf.on.probe(id="scheduler")
def scheduler_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    scheduler = memo.get("scheduler")  # probes are served while the startup still runs
    return scheduler.health() if scheduler is not None else {"active": False, "lastTickAgeSeconds": None}


# --- indexes (what the daemons read) -------------------------------------------------


@kopf.index(GROUP, VERSION, PLURAL)
async def parsejob_index(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> dict:
    memo.scheduler.kick()
    return {(namespace, name): ParseJob.of(body)}


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def runner_job_index(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> dict:
    """Under each ParseJob a Job runs, by ownerReference (labels are anyone's to set)."""
    memo.scheduler.kick()
    job = RunnerJob.of(body)
    return {(namespace, uid): job for uid in job.parsejob_uids()}


@kopf.index("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def runner_pod_index(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> dict:
    memo.scheduler.kick()
    pod = RunnerPod.of(body)
    memo.scheduler.note_pod(pod)
    return {(namespace, pod.job or ""): pod}


# --- the singleton loops ---------------------------------------------------------------


def is_operator_configmap(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> bool:
    return name == memo.cfg.configmap and namespace == memo.cfg.namespace


@kopf.daemon("", "v1", "configmaps", id="scheduler", when=is_operator_configmap, cancellation_timeout=10)
async def scheduler(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                    parsejob_index: kopf.Index, runner_job_index: kopf.Index,
                    runner_pod_index: kopf.Index, **_: Any) -> None:
    await memo.scheduler.run(stopped, lambda: RuntimeConfig.of_configmap(body),
                             parsejob_index, runner_job_index, runner_pod_index, logger)


@kopf.daemon("", "v1", "configmaps", id="records", when=is_operator_configmap, cancellation_timeout=10)
async def records_daemon(stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: kopf.Logger,
                  parsejob_index: kopf.Index, **_: Any) -> None:
    if memo.catchup is None:
        logger.warning("SCHEDGEN_DATABASE_URL is not set: ParseJob rows are not recorded")
        return
    await memo.catchup.run(stopped, lambda: index_objects(parsejob_index), logger)


@kopf.daemon("", "v1", "configmaps", id="retention", when=is_operator_configmap, cancellation_timeout=10)
async def retention_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                           parsejob_index: kopf.Index, **_: Any) -> None:
    while not stopped:
        await retention.sweep(memo.kube, index_objects(parsejob_index), RuntimeConfig.of_configmap(body),
                              time.time(), logger)
        await stopped.wait(memo.cfg.retention_interval_seconds)


# --- the finalizer ---------------------------------------------------------------------


@kopf.on.delete(GROUP, VERSION, PLURAL, id="finalize")
async def finalize(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, runtime: datetime.timedelta,
                   **_: Any) -> None:
    """Cancel an unfinished ParseJob, then make sure its Postgres row has every
    transition before the finalizer lets the object go -- within bounds: after
    `finalize_record_timeout_seconds` of an unavailable Postgres (kopf's `runtime`: since
    the handler first ran, kept across restarts) the object goes without its last row,
    with a Warning Event and `schedgen_records_abandoned_total`."""
    pj = ParseJob.of(body)
    with logs.context(**pj.log_context()):  # kopf's own lines carry the uid; ours the tenant too
        await _finalize(pj, memo, logger, runtime)


async def _finalize(pj: ParseJob, memo: kopf.Memo, logger: kopf.Logger, runtime: datetime.timedelta) -> None:
    try:
        final = await memo.scheduler.cancel(pj)
    except Conflict:
        raise kopf.TemporaryError("the status moved on meanwhile; re-reading", delay=1) from None
    await memo.results.discard(pj)  # its events are in Postgres (or never will be)
    if memo.catchup is None:
        return
    try:
        row = await memo.catchup.record_now(final)
    except Unavailable as exc:
        waited, limit = runtime.total_seconds(), memo.cfg.finalize_record_timeout_seconds
        if waited < limit:
            raise kopf.TemporaryError(f"Postgres unavailable, the row must be written first: {exc}",
                                      delay=min(5.0, max(limit - waited, 0.5))) from None
        metrics.RECORDS_ABANDONED.inc()
        message = (f"Postgres unavailable for {waited:.0f}s (limit {limit:.0f}s): deleted without recording "
                   f"{final.phase or 'its status'} in Postgres ({str(exc)[:200]})")
        memo.kube.emit(final.ref(), "Warning", "RecordAbandoned", message)
        logger.warning("%s", message)
        return
    if row is not None:
        logger.info("recorded %s (transition %d)", row.phase, row.seq)
