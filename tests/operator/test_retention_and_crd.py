"""Retention (what is finished, what expired, the sweep) and the CRD's schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from parsejobs import parsejob
from schedgen import parsejob as pj
from schedgen.operator import status as ps
from schedgen.operator.config import RuntimeConfig
from schedgen.operator.outcome import Outcome, Requeue
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


def in_phase(name: str, phase: str | None, completed: str | None = None, deleting: bool = False) -> pj.ParseJob:
    return parsejob(name, namespace="n", uid=f"u-{name}", deleting=deleting,
                    status={k: v for k, v in (("phase", phase), ("completedAt", completed)) if v})


PARSEJOBS = [in_phase("ok", "Succeeded", "2026-01-01T00:00:10Z"), in_phase("bad", "Failed", "2026-01-01T00:00:20.5Z"),
             in_phase("gone", "Cancelled", "2026-01-01T00:00:30Z", deleting=True), in_phase("run", "Running"),
             in_phase("new", None),
             in_phase("odd", "Succeeded")]  # no completedAt: not finished as far as retention goes


def test_finished_is_read_from_the_typed_parsejobs():
    assert finished(PARSEJOBS) == [Finished(("n", "ok"), "u-ok", "Succeeded", 1767225610.0),
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
    swept = asyncio.run(sweep(kube, PARSEJOBS, cfg, now=1767225700.0))
    assert {f.uid for f in swept} == {"u-ok", "u-bad"} and kube.deleted == [("n", "ok", "u-ok")]
    assert asyncio.run(sweep(kube, PARSEJOBS, RuntimeConfig(), now=1767225700.0)) == []


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
    for field in ("queuePosition", "attempts", "priorAttempts", "jobName", "batchSize", "enqueuedAt", "startedAt",
                  "completedAt", "transitionSeq", "history", "result", "error", "conditions",
                  "observedGeneration"):
        assert field in status, field

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


def undeclared(value, schema: dict, path: str) -> list[str]:
    """The fields of `value` the schema does not declare (the API server prunes them
    from a structural schema), and those of another type than declared."""
    declared = schema.get("type")
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool}
    if (declared and not isinstance(value, kinds[declared])) or (isinstance(value, bool) and declared != "boolean"):
        return [f"{path}: {type(value).__name__} is not {declared}"]
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        props = schema.get("properties") or {}
        return [missing for k, v in value.items()
                for missing in ([f"{path}.{k}"] if k not in props else undeclared(v, props[k], f"{path}.{k}"))]
    if isinstance(value, list):
        return [missing for i, v in enumerate(value) for missing in undeclared(v, schema.get("items") or {},
                                                                             f"{path}[{i}]")]
    return []


def statuses() -> list[dict]:
    """Every status the transitions write over a ParseJob's life: queued, running as a
    batch member, back to the queue (not reached; a counted retry with its delay),
    running alone, and each end."""
    p = parsejob("life", namespace="n")
    out = [ps.queued(p)]
    p = p.with_status(out[-1])
    out.append(ps.running(p, "batch-x", batch_size=3))
    p = p.with_status(out[-1])
    out.append(ps.requeued(p, Requeue("BatchEnded", "not reached", counted=False)))
    p = p.with_status(out[-1])
    p = p.with_status(ps.running(p, "life-1"))
    out.append(ps.requeued(p, Requeue("Retrying", "StorageUnavailable: s3 down", counted=True, delay=20.0)))
    p = p.with_status({**out[-1], "queuePosition": 1})
    out.append(ps.running(p, "life-2"))
    p = p.with_status(out[-1])
    out.append(ps.finished(p, Outcome("Failed", "InvalidPDF", "not a PDF", code="NotAPDF", attempts=2)))
    out.append(ps.finished(p, Outcome("Succeeded", "Completed", "parsed", attempts=2,
                                      result={"kind": "exam", "events": 5, "pages": 2, "parseSeconds": 0.4})))
    out.append(ps.cancelled(p))
    return out


def test_every_status_field_the_operator_writes_is_in_the_crd():
    """The CRD's schema is structural: the API server silently drops status fields it
    does not declare. A field the operator writes and reads back (status.retryAfter
    holds a retried ParseJob in the queue until its delay is over) must be declared, or
    it is gone on the next watch event."""
    crd = yaml.safe_load((ROOT / "crds" / "parsejobs.schedgen.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    written = statuses()
    assert any("retryAfter" in s for s in written) and any("batchSize" in s for s in written)
    problems = sorted({p for s in written for p in undeclared(s, schema, "status")})
    assert problems == []
    assert schema["properties"]["history"]["maxItems"] >= len(pj.PHASES)  # one entry per phase at most
