"""Retention selection and the CRD's schema."""

from __future__ import annotations

from pathlib import Path

import yaml

from schedgen import parsejob as pj
from schedgen.operator.config import RuntimeConfig
from schedgen.operator.retention import Finished, select_expired

ROOT = Path(__file__).resolve().parents[2]


def test_retention_by_age_and_count():
    cfg = RuntimeConfig(retention_succeeded_seconds=100, retention_failed_seconds=1000,
                        retention_succeeded_count=2, retention_failed_count=5)
    done = [Finished(("n", f"s{i}"), f"s{i}", "Succeeded", 1000.0 + i) for i in range(4)]
    failed = [Finished(("n", "f0"), "f0", "Failed", 500.0), Finished(("n", "c0"), "c0", "Cancelled", 1000.0)]
    expired = {f.uid for f in select_expired(done + failed, cfg, now=1050.0)}
    assert expired == {"s0", "s1"}  # beyond the newest two
    expired = {f.uid for f in select_expired(done + failed, cfg, now=1600.0)}
    assert expired == {"s0", "s1", "s2", "s3", "f0"}


def test_crd_is_structural_and_complete():
    crd = yaml.safe_load((ROOT / "crds" / "parsejobs.schedgen.io.yaml").read_text())
    assert crd["metadata"]["name"] == f"{pj.PLURAL}.{pj.GROUP}"
    assert crd["spec"]["group"] == pj.GROUP and crd["spec"]["names"]["kind"] == pj.KIND
    assert crd["spec"]["names"]["shortNames"] == ["pj"] and crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Kind", "Events", "Attempts", "Age"} <= columns
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    assert spec["priority"]["enum"] == list(pj.PRIORITIES) and spec["priority"]["default"] == pj.DEFAULT_PRIORITY
    assert spec["scheduleType"]["enum"] == list(pj.SCHEDULE_TYPES)
    assert spec["deadlineSeconds"]["default"] == 300 and spec["deadlineSeconds"]["maximum"] == 3600
    assert spec["maxRetries"]["default"] == 3 and spec["maxRetries"]["maximum"] == 10
    assert spec["source"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert spec["source"]["properties"]["s3"]["required"] == ["key"]
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(pj.PHASES)
    assert status["result"]["properties"]["kind"]["enum"] == list(pj.SCHEDULE_KINDS)
    assert status["conditions"]["items"]["properties"]["type"]["enum"] == list(pj.CONDITION_TYPES)
    assert version["name"] == pj.VERSION
    for field in ("queuePosition", "attempts", "jobName", "enqueuedAt", "startedAt", "completedAt", "result",
                  "error", "conditions", "observedGeneration"):
        assert field in status

    def walk(node, path="$"):  # structural: every node has a type (or int-or-string / preserve)
        if isinstance(node, dict) and ("properties" in node or "items" in node):
            assert "type" in node, path
            for k, v in (node.get("properties") or {}).items():
                walk(v, f"{path}.{k}")
            if "items" in node:
                walk(node["items"], f"{path}[]")
        elif isinstance(node, dict):
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
    walk(schema)
