"""`-o table|wide|json|yaml|name|ics` and `--output-file` of the jobs client, without a
server: the real argparse parser (`schedgen.cli.build_parser`) and the real commands,
over an httpx transport that answers as the API does (documents from
tests/api/test_job_log.py and the API's examples). The same commands against the real
API: tests/api/test_job_log.py (logs) and tests/cli/test_cli_e2e.py (cluster)."""

from __future__ import annotations

import copy
import json
import re
import sys

import httpx
import pytest
import yaml

from schedgen.cli import build_parser
from schedgen.client import EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, ClientError, commands
from schedgen.client.api import Api
from schedgen.client.config import ClientConfig

SUCCEEDED = {"id": "up-aaaaaaaaaa-000000000001", "uid": "u1", "tenant": "cs", "priority": "high",
             "scheduleType": "auto", "phase": "Succeeded", "queuePosition": None, "attempts": 1,
             "result": {"kind": "exam", "events": 2, "pages": 1, "parseSeconds": 0.03}, "error": None,
             "createdAt": "2026-11-29T13:01:03Z", "startedAt": "2026-11-29T13:01:04Z",
             "completedAt": "2026-11-29T13:01:07Z", "source": "kubernetes"}
FAILED = {**SUCCEEDED, "id": "up-bbbbbbbbbb-000000000002", "uid": "u2", "priority": "normal", "phase": "Failed",
          "result": None, "error": {"reason": "InvalidPDF", "code": "NoTables", "message": "no ruled table"},
          "createdAt": "2026-11-29T13:00:00Z"}
EVENTS = {"kind": "exam", "events": [
    {"module": "COS 284", "activity": "Exam Written", "group": None, "day": None, "date": "2025-11-12",
     "startTime": "07:30", "endTime": "10:30", "venues": ["IT 4-1"], "campus": None, "offered": None,
     "language": None, "studyProgramme": None, "paper": "1", "status": "FINAL", "moduleCampus": "HATFIELD",
     "examCampus": "HATFIELD", "comments": "open book"},
    {"module": "STK 220", "activity": "Exam Written", "group": None, "day": None, "date": "2025-11-14",
     "startTime": "07:30", "endTime": None, "venues": ["Thuto 3-1"], "campus": None, "offered": None,
     "language": None, "studyProgramme": None, "paper": "1", "status": "FINAL", "moduleCampus": "HATFIELD",
     "examCampus": "HATFIELD", "comments": None}]}
QUEUE = {"total": {"waiting": 1, "running": 0, "succeeded": 2, "failed": 1, "cancelled": 0, "oldestWaitingSeconds": 3},
         "tenants": {"cs": {"waiting": 1, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0,
                            "oldestWaitingSeconds": 3},
                     "maths": {"waiting": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0,
                               "oldestWaitingSeconds": None}}}
LOG = {"id": FAILED["id"], "phase": "Failed", "attempts": 1, "source": "kubernetes",
       "summary": {"ok": False, "reason": "InvalidPDF", "code": "NoTables", "message": "no ruled table"},
       "events": [{"type": "Warning", "reason": "InvalidPDF", "message": "InvalidPDF (NoTables): no ruled table",
                   "count": 2, "firstTime": "2026-11-29T13:01:30Z", "lastTime": "2026-11-29T13:01:35Z",
                   "from": "schedgen-operator"}]}


class FakeApi:
    """Answers the client's requests from these documents; records what was asked."""

    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.logs = [LOG]  # successive answers of GET .../log (the last one repeats)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v1/jobs":
            return httpx.Response(200, json={"items": [SUCCEEDED, FAILED], "nextCursor": "c2"})
        if path == f"/api/v1/jobs/{SUCCEEDED['id']}/events":
            return httpx.Response(200, json=EVENTS)
        if path == f"/api/v1/jobs/{SUCCEEDED['id']}/calendar.ics":
            return httpx.Response(200, text="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
        if path.endswith("/log"):
            return httpx.Response(200, json=self.logs.pop(0) if len(self.logs) > 1 else self.logs[0])
        if path == "/api/v1/queue":
            return httpx.Response(200, json=QUEUE)
        for status in (SUCCEEDED, FAILED):
            if path == f"/api/v1/jobs/{status['id']}":
                return httpx.Response(204 if request.method == "DELETE" else 200,
                                      json=None if request.method == "DELETE" else status)
        return httpx.Response(404, json={"error": {"code": "JobNotFound", "message": "no job"}})


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `schedgen ARGS...` through the real parser and commands against FakeApi:
    (exit code, stdout, stderr)."""
    fake = FakeApi()
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(commands, "LOG_POLL_SECONDS", 0.01)

    def run(*argv: str) -> tuple[int, str, str]:
        args = build_parser().parse_args(list(argv))
        cfg = ClientConfig(url="http://api.test", key="sgk_test", sources={})
        with Api(cfg, transport=httpx.MockTransport(fake)) as client:
            try:
                code = commands.COMMANDS[args.client_command](client, args)
            except ClientError as exc:
                print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
                code = exc.exit_code
        out = capsys.readouterr()
        return code, out.out, out.err

    run.fake = fake
    return run


def test_json_and_yaml_are_the_same_document(cli):
    for argv, expected in (
        (("jobs", "list"), {"items": [SUCCEEDED, FAILED], "nextCursor": "c2"}),
        (("jobs", "get", SUCCEEDED["id"]), SUCCEEDED),
        (("events", SUCCEEDED["id"]), EVENTS),
        (("queue",), QUEUE),
        (("logs", FAILED["id"]), LOG),
        (("jobs", "delete", FAILED["id"], "--yes"), {"id": FAILED["id"], "deleted": True, "phase": "Failed"}),
    ):
        code, out, err = cli(*argv, "-o", "json")
        assert code == EXIT_OK and json.loads(out) == expected, (argv, out, err)
        code, out, _ = cli(*argv, "--output", "yaml")
        assert code == EXIT_OK and yaml.safe_load(out) == expected, (argv, out)
        assert not out.lstrip().startswith("{")  # block-style YAML, not JSON
    code, out, err = cli("jobs", "list", "-o", "yaml")
    assert "more jobs" not in err  # a document on stdout: no hint for people


def test_name_prints_ids_one_a_line(cli):
    assert cli("jobs", "list", "-o", "name")[1] == f"{SUCCEEDED['id']}\n{FAILED['id']}\n"
    assert cli("jobs", "get", FAILED["id"], "-o", "name")[1] == f"{FAILED['id']}\n"
    assert cli("jobs", "delete", FAILED["id"], "--yes", "-o", "name")[1] == f"{FAILED['id']}\n"
    assert cli("queue", "-o", "name")[1] == "cs\nmaths\n"
    code, out, err = cli("jobs", "list", "-o", "name")
    assert "more jobs: schedgen jobs list --cursor c2" in err  # the hint stays on stderr


def row_of(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.strip().startswith(first))
    return re.split(r"\s{2,}", line.strip())


def test_wide_adds_columns_to_the_jobs_table(cli):
    _, table, _ = cli("jobs", "list")
    _, wide, _ = cli("jobs", "list", "-o", "wide")
    assert row_of(table, "Job") == ["Job", "Phase", "Priority", "Kind", "Events", "Queue", "Created"]
    assert row_of(wide, "Job") == ["Job", "Phase", "Priority", "Kind", "Events", "Queue", "Created", "Tenant", "Type",
                                   "Attempts", "Pages", "Started", "Completed", "Error"]
    assert row_of(table, FAILED["id"]) == [FAILED["id"], "Failed", "normal", "-", "-", "-", "2026-11-29T13:00:00Z"]
    assert row_of(wide, FAILED["id"])[7:] == ["cs", "auto", "1", "-", "2026-11-29T13:01:04Z", "2026-11-29T13:01:07Z",
                                              "NoTables"]
    assert row_of(wide, SUCCEEDED["id"])[:5] == [SUCCEEDED["id"], "Succeeded", "high", "exam", "2"]
    # one job: every field as a list by default, wide is its row of the wide table
    _, detail, _ = cli("jobs", "get", FAILED["id"])
    assert re.search(r"Error\s+NoTables: no ruled table", detail) and "Tenant" in detail
    _, one, _ = cli("jobs", "get", FAILED["id"], "-o", "wide")
    assert row_of(one, FAILED["id"]) == row_of(wide, FAILED["id"])


def test_events_table_wide_and_output_file(cli, tmp_path):
    _, table, _ = cli("events", SUCCEEDED["id"])
    _, wide, _ = cli("events", SUCCEEDED["id"], "-o", "wide")
    base = ["Module", "Paper", "Activity", "Date", "Start", "Venues", "Exam campus", "Status"]
    assert row_of(table, "Module") == base
    # wide: the fields some event has that the exam table leaves out (End, Module campus, Comments)
    assert row_of(wide, "Module") == base + ["End", "Module campus", "Comments"]
    assert row_of(wide, "COS 284")[-3:] == ["10:30", "HATFIELD", "open book"]
    assert row_of(wide, "STK 220")[-3:] == ["-", "HATFIELD", "-"]
    for fmt, check in (("json", json.loads), ("yaml", yaml.safe_load)):
        target = tmp_path / f"events.{fmt}"
        code, out, err = cli("events", SUCCEEDED["id"], "-o", fmt, "--output-file", str(target))
        assert code == EXIT_OK and out == "" and f"wrote {target}" in err
        assert check(target.read_text()) == EVENTS
    target = tmp_path / "exams.ics"
    assert cli("events", SUCCEEDED["id"], "-o", "ics", "--output-file", str(target))[0] == EXIT_OK
    assert target.read_text().startswith("BEGIN:VCALENDAR")
    code, _, err = cli("events", SUCCEEDED["id"], "--output-file", str(tmp_path / "t.txt"))
    assert code == EXIT_USAGE and "--output-file needs -o json, yaml or ics" in err


def test_logs_table_wide_and_follow(cli):
    code, table, _ = cli("logs", FAILED["id"])
    assert code == EXIT_OK
    assert re.search(r"Summary\s+InvalidPDF \(NoTables\): no ruled table", table), table
    assert row_of(table, "Time") == ["Time", "Type", "Reason", "Message"]
    assert row_of(table, "2026-11-29T13:01:35Z") == ["2026-11-29T13:01:35Z", "Warning", "InvalidPDF",
                                                      "InvalidPDF (NoTables): no ruled table"]
    _, wide, _ = cli("logs", FAILED["id"], "-o", "wide")
    assert row_of(wide, "2026-11-29T13:01:35Z")[4:] == ["2", "2026-11-29T13:01:30Z", "schedgen-operator"]
    # --follow: each Event once as it appears, until the job finishes; then the summary
    running = {**LOG, "phase": "Running", "summary": None, "events": []}
    admitted = {"type": "Normal", "reason": "Requeued", "message": "evicted: back to the queue", "count": 1,
                "firstTime": "2026-11-29T13:01:10Z", "lastTime": "2026-11-29T13:01:10Z", "from": "schedgen-operator"}
    cli.fake.logs = [running, {**running, "events": [admitted]}, {**running, "events": [admitted]},
                     {**LOG, "events": [admitted, *LOG["events"]]}]
    code, out, _ = cli("logs", FAILED["id"], "--follow")
    assert code == EXIT_JOB_FAILED  # as `jobs watch`: the job failed
    lines = out.splitlines()
    assert lines[:2] == ["2026-11-29T13:01:10Z  Normal  Requeued  evicted: back to the queue",
                         "2026-11-29T13:01:35Z  Warning  InvalidPDF  InvalidPDF (NoTables): no ruled table"]
    assert re.match(r"Summary\s+InvalidPDF", [line for line in lines if line.startswith("Summary")][0])
    assert sum(r.url.path.endswith("/log") for r in cli.fake.requests) >= 4
    # --follow -o json: one document, when the job has finished
    cli.fake.logs = [running, copy.deepcopy(LOG)]
    code, out, _ = cli("logs", FAILED["id"], "--follow", "-o", "json")
    assert json.loads(out) == LOG and code == EXIT_JOB_FAILED


@pytest.mark.parametrize("argv", [
    ("jobs", "list", "-o", "ics"),            # not a format of this command
    ("events", "x", "-o", "name"),
    ("queue", "-o", "wide"),
    ("jobs", "list", "-O", "json"),           # the old spelling of the format: gone
    ("events", "x", "--format", "json"),
    ("events", "x", "--out", "f.json"),
])
def test_formats_a_command_does_not_have_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(list(argv))
    assert done.value.code == EXIT_USAGE


def test_a_file_name_after_o_gets_a_hint(capsys):
    for argv in (("events", "x", "-o", "exams.ics"), ("parse", "a.pdf", "-o", "out/events.json")):
        with pytest.raises(SystemExit):
            build_parser().parse_args(list(argv))
        err = capsys.readouterr().err
        assert "is not an output format" in err and "--output-file FILE writes to a file" in err, err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["events", "x", "-o", "xml"])
    err = capsys.readouterr().err
    assert err.rstrip().endswith("'xml' is not an output format (choose from table, wide, json, yaml, ics)"), err


def test_every_client_command_takes_o_and_documents_it():
    parser = build_parser()
    expected = {"submit": "table wide json yaml name", "list": "table wide json yaml name",
                "get": "table wide json yaml name", "watch": "table wide json yaml name",
                "cancel": "table wide json yaml name", "delete": "table wide json yaml name",
                "events": "table wide json yaml ics", "logs": "table wide json yaml", "queue": "table json yaml name",
                "parse": "json ics"}
    seen = {}
    for name, sub in subcommands(parser):
        for action in sub._actions:
            if "-o" in action.option_strings:
                assert action.option_strings == ["-o", "--output"] and action.default == action.choices[0]
                seen[name] = " ".join(action.choices)
    assert seen == expected


def subcommands(parser):
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            yield name, sub
            if sub._subparsers:
                yield from subcommands(sub)
