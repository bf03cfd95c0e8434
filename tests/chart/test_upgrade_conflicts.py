"""A field changed with kubectl since the last Helm release (its own field manager, here
"kubectl-set" as `kubectl set`/`kubectl scale` write) makes Helm 4's server-side-apply upgrade
fail with a conflict; the demo's upgrade (hack/demo.py ``helm_upgrade``, --force-conflicts)
takes the field back. Real Helm engine (helm-python-sdk) against the local cluster's apiserver."""

from __future__ import annotations

import json

import demo
import helm_python as helm
import pytest

pytestmark = pytest.mark.cluster


def tiny_chart(path):
    (path / "templates").mkdir(parents=True)
    (path / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (path / "values.yaml").write_text('level: "info"\n')
    (path / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiny\ndata:\n  level: {{ .Values.level | quote }}\n")
    return helm.Chart.load(str(path))


def test_the_demos_upgrade_takes_back_a_field_changed_with_kubectl(local_cluster, k8s_namespace, tmp_path):
    ns = k8s_namespace
    cfg = helm.Config(kubeconfig_path=str(local_cluster.kubeconfig), namespace=ns)
    chart = tiny_chart(tmp_path / "tiny")
    cfg.install(chart, "tiny", {}, namespace=ns, timeout=60)
    local_cluster.kubectl("patch", "configmap", "tiny", "-n", ns, "--type=merge", "-p", '{"data":{"level":"debug"}}',
                          "--field-manager=kubectl-set")

    def cm() -> dict:
        return json.loads(local_cluster.kubectl("get", "configmap", "tiny", "-n", ns, "-o", "json",
                                                "--show-managed-fields").stdout)

    with pytest.raises(helm.HelmReleaseError, match='conflict with "kubectl-set"'):
        cfg.upgrade(chart, "tiny", {}, namespace=ns, timeout=60)
    assert cm()["data"]["level"] == "debug"

    release = demo.helm_upgrade(cfg, chart, "tiny", {}, namespace=ns, timeout=60)
    assert release["status"] == "deployed" and release["revision"] == 3  # the failed upgrade was 2
    obj = cm()
    assert obj["data"]["level"] == "info"
    owners = [f["manager"] for f in obj["metadata"]["managedFields"] if "f:level" in json.dumps(f.get("fieldsV1"))]
    assert "kubectl-set" not in owners and owners
