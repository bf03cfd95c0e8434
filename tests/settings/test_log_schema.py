"""One log schema (schedgen.logs): a line from each component's own logging setup has
ts (RFC 3339 UTC), level, logger, msg and component; context fields (request id,
ParseJob, tenant) come from `logs.context` and from kopf's object reference; the text
format stays readable; the level setting filters."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from schedgen import logs
from schedgen.api import main as api_main
from schedgen.api.config import ApiConfig
from schedgen.operator import main as op_main
from schedgen.runner import main as runner_main

UID = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    yield
    root.handlers[:] = before[0]
    root.setLevel(before[1])


def last_line(capsys, logger: str, message: str, level: int = logging.INFO, **kw) -> str:
    logging.getLogger(logger).log(level, message, **kw)
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


CONFIGURE = {
    "api": lambda fmt, level="info": api_main.setup_logging(ApiConfig(log_format=fmt, log_level=level)),
    "operator": lambda fmt, level="info": op_main.configure_logging(fmt, level),
    "runner": lambda fmt, level="info": runner_main._setup_logging(fmt, level),
}


@pytest.mark.parametrize("component", sorted(CONFIGURE))
def test_each_component_writes_the_schema(component, capsys):
    CONFIGURE[component]("json")
    entry = json.loads(last_line(capsys, f"schedgen.{component}.probe", "admitted 3 ParseJobs"))
    assert list(entry)[:5] == ["ts", "level", "logger", "msg", "component"]
    assert (entry["level"], entry["logger"], entry["msg"], entry["component"]) == (
        "info", f"schedgen.{component}.probe", "admitted 3 ParseJobs", component)
    assert entry["ts"].endswith("Z")
    ts = dt.datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == dt.timedelta(0) and abs((dt.datetime.now(dt.timezone.utc) - ts).total_seconds()) < 60


@pytest.mark.parametrize("component", sorted(CONFIGURE))
def test_the_level_setting_filters(component, capsys):
    CONFIGURE[component]("json", "warning")
    assert last_line(capsys, "schedgen.probe", "routine") == ""
    assert json.loads(last_line(capsys, "schedgen.probe", "odd", logging.WARNING))["level"] == "warning"
    CONFIGURE[component]("json", "debug")
    assert json.loads(last_line(capsys, "schedgen.probe", "detail", logging.DEBUG))["level"] == "debug"


def test_context_fields_and_a_lines_own_fields(capsys):
    logs.configure("api")
    with logs.context(request_id="req-1", tenant="team-a"):
        with logs.context(parsejob_uid=UID, parsejob="team-a/x", tenant=None):
            inner = json.loads(last_line(capsys, "schedgen.api", "created", extra={"fields": {"code": "OK"}}))
        outer = json.loads(last_line(capsys, "schedgen.api", "answered"))
    after = json.loads(last_line(capsys, "schedgen.api", "idle"))
    assert {k: inner[k] for k in ("request_id", "tenant", "parsejob_uid", "parsejob", "code")} == {
        "request_id": "req-1", "tenant": "team-a", "parsejob_uid": UID, "parsejob": "team-a/x", "code": "OK"}
    assert outer["request_id"] == "req-1" and "parsejob_uid" not in outer
    assert not set(logs.CONTEXT_KEYS) & set(after)
    assert "fields" not in inner


def test_kopf_object_logs_carry_the_parsejob(capsys):
    import kopf
    from kopf._core.actions.loggers import LocalObjectLogger

    op_main.configure_logging("json")
    body = kopf.Body({"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
                      "metadata": {"namespace": "team-a", "name": "my.upload", "uid": UID}})
    LocalObjectLogger(body=body, settings=kopf.OperatorSettings()).info("Handler 'finalize' succeeded.")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (entry["logger"], entry["component"], entry["parsejob_uid"], entry["parsejob"]) == (
        "kopf.objects", "operator", UID, "team-a/my.upload")
    assert not {"k8s_ref", "k8s_skip", "settings", "object"} & set(entry)
    cm = kopf.Body({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "sg", "name": "op"}})
    LocalObjectLogger(body=cm, settings=kopf.OperatorSettings()).info("scheduler active")
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["object"] == "ConfigMap/sg/op" and "parsejob_uid" not in entry


def test_a_traceback_is_one_field(capsys):
    logs.configure("runner")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("schedgen.runner").exception("failed")
    entry = json.loads(capsys.readouterr().err.strip())
    assert entry["level"] == "error" and "RuntimeError: boom" in entry["exc"] and entry["msg"] == "failed"


def test_the_text_format_is_for_people(capsys):
    logs.configure("operator", "text")
    with logs.context(tenant="team-a"):
        line = last_line(capsys, "schedgen.operator", "admitted 4 ParseJobs", extra={"fields": {"n": 4}})
    assert not line.startswith("{") and "INFO schedgen.operator: admitted 4 ParseJobs [tenant=team-a n=4]" in line


@pytest.mark.parametrize("raw,ok", [("info", True), (" DEBUG ", True), ("warning", True), ("trace", False),
                                    ("", False)])
def test_level_values(raw, ok):
    if ok:
        assert logs.valid_level(raw) == raw.strip().lower()
    else:
        with pytest.raises(ValueError, match="not a log level"):
            logs.valid_level(raw)
