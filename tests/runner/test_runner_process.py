"""`schedgen-runner` end to end, as a subprocess, against real Postgres and S3 (MinIO)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
import zlib

import devservices
import pytest

from schedgen import db
from runner_testlib import FIXTURES, event_rows, job_row

UP = FIXTURES / "up"


@pytest.mark.parametrize(
    ("pdf", "kind", "count", "first"),
    [
        ("UP_MOD_XLS.pdf", "lecture", 30,
         ("COS 214", "L1", "G01", "Monday", None, dt.time(8, 30), dt.time(9, 20), ["Centenary 6"], "HATFIELD")),
        ("UP_TST_PDF.pdf", "test", 12,
         ("COS 284", "Test1", None, "Saturday", dt.date(2025, 8, 23), dt.time(10), dt.time(11, 30), None, "HATFIELD")),
        ("UP_EXAM_SS.pdf", "exam", 5,
         ("COS 284", "Exam Written", None, None, dt.date(2025, 11, 12), dt.time(7, 30), None,
          ["IT Building CBT Labs 1,2,3"], "HATFIELD")),
    ],
)
def test_real_pdfs(pdf, kind, count, first, runner_env, run_runner, s3, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / pdf)
    result = run_runner(runner_env)

    assert result.returncode == 0, result.stderr
    term = result.termination
    assert term["ok"] is True and term["kind"] == kind and term["events"] == count
    assert term["pages"] >= 1 and term["seconds"] > 0
    rows = event_rows(pg_conn, result.uid)
    assert [r[0] for r in rows] == list(range(count))
    expected = tuple(rows[0][1:10])
    assert expected[:7] == first[:7] and expected[8] == first[8]
    if first[7] is not None:
        assert expected[7] == first[7]
    row = job_row(pg_conn, result.uid)
    assert (row["kind"], row["event_count"], row["tenant"], row["source_key"]) == (
        kind, count, "tenant-a", runner_env["SCHEDGEN_S3_KEY"])
    assert row["name"] == runner_env["SCHEDGEN_JOB_NAME"] and row["phase"] == "Queued"
    if kind == "exam":
        assert rows[0][10]["status"] == "FINAL" and rows[0][10]["paper"] == "1"
    logs = result.logs
    assert all({"ts", "level", "msg", "job"} <= set(line) for line in logs)
    assert logs[-1]["msg"] == "succeeded" and logs[-1]["job"] == result.uid


def test_rerun_replaces_without_duplicates(runner_env, run_runner, s3, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_TST_PDF.pdf")
    assert run_runner(runner_env).returncode == 0
    before = event_rows(pg_conn, runner_env["SCHEDGEN_JOB_UID"])
    second = run_runner(runner_env)
    assert second.returncode == 0 and second.termination["events"] == 12
    assert event_rows(pg_conn, second.uid) == before and len(before) == 12


def assert_failed(result, code: str, exit_code: int, pg_conn=None) -> None:
    assert result.returncode == exit_code, result.stderr
    assert result.termination["ok"] is False and result.termination["code"] == code
    assert result.termination["message"]
    assert result.logs[-1]["code"] == code and result.logs[-1]["level"] in ("warning", "error")
    if pg_conn is not None:
        assert event_rows(pg_conn, result.uid) == [] and job_row(pg_conn, result.uid) is None


def test_unknown_format_is_bad_input(runner_env, run_runner, s3, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(FIXTURES / "synthetic" / "invalid-format.pdf")
    assert_failed(run_runner(runner_env), "UnknownScheduleType", 2, pg_conn)


def test_random_bytes_are_not_a_pdf(runner_env, run_runner, s3, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(os.urandom(4096))
    assert_failed(run_runner(runner_env), "NotAPDF", 2, pg_conn)


def test_oversized_object_rejected_before_download(runner_env, run_runner, s3, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_MOD_XLS.pdf")
    runner_env["SCHEDGEN_MAX_BYTES"] = "1000"
    gets = s3.server.requests("GetObject")
    result = run_runner(runner_env)
    assert_failed(result, "TooLarge", 2, pg_conn)
    assert "limit is 1000" in result.termination["message"]
    assert s3.server.requests("GetObject") == gets


def test_missing_object(runner_env, run_runner, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = "uploads/never-uploaded.pdf"
    assert_failed(run_runner(runner_env), "SourceNotFound", 2, pg_conn)


def test_storage_down_is_transient(runner_env, run_runner, closed_port, pg_conn):
    runner_env["SCHEDGEN_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{closed_port}"
    runner_env["SCHEDGEN_S3_KEY"] = "uploads/x.pdf"
    assert_failed(run_runner(runner_env), "StorageUnavailable", 1, pg_conn)


def test_database_down_is_transient(runner_env, run_runner, s3, closed_port, pg_conn):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_EXAM_SS.pdf")
    runner_env["SCHEDGEN_DATABASE_URL"] = f"postgresql://postgres:pw-not-logged@127.0.0.1:{closed_port}/schedgen"
    result = run_runner(runner_env)
    assert_failed(result, "DatabaseUnavailable", 1, pg_conn)
    assert "pw-not-logged" not in result.stderr + result.termination["message"]


@pytest.mark.slow
def test_database_stopped_then_restarted(runner_env, run_runner, s3):
    """A retry after Postgres comes back succeeds: the failure really was transient."""
    server = devservices.PostgresServer(tempfile.mkdtemp(prefix="schedgen-test-pg-restart-"))
    try:
        server.start()
        with db.connect(server.dsn) as conn:
            db.migrate(conn)
        server.stop()
        runner_env["SCHEDGEN_DATABASE_URL"] = server.dsn
        runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_EXAM_SS.pdf")
        assert_failed(run_runner(runner_env), "DatabaseUnavailable", 1)

        server.start()
        assert run_runner(runner_env).returncode == 0
        with db.connect(server.dsn) as conn:
            assert len(db.read_events(conn, runner_env["SCHEDGEN_JOB_UID"])) == 5
    finally:
        server.kill()
        shutil.rmtree(server.base_dir, ignore_errors=True)


def test_missing_config_is_misconfiguration(runner_env, run_runner):
    for name in ("SCHEDGEN_JOB_UID", "SCHEDGEN_DATABASE_URL", "SCHEDGEN_S3_BUCKET"):
        del runner_env[name]
    result = run_runner(runner_env)
    assert_failed(result, "ConfigurationError", 3)
    for name in ("SCHEDGEN_JOB_UID", "SCHEDGEN_DATABASE_URL", "SCHEDGEN_S3_BUCKET"):
        assert name in result.termination["message"]


def test_invalid_config_values(runner_env, run_runner):
    runner_env.update(SCHEDGEN_JOB_UID="not-a-uuid", SCHEDGEN_SCHEDULE_TYPE="timetable",
                      SCHEDGEN_MAX_BYTES="ten", SCHEDGEN_LOG_FORMAT="text")
    result = run_runner(runner_env)
    assert result.returncode == 3 and result.termination["code"] == "ConfigurationError"
    for fragment in ("not a UUID", "SCHEDGEN_SCHEDULE_TYPE", "SCHEDGEN_MAX_BYTES"):
        assert fragment in result.termination["message"]
    assert "ConfigurationError" in result.stderr and not result.stderr.lstrip().startswith("{")


def test_huge_message_fits_termination_limit(runner_env, run_runner):
    runner_env["SCHEDGEN_SCHEDULE_TYPE"] = "é\"\\" * 5000  # escaping and multi-byte text
    result = run_runner(runner_env)
    assert result.returncode == 3
    assert result.termination_bytes <= 4096
    assert result.termination["code"] == "ConfigurationError"
    assert result.termination["message"].endswith("…")


def test_termination_message_path_from_node_agent(runner_env, run_runner, tmp_path):
    del runner_env["SCHEDGEN_TERMINATION_LOG"]
    runner_env["TERMINATION_MESSAGE_PATH"] = str(tmp_path / "from-agent")
    del runner_env["SCHEDGEN_JOB_UID"]
    result = run_runner(runner_env)
    assert result.termination["code"] == "ConfigurationError"


def compression_bomb_pdf(decompressed_mb: int) -> bytes:
    """A one-page PDF whose content stream inflates to `decompressed_mb` MiB of spaces."""
    packer = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    return one_page_pdf(b"".join(packer.compress(chunk) for _ in range(decompressed_mb)) + packer.flush())


def dense_page_pdf() -> bytes:
    """A one-page PDF within the parser's limits that draws 19,000 characters and 4,900
    lines: some 50 MiB of page objects while the page is read."""
    text = b"BT /F1 1 Tf 1 0 0 1 0 0 Tm (" + b"A" * 19_000 + b") Tj ET\n"
    return one_page_pdf(zlib.compress(text + b"0 0 m 1 1 l S\n" * 4_900))


def one_page_pdf(deflated_content: bytes) -> bytes:
    font = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources %s >>" % font,
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(deflated_content) + deflated_content
        + b"\nendstream",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.mark.slow
def test_compression_bomb_is_refused_before_it_inflates(runner_env, run_runner, s3, pg_conn):
    bomb = compression_bomb_pdf(320)  # ~300 KiB on the wire, 320 MiB inflated
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(bomb)
    runner_env["SCHEDGEN_MAX_MEMORY_MB"] = "256"
    result = run_runner(runner_env)
    assert_failed(result, "TooLarge", 2, pg_conn)
    assert "decodes to more than" in result.termination["message"]


def test_memory_limit_is_a_clear_bad_input(runner_env, run_runner, s3, pg_conn):
    """A page too big for the memory limit fails typed; a real export fits the same limit."""
    runner_env["SCHEDGEN_MAX_MEMORY_MB"] = "140"  # the runner's code alone maps about 100 MiB
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(dense_page_pdf())
    result = run_runner(runner_env)
    assert_failed(result, "MemoryLimitExceeded", 2, pg_conn)
    assert result.termination["message"] == "the PDF needs more memory than the parser may use"
    uid = str(uuid.uuid4())
    real = dict(runner_env, SCHEDGEN_JOB_UID=uid, SCHEDGEN_JOB_NAME=f"job-{uid[:8]}",
                SCHEDGEN_S3_KEY=s3.put(UP / "UP_MOD_XLS.pdf"))
    assert run_runner(real).termination["events"] == 30


def test_unmigrated_database_is_misconfiguration(runner_env, run_runner, s3, empty_database):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_EXAM_SS.pdf")
    runner_env["SCHEDGEN_DATABASE_URL"] = empty_database
    result = run_runner(runner_env)
    assert_failed(result, "ConfigurationError", 3)
    assert "schedgen db migrate" in result.termination["message"]


def test_text_logs(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_S3_KEY"] = s3.put(UP / "UP_EXAM_SS.pdf")
    runner_env["SCHEDGEN_LOG_FORMAT"] = "text"
    result = run_runner(runner_env)
    assert result.returncode == 0
    assert "INFO succeeded" in result.stderr and "code=OK" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


def test_sigterm_mid_run_writes_a_retryable_summary(runner_env, tmp_path):
    """A pod deleted mid-run gets SIGTERM: the runner still says why, and asks for a retry."""
    import json
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    runner = Path(sys.executable).with_name("schedgen-runner")

    silent = socket.socket()  # accepts connections, never answers: the download hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    runner_env["SCHEDGEN_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{silent.getsockname()[1]}"
    runner_env["SCHEDGEN_S3_KEY"] = "never-answered.pdf"
    term = tmp_path / "termination-log"
    proc = subprocess.Popen([str(runner)], env=runner_env, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _has_waiting_connection(silent):
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        stderr = proc.communicate(timeout=10)[1]
    finally:
        proc.kill()
        silent.close()
    assert proc.returncode == 1, stderr
    summary = json.loads(term.read_text())
    assert summary["ok"] is False and summary["code"] == "Interrupted"
    assert "SIGTERM" in summary["message"]


def _has_waiting_connection(server) -> bool:
    import select

    return bool(select.select([server], [], [], 0)[0])
