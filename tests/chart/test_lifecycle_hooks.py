"""The chart's lifecycle hooks offline (helm-python-sdk render): the CRD hook applies exactly
the repository's crds/ with an account limited to those CRDs, ahead of the migration Job; the
uninstall hook stops the release's own Deployments and may touch ParseJobs only where the
release served them. On the real cluster: tests/chart/test_upgrade_rollback.py."""

from __future__ import annotations

import pytest
import yaml
from chartlib import REPO_CRDS, find, one, render

HOOK = "helm.sh/hook"


def weight(doc: dict) -> int:
    return int(doc["metadata"]["annotations"]["helm.sh/hook-weight"])


def hooks_of(docs: list[dict], event: str) -> list[dict]:
    return [d for d in docs if event in (d["metadata"].get("annotations") or {}).get(HOOK, "").split(",")]


def repo_crd_names() -> list[str]:
    return sorted(d["metadata"]["name"] for p in REPO_CRDS.glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
                  if d and d["kind"] == "CustomResourceDefinition")


def test_the_crd_hook_applies_the_repository_crds_before_the_migration():
    docs = render({"postgres": {"existingSecret": "pg"}})
    upgrade = hooks_of(docs, "pre-upgrade")
    assert hooks_of(docs, "pre-install") == upgrade and not hooks_of(docs, "pre-rollback")
    job = one(upgrade, "Job", "schedgen-crds")
    migrate = one(upgrade, "Job", "schedgen-migrate")
    for d in upgrade:
        if d is not job and d is not migrate:  # its account and its ConfigMap come first
            assert weight(d) < weight(job), d["metadata"]["name"]
    assert weight(job) < weight(migrate)
    for d in upgrade:
        assert d["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    # one source: the ConfigMap carries crds/ byte for byte, mounted where the Job reads it
    cm = one(upgrade, "ConfigMap", "schedgen-crds")
    assert cm["data"] == {p.name: p.read_text() for p in REPO_CRDS.glob("*.yaml")}
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "schedgen-crds" and pod["automountServiceAccountToken"] is True
    container = pod["containers"][0]
    assert container["image"] == "schedgen-operator:0.1.0"
    assert container["command"] == ["python", "-m", "schedgen.operator.release_hooks", "apply-crds", "/crds"]
    assert {"name": "crds", "mountPath": "/crds", "readOnly": True} in container["volumeMounts"]
    assert {"name": "crds", "configMap": {"name": "schedgen-crds"}} in pod["volumes"]


def test_the_crd_hook_may_touch_the_charts_crds_only():
    docs = render()
    role = one(docs, "ClusterRole", "schedgen-crds-schedgen-system")
    assert role["rules"] == [{"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
                              "resourceNames": repo_crd_names(), "verbs": ["get", "create", "patch"]}]
    binding = one(docs, "ClusterRoleBinding", "schedgen-crds-schedgen-system")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "schedgen-crds", "namespace": "schedgen-system"}]


def test_crds_managed_elsewhere_no_crd_hook():
    docs = render({"crds": {"apply": False}})
    assert not [d for d in docs if "crds" in d["metadata"]["name"]]
    assert one(docs, "Job", "schedgen-uninstall")  # the uninstall hook is its own switch


def _uninstall_rules(docs: list[dict]) -> dict[tuple[str, str | None], list[dict]]:
    return {(d["kind"], d["metadata"].get("namespace")): d["rules"] for d in hooks_of(docs, "pre-delete")
            if d["kind"] in ("Role", "ClusterRole")}


def test_the_uninstall_hook_stops_the_release_then_releases_every_parsejob():
    docs = render()
    hooks = hooks_of(docs, "pre-delete")
    job = one(hooks, "Job", "schedgen-uninstall")
    assert all(weight(d) < weight(job) for d in hooks if d is not job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "schedgen.operator.release_hooks", "release"]
    assert container["args"] == ["--namespace=schedgen-system", "--configmap=schedgen-operator",
                                 "--stop=schedgen-operator", "--stop=schedgen-api"]  # no --served: all namespaces
    rules = _uninstall_rules(docs)
    assert rules[("Role", "schedgen-system")] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["schedgen-operator", "schedgen-api"],
         "verbs": ["get", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["schedgen-operator"], "verbs": ["get", "patch"]}]
    assert rules[("ClusterRole", None)] == [
        {"apiGroups": ["schedgen.io"], "resources": ["parsejobs"], "verbs": ["get", "list", "patch"]}]


def test_a_namespaced_release_releases_its_served_namespaces_only():
    docs = render({"watch": {"namespaces": ["team-a", "team-b"]}, "api": {"enabled": False}})
    job = one(docs, "Job", "schedgen-uninstall")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--stop=schedgen-api" not in args and "--stop=schedgen-operator" in args
    served = ["team-a", "team-b", "schedgen-system"]
    assert [a.removeprefix("--served=") for a in args if a.startswith("--served=")] == served
    rules = _uninstall_rules(docs)
    assert not find(docs, "ClusterRole", "schedgen-uninstall-schedgen-system")
    for ns in served:
        assert rules[("Role", ns)][-1] == {"apiGroups": ["schedgen.io"], "resources": ["parsejobs"],
                                           "verbs": ["get", "list", "patch"]}
    assert {d["metadata"]["namespace"] for d in find(docs, "RoleBinding") if "uninstall" in d["metadata"]["name"]} == \
        set(served)


def test_the_uninstall_hook_can_be_switched_off():
    assert not [d for d in render({"uninstall": {"releaseParseJobs": False}}) if "uninstall" in d["metadata"]["name"]]


@pytest.mark.parametrize("values,where", [({"crds": {"apply": "yes"}}, "/crds/apply"),
                                          ({"uninstall": {"releaseParseJob": True}}, "releaseParseJob")])
def test_schema_checks_the_hook_values(values, where):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert where in str(err.value)
