"""Retention (what is finished, what expired, the sweep) and the CRD's schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from schedgen import parsejob as pj
from schedgen.operator.config import RuntimeConfig
from schedgen.operator.retention import Finished, finished, select_expired, sweep

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


def view(name: str, phase: str | None, completed: str | None = None, deleting: bool = False) -> dict:
    meta = {"name": name, "namespace": "n", "uid": f"u-{name}",
            "deletionTimestamp": "2026-01-01T00:00:00Z" if deleting else None}
    return {"metadata": meta, "status": {k: v for k, v in (("phase", phase), ("completedAt", completed)) if v}}


VIEWS = [view("ok", "Succeeded", "2026-01-01T00:00:10Z"), view("bad", "Failed", "2026-01-01T00:00:20.5Z"),
         view("gone", "Cancelled", "2026-01-01T00:00:30Z", deleting=True), view("run", "Running"),
         view("new", None)]


def test_finished_is_read_from_the_index_views():
    assert finished(VIEWS) == [Finished(("n", "ok"), "u-ok", "Succeeded", 1767225610.0),
                               Finished(("n", "bad"), "u-bad", "Failed", 1767225620.5)]


class Deletions:
    """kube.Kube's delete_parsejob, remembered; one ParseJob refuses to go."""

    def __init__(self) -> None:
        self.deleted: list[tuple[str, str, str]] = []

    async def delete_parsejob(self, namespace: str, name: str, uid: str) -> None:
        if name == "bad":
            raise OSError("the API server is away")
        self.deleted.append((namespace, name, uid))


def test_sweep_deletes_what_expired_and_carries_on_past_a_failure():
    kube = Deletions()
    cfg = RuntimeConfig(retention_succeeded_seconds=5, retention_failed_seconds=5)
    swept = asyncio.run(sweep(kube, VIEWS, cfg, now=1767225700.0))
    assert {f.uid for f in swept} == {"u-ok", "u-bad"} and kube.deleted == [("n", "ok", "u-ok")]
    assert asyncio.run(sweep(kube, VIEWS, RuntimeConfig(), now=1767225700.0)) == []


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
