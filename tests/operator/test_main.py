"""`schedgen-operator` startup: watch scope and the peering object."""

from __future__ import annotations

import logging

import pytest

from schedgen.operator import main as op_main
from schedgen.operator.config import OperatorConfig


class ApiError(Exception):
    def __init__(self, status: int):
        super().__init__(f"({status})")
        self.status = status


class FakeCustomObjects:
    """CustomObjectsApi for the kopf.dev peering objects, with per-call answers."""

    def __init__(self, existing=(), get_status=None, create_status=None):
        self.existing = set(existing)  # (namespace or None, plural, name)
        self.get_status, self.create_status = get_status, create_status
        self.calls: list[tuple] = []

    def _get(self, key):
        self.calls.append(("get", *key))
        if self.get_status:
            raise ApiError(self.get_status)
        if key not in self.existing:
            raise ApiError(404)
        return {"metadata": {"name": key[2]}}

    def _create(self, key, body):
        self.calls.append(("create", *key))
        if self.create_status:
            raise ApiError(self.create_status)
        assert body["metadata"]["name"] == key[2]
        assert body["kind"] == ("ClusterKopfPeering" if key[0] is None else "KopfPeering")
        self.existing.add(key)
        return body

    def get_cluster_custom_object(self, group, version, plural, name):
        return self._get((None, plural, name))

    def create_cluster_custom_object(self, group, version, plural, body):
        return self._create((None, plural, body["metadata"]["name"]), body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        return self._get((namespace, plural, name))

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        return self._create((namespace, plural, body["metadata"]["name"]), body)


@pytest.mark.parametrize("raw,expected", [("", ()), ("team-a", ("team-a",)),
                                          (" team-a, team-b ,,team-a", ("team-a", "team-b"))])
def test_watch_namespaces_setting(raw, expected):
    assert OperatorConfig.from_env({"SCHEDGEN_WATCH_NAMESPACES": raw}).watch_namespaces == expected


def test_served_namespaces_include_the_configmaps_namespace():
    assert op_main.watch_namespaces(OperatorConfig.from_env({})) == []  # all namespaces
    cfg = OperatorConfig.from_env({"SCHEDGEN_WATCH_NAMESPACES": "team-a,team-b",
                                   "SCHEDGEN_OPERATOR_NAMESPACE": "sg-system"})
    assert op_main.watch_namespaces(cfg) == ["team-a", "team-b", "sg-system"]
    cfg = OperatorConfig.from_env({"SCHEDGEN_WATCH_NAMESPACES": "sg-system,team-a",
                                   "SCHEDGEN_OPERATOR_NAMESPACE": "sg-system"})
    assert op_main.watch_namespaces(cfg) == ["sg-system", "team-a"]


def test_existing_peering_is_only_read(caplog):
    api = FakeCustomObjects(existing={(None, "clusterkopfpeerings", "sg")})
    with caplog.at_level(logging.DEBUG, logger=op_main.__name__):
        op_main._ensure_peering_object("sg", [], api=api)
    assert api.calls == [("get", None, "clusterkopfpeerings", "sg")]
    assert not caplog.records


def test_missing_peering_is_created_cluster_wide_or_per_namespace():
    api = FakeCustomObjects()
    op_main._ensure_peering_object("sg", None, api=api)
    assert api.calls == [("get", None, "clusterkopfpeerings", "sg"), ("create", None, "clusterkopfpeerings", "sg")]
    api = FakeCustomObjects(existing={("team-a", "kopfpeerings", "sg")})
    op_main._ensure_peering_object("sg", ["team-a", "team-b"], api=api)
    assert api.calls == [("get", "team-a", "kopfpeerings", "sg"), ("get", "team-b", "kopfpeerings", "sg"),
                         ("create", "team-b", "kopfpeerings", "sg")]
    assert ("team-b", "kopfpeerings", "sg") in api.existing


@pytest.mark.parametrize("kwargs", [{"get_status": 403}, {"create_status": 403}, {"create_status": 409}])
def test_forbidden_or_racing_peering_is_quiet(kwargs, caplog):
    api = FakeCustomObjects(**kwargs)
    with caplog.at_level(logging.DEBUG, logger=op_main.__name__):
        op_main._ensure_peering_object("sg", ["team-a"], api=api)
    assert all(r.levelno <= logging.DEBUG for r in caplog.records), caplog.records
    if "get_status" in kwargs:
        assert api.calls == [("get", "team-a", "kopfpeerings", "sg")]  # never tries to create


def test_other_errors_warn(caplog):
    api = FakeCustomObjects(get_status=500)
    with caplog.at_level(logging.DEBUG, logger=op_main.__name__):
        op_main._ensure_peering_object("sg", [], api=api)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_kopf_runs_for_the_served_namespaces(monkeypatch):
    import kopf

    seen = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    monkeypatch.setattr(kopf, "configure", lambda **kw: None)
    ensured = []
    monkeypatch.setattr(op_main, "_ensure_peering_object", lambda name, ns: ensured.append((name, ns)))
    monkeypatch.setenv("SCHEDGEN_WATCH_NAMESPACES", "team-a")
    monkeypatch.setenv("SCHEDGEN_OPERATOR_NAMESPACE", "sg-system")
    monkeypatch.setenv("SCHEDGEN_PEERING_NAME", "sg")
    monkeypatch.delenv("SCHEDGEN_STANDALONE", raising=False)
    assert op_main.main([]) == 0
    assert seen["clusterwide"] is False and list(seen["namespaces"]) == ["team-a", "sg-system"]
    assert seen["peering_name"] == "sg" and ensured == [("sg", ["team-a", "sg-system"])]

    seen.clear()
    ensured.clear()
    monkeypatch.setenv("SCHEDGEN_WATCH_NAMESPACES", "")
    assert op_main.main([]) == 0
    assert seen["clusterwide"] is True and not seen["namespaces"] and ensured == [("sg", [])]


def _root_line(capsys, message: str) -> str:
    logging.getLogger("schedgen.operator.test").info(message)
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_json_log_format_gives_one_object_per_line(capsys):
    """The operator's lines (kopf's too) in the schema of schedgen.logs; tests/settings
    test_log_schema.py checks the schema itself."""
    import json

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    try:
        op_main.configure_logging("json")
        entry = json.loads(_root_line(capsys, "admitted 3 ParseJobs"))
        assert entry["msg"] == "admitted 3 ParseJobs" and entry["level"] == "info"
        assert entry["component"] == "operator"
        op_main.configure_logging("text")
        line = _root_line(capsys, "admitted 4 ParseJobs")
        assert line.endswith("admitted 4 ParseJobs") and not line.startswith("{")
    finally:
        root.handlers[:], level = before
        root.setLevel(level)
