"""How kopf itself is set up for this operator (applied in the startup handler).

* Persistence: our finalizer name and annotation prefix; no diff-base annotation
  (ParseJobs have no create/update handlers), one API write less per ParseJob; no
  `<prefix>/kopf-managed` marker annotation, one more (`QuietProgressStorage`).
* Posting: on, because `kopf.event` posts the operator's Events (kube.Kube.emit);
  kopf's own log lines never become Events (`loggers` off, and `level` above
  CRITICAL for kopf versions that post by level alone). `kopf.event` ignores the
  level, so only the Events we choose are posted.
* Peering, watching and error delays; namespace-scoped runs skip cluster scanning.
* Server-side selectors (`settings.watching.label_selectors` / `field_selectors`: kopf
  passes them as `labelSelector` / `fieldSelector` on every list and watch of the
  resource): runner Jobs and pods by the managed-by label, ConfigMaps by the operator
  ConfigMap's name and namespace. The API server streams only those objects; the
  handlers' `labels=`/`when=` filters (client-side) stay as a second check.
"""

from __future__ import annotations

import logging

import kopf

from schedgen.parsejob import FINALIZER, KOPF_ANNOTATION_PREFIX, LABEL_MANAGED_BY, MANAGED_BY

from .config import OperatorConfig


class NoDiffBaseStorage(kopf.DiffBaseStorage):
    """No last-handled-configuration annotation: deletion handling does not need it."""

    def build(self, *, body: kopf.Body, extra_fields=None) -> kopf.BodyEssence:  # type: ignore[override]
        return kopf.BodyEssence()  # no deep copy of every object on every event

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class QuietProgressStorage(kopf.AnnotationsProgressStorage):
    """Handler progress in annotations, without kopf's `<prefix>/kopf-managed: yes`
    marker (a branding for a non-kopf prefix, read by nothing). kopf stores it with the
    first progress record: when the finalizer's handler succeeds at once, the record is
    stored and purged in the same patch, and the marker alone made that patch -- a merge
    patch of every ParseJob on deletion before the finalizer's removal (audit log,
    bench/scale.py: two writes by the operator per deletion, not one)."""

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:  # type: ignore[override]
        return None


def _core(plural: str):
    return lambda resource: resource.group == "" and resource.plural == plural


def _batch(plural: str):
    return lambda resource: resource.group == "batch" and resource.plural == plural


def watch_selectors(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    """Server-side filters of the Job, pod and ConfigMap lists and watches."""
    runners = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.label_selectors[_batch("jobs")] = runners
    settings.watching.label_selectors[_core("pods")] = runners
    settings.watching.field_selectors[_core("configmaps")] = (
        f"metadata.name={cfg.configmap},metadata.namespace={cfg.namespace}")


def apply(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = QuietProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBaseStorage()
    settings.posting.enabled = True
    settings.posting.loggers = False
    settings.posting.level = logging.CRITICAL + 1
    settings.posting.reporting_component = MANAGED_BY  # `kubectl describe`'s "From"
    settings.posting.reporting_instance = MANAGED_BY
    settings.peering.lifetime = cfg.peering_lifetime
    settings.watching.server_timeout = 300
    settings.batching.error_delays = (1, 2, 5, 10)
    watch_selectors(settings, cfg)
    if cfg.watch_namespaces:
        # Namespace-scoped (SCHEDGEN_WATCH_NAMESPACES): serve exactly those namespaces.
        # Without this kopf first lists/watches all Namespaces (forbidden by the chart's
        # Roles: ~1 min of retries and errors at every start); resources are then
        # discovered once at startup (the CRDs are installed before the operator).
        settings.scanning.disabled = True
