"""The `schedgen` jobs CLI against the real API (uvicorn, keys required), the operator and
the real runner in Jobs on the local cluster, Postgres and S3. Every command runs as a
subprocess, as a user runs it."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml
from cli_testlib import cli_env, run_cli

from schedgen.client import EXIT_CONFIG, EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from schedgen.client.render import EVENT_COLUMNS, event_cell
from schedgen.runner.parsing import parse_pdf

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FIXTURES_UP = __import__("api_testlib").FIXTURES / "up"


def ok(done, code: int = EXIT_OK):
    assert done.returncode == code, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def as_json(done):
    return json.loads(ok(done).stdout)


def canonical(events: list[dict]) -> list[str]:
    return sorted(json.dumps(e, sort_keys=True) for e in events)


def table_has_row(text: str, cells: list[str]) -> bool:
    pattern = r"\s+".join(re.escape(c) for c in cells)
    return any(re.search(pattern, line) for line in text.splitlines())


@pytest.fixture(scope="module")
def failing_pdf(tmp_path_factory):
    """A real PDF that is no schedule: the runner fails it (NoTables, exit 2, no retry)."""
    from reportlab.pdfgen import canvas

    path = tmp_path_factory.mktemp("pdf") / "notes.pdf"
    c = canvas.Canvas(str(path))
    c.drawString(72, 720, "Shopping list: bread, milk")
    c.save()
    return path


def test_submit_wait_then_events_get_and_list(stack, env_for):
    env = env_for()
    pdf = FIXTURES_UP / "UP_TST_PDF.pdf"
    submitted = as_json(run_cli("submit", str(pdf), "--wait", "--output", "json", env=env))
    assert len(submitted) == 1
    job = submitted[0]
    assert job["file"] == str(pdf) and job["phase"] == "Succeeded" and job["tenant"] == stack.tenant
    expected = parse_pdf(pdf).to_json()
    assert job["result"]["kind"] == expected["kind"] == "test"
    assert job["result"]["events"] == len(expected["events"]) == 12

    body = as_json(run_cli("events", job["id"], "-o", "json", env=env))
    assert body["kind"] == "test" and canonical(body["events"]) == canonical(expected["events"])
    assert yaml.safe_load(ok(run_cli("events", job["id"], "--output", "yaml", env=env)).stdout) == body

    table = ok(run_cli("events", job["id"], env=env)).stdout
    assert "12 test events" in table
    for event in expected["events"]:
        cells = [event_cell(event, key) for _, key in EVENT_COLUMNS["test"]]
        assert table_has_row(table, cells), (cells, table)

    status = as_json(run_cli("jobs", "get", job["id"], "-o", "json", env=env))
    assert status["id"] == job["id"] and status["phase"] == "Succeeded" and status["result"]["events"] == 12
    detail = ok(run_cli("jobs", "get", job["id"], env=env)).stdout
    assert re.search(r"Phase\s+Succeeded", detail) and re.search(r"Events\s+12", detail), detail

    listed = as_json(run_cli("jobs", "list", "--output", "json", env=env))
    assert job["id"] in [i["id"] for i in listed["items"]]
    failed_only = as_json(run_cli("jobs", "list", "--phase", "Failed", "--output", "json", env=env))
    assert job["id"] not in [i["id"] for i in failed_only["items"]]
    assert job["id"] in ok(run_cli("jobs", "list", env=env)).stdout


def test_multi_file_submit_pagination_and_calendar(stack, env_for):
    env = env_for()
    files = [FIXTURES_UP / name for name in ("UP_MOD_XLS.pdf", "UP_EXAM_SS.pdf")]
    done = ok(run_cli("submit", *map(str, files), "--wait", "--priority", "high", env=env))
    for f in files:  # the table: one row per file, Succeeded
        assert re.search(rf"{re.escape(f.name)}\s+up-\S+\s+Succeeded\s+high", done.stdout), done.stdout
        # progress, one line per change (stderr is no terminal here): uploaded, then finished
        assert re.search(rf"{re.escape(f.name)} → up-\S+: Succeeded, (attempt 1, )?\d+ \w+ events", done.stderr), \
            done.stderr

    exam = re.search(r"UP_EXAM_SS.pdf\s+(up-\S+)", done.stdout).group(1)
    table = ok(run_cli("events", exam, env=env)).stdout
    expected = parse_pdf(files[1]).to_json()["events"]
    assert table.startswith("5 exam events")
    for event in expected:
        assert table_has_row(table, [event_cell(event, key) for _, key in EVENT_COLUMNS["exam"]]), table

    first = as_json(run_cli("jobs", "list", "--limit", "2", "-o", "json", env=env))
    assert len(first["items"]) == 2 and first["nextCursor"]
    second = as_json(run_cli("jobs", "list", "--limit", "2", "--cursor", first["nextCursor"], "-o", "json", env=env))
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert len(ids) == len(set(ids)) >= 3  # no overlap; at least the three jobs so far
    everything = as_json(run_cli("jobs", "list", "--limit", "1", "--all", "-o", "json", env=env))
    assert set(ids) <= {i["id"] for i in everything["items"]} and everything["nextCursor"] is None
    created = [i["createdAt"] for i in everything["items"]]
    assert created == sorted(created, reverse=True)

    lecture = next(i for i in everything["items"] if (i["result"] or {}).get("kind") == "lecture")
    ics = ok(run_cli("events", lecture["id"], "-o", "ics", "--from", "2025-07-21", "--until", "2025-10-31",
                     "--exclude", "2025-09-22..2025-09-26", env=env)).stdout
    assert ics.startswith("BEGIN:VCALENDAR") and ics.count("BEGIN:VEVENT") == 30
    assert "RRULE:FREQ=WEEKLY" in ics and "EXDATE" in ics and "20250922" in ics
    plain = ok(run_cli("events", lecture["id"], "-o", "ics", "--from", "2025-07-21", "--until", "2025-10-31",
                       env=env)).stdout
    assert "EXDATE" not in plain
    done = run_cli("events", lecture["id"], "-o", "ics", env=env)  # lectures need a range
    assert done.returncode == 4 and "CalendarRangeRequired" in done.stderr

    queue = as_json(run_cli("queue", "-o", "json", env=env_for(stack.admin_key)))
    assert queue["tenants"][stack.tenant]["succeeded"] >= 3


def test_exit_codes_missing_job_bad_key_failed_job_and_delete(stack, env_for, failing_pdf):
    env = env_for()
    done = run_cli("jobs", "get", "up-0000000000-000000000000", env=env)
    assert done.returncode == EXIT_NOT_FOUND and "JobNotFound" in done.stderr
    done = run_cli("jobs", "list", env=env_for("sgk_not_a_real_key_" + "x" * 30))
    assert done.returncode == EXIT_CONFIG and "InvalidApiKey" in done.stderr
    done = run_cli("jobs", "list", env=env_for(None))
    assert done.returncode == EXIT_CONFIG and "ApiKeyRequired" in done.stderr

    submitted = json.loads(ok(run_cli("submit", str(failing_pdf), "--wait", "-o", "json", env=env),
                              EXIT_JOB_FAILED).stdout)
    job = submitted[0]
    assert job["phase"] == "Failed" and job["error"]["code"] == "NoTables"
    done = ok(run_cli("jobs", "watch", job["id"], env=env), EXIT_JOB_FAILED)
    assert "NoTables" in done.stdout and "NoTables" in done.stderr
    done = ok(run_cli("events", job["id"], env=env), EXIT_JOB_FAILED)
    assert "JobNotSucceeded" in done.stderr
    # its log: the runner's summary and the operator's Warning Event (posted in the background)
    deadline = time.monotonic() + 30
    while True:
        log = as_json(run_cli("logs", job["id"], "-o", "json", env=env))
        if any(e["reason"] == "InvalidPDF" for e in log["events"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert log["summary"] == {"ok": False, "reason": "InvalidPDF", "code": "NoTables",
                              "message": "no ruled table was found in the PDF"}
    warning = next(e for e in log["events"] if e["reason"] == "InvalidPDF")
    assert warning["type"] == "Warning" and "NoTables" in warning["message"]
    assert warning["from"] == "schedgen-operator"
    text = ok(run_cli("logs", job["id"], env=env)).stdout
    assert re.search(r"Summary\s+InvalidPDF \(NoTables\): no ruled table", text) and "Warning" in text, text

    done = ok(run_cli("jobs", "cancel", job["id"], "--yes", env=env), EXIT_USAGE)  # finished: nothing to cancel
    assert "AlreadyFinished" in done.stderr
    done = ok(run_cli("jobs", "delete", job["id"], env=env, stdin=""), EXIT_USAGE)  # no terminal, no --yes
    assert "ConfirmationRequired" in done.stderr
    assert as_json(run_cli("jobs", "delete", job["id"], "--yes", "-o", "json", env=env)) == \
        {"id": job["id"], "deleted": True, "phase": "Failed"}
    assert run_cli("jobs", "get", job["id"], env=env).returncode == EXIT_NOT_FOUND


def test_config_file_and_precedence_with_the_real_api(stack, env_for, tmp_path):
    pdf = FIXTURES_UP / "UP_EXAM_SS.pdf"
    job_id = as_json(run_cli("submit", str(pdf), "-o", "json", env=env_for()))[0]["id"]
    conf = tmp_path / ".config" / "schedgen" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text(f'url = "{stack.url}"\nkey = "{stack.key}"\n')
    conf.chmod(0o600)
    only_file = cli_env(tmp_path)  # HOME is tmp_path: the default config file above
    assert as_json(run_cli("jobs", "get", job_id, "-o", "json", env=only_file))["id"] == job_id

    conf.write_text(f'url = "{stack.url}"\nkey = "sgk_wrong_key_in_the_file_{"y" * 30}"\n')
    env_key = {**only_file, "SCHEDGEN_API_KEY": stack.key}  # the environment wins over the file
    assert as_json(run_cli("jobs", "get", job_id, "-o", "json", env=env_key))["id"] == job_id
    assert run_cli("jobs", "get", job_id, env=only_file).returncode == EXIT_CONFIG  # the file's bad key alone
    done = run_cli("jobs", "get", job_id, "--api-key", "sgk_flag_is_wrong_" + "z" * 30, env=env_key)
    assert done.returncode == EXIT_CONFIG  # the flag wins over the environment
