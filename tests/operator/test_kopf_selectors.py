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
