"""The selectors kopf sends with every list and watch (`labelSelector`/`fieldSelector`,
kopf's settings.watching.*_selectors, collected per resource exactly as kopf's
fetching/watching code collects them): runner Jobs and pods by label, the one
ConfigMap by name and namespace, ParseJobs unfiltered."""

from __future__ import annotations

import kopf
from kopf._cogs.structs import references

from schedgen.operator import kopf_settings
from schedgen.operator.config import OperatorConfig


def selectors(settings: kopf.OperatorSettings, group: str, version: str, plural: str) -> tuple[str, str]:
    resource = references.Resource(group, version, plural, namespaced=True)
    # kopf joins what applies with "," (_cogs/clients/watching.py watch_objs, fetching.py list_objs)
    return (",".join(sorted(set(settings.watching.label_selectors.collect(resource)))),
            ",".join(sorted(set(settings.watching.field_selectors.collect(resource)))))


def test_server_side_selectors():
    settings = kopf.OperatorSettings()
    kopf_settings.apply(settings, OperatorConfig(namespace="ops", configmap="my-operator"))
    runners = "app.kubernetes.io/managed-by=schedgen-operator"
    assert selectors(settings, "batch", "v1", "jobs") == (runners, "")
    assert selectors(settings, "", "v1", "pods") == (runners, "")
    assert selectors(settings, "", "v1", "configmaps") == ("", "metadata.name=my-operator,metadata.namespace=ops")
    assert selectors(settings, "schedgen.io", "v1alpha1", "parsejobs") == ("", "")
    assert selectors(settings, "", "v1", "namespaces") == ("", "")
    assert selectors(settings, "kopf.dev", "v1", "clusterkopfpeerings") == ("", "")


def _progress(storage: kopf.AnnotationsProgressStorage, purge: bool) -> dict:
    body = kopf.Body({"metadata": {"name": "pj", "namespace": "ns", "annotations": {}}})
    patch = kopf.Patch()
    storage.store(key=kopf.HandlerId("finalize"), record={"started": "2026-12-07T10:00:00.000000Z",
                                                         "success": True, "retries": 1}, body=body, patch=patch)
    if purge:
        storage.purge(key=kopf.HandlerId("finalize"), body=body, patch=patch)
    return dict(patch)


def test_a_deletion_handled_at_once_costs_no_merge_patch():
    """kopf stores the finalizer's progress and purges it in the same patch when the
    handler succeeds at once: nothing is left to write but the finalizer's removal. kopf's
    own storage adds its `<prefix>/kopf-managed` marker there, a merge patch of every
    ParseJob on deletion (the audit log of bench/scale.py showed two writes, not one)."""
    settings = kopf.OperatorSettings()
    kopf_settings.apply(settings, OperatorConfig())
    ours = settings.persistence.progress_storage
    assert _progress(ours, purge=True) == {}
    kopfs = kopf.AnnotationsProgressStorage(prefix=ours.prefix)
    assert _progress(kopfs, purge=True) == {"metadata": {"annotations": {f"{ours.prefix}/kopf-managed": "yes"}}}
    stored = _progress(ours, purge=False)  # a handler that will retry keeps its progress (its runtime)
    assert list(stored["metadata"]["annotations"]) == [f"{ours.prefix}/finalize"]
