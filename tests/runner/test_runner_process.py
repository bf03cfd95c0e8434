"""`schedgen-runner` end to end, as a subprocess, against the real S3 server, reached only
through presigned URLs: no credential, no database."""

from __future__ import annotations

import datetime as dt
import os
import uuid
import zlib

import pytest

from runner_testlib import FIXTURES, get_url, read_result

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
def test_real_pdfs(pdf, kind, count, first, runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(UP / pdf))
    result = run_runner(runner_env)

    assert result.returncode == 0, result.stderr
    term = result.termination
    assert term["ok"] is True and term["kind"] == kind and term["events"] == count
    assert term["pages"] >= 1 and term["seconds"] > 0
    doc = read_result(s3, result.uid)
    assert (doc["kind"], doc["pages"], doc["seconds"]) == (kind, term["pages"], term["seconds"])
    events = doc["events"]
    assert len(events) == count
    e = events[0]
    got = (e["module"], e["activity"], e["group"], e["day"], e["date"], e["startTime"], e["endTime"],
           e["venues"], e["campus"])
    want = tuple(v.strftime("%H:%M") if isinstance(v, dt.time) else v.isoformat() if isinstance(v, dt.date)
                 else v for v in first)
    assert got[:7] == want[:7] and got[8] == want[8]
    if first[7] is not None:
        assert got[7] == want[7]
    if kind == "exam":
        assert e["status"] == "FINAL" and e["paper"] == "1"
    logs = result.logs
    assert all({"ts", "level", "logger", "msg", "component", "parsejob_uid"} <= set(line) for line in logs)
    assert logs[-1]["msg"] == "succeeded" and logs[-1]["parsejob_uid"] == result.uid
    assert {line["component"] for line in logs} == {"runner"} and logs[-1]["tenant"]
    # the presigned URLs' signatures never reach the logs
    assert "Signature" not in result.stderr


def test_rerun_replaces_the_result_object(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(UP / "UP_TST_PDF.pdf"))
    assert run_runner(runner_env).returncode == 0
    before = read_result(s3, runner_env["SCHEDGEN_JOB_UID"])
    second = run_runner(runner_env)
    assert second.returncode == 0 and second.termination["events"] == 12
    assert read_result(s3, second.uid)["events"] == before["events"] and len(before["events"]) == 12


def assert_failed(result, code: str, exit_code: int, s3=None) -> None:
    assert result.returncode == exit_code, result.stderr
    assert result.termination["ok"] is False and result.termination["code"] == code
    assert result.termination["message"]
    assert result.logs[-1]["code"] == code and result.logs[-1]["level"] in ("warning", "error")
    if s3 is not None:
        assert read_result(s3, result.uid) is None


def test_unknown_format_is_bad_input(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(FIXTURES / "synthetic" / "invalid-format.pdf"))
    assert_failed(run_runner(runner_env), "UnknownScheduleType", 2, s3)


def test_random_bytes_are_not_a_pdf(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(os.urandom(4096)))
    assert_failed(run_runner(runner_env), "NotAPDF", 2, s3)


def test_oversized_object_rejected_by_its_length(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(UP / "UP_MOD_XLS.pdf"))
    runner_env["SCHEDGEN_MAX_BYTES"] = "1000"
    result = run_runner(runner_env)
    assert_failed(result, "TooLarge", 2, s3)
    assert "limit is 1000" in result.termination["message"]


def test_missing_object(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, "uploads/never-uploaded.pdf")
    assert_failed(run_runner(runner_env), "SourceNotFound", 2, s3)


def test_expired_or_forged_url_is_refused(runner_env, run_runner, s3):
    url = get_url(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    runner_env["SCHEDGEN_SOURCE_URL"] = url.replace("Signature=", "Signature=0")
    result = run_runner(runner_env)
    assert_failed(result, "SourceNotFound", 2, s3)
    assert "Signature" not in result.termination["message"] + result.stderr


def test_storage_down_is_transient(runner_env, run_runner, closed_port, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = f"http://127.0.0.1:{closed_port}/b/uploads/x.pdf?X-Amz-Signature=s"
    assert_failed(run_runner(runner_env), "StorageUnavailable", 1, s3)


def test_result_put_refused_is_transient(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    runner_env["SCHEDGEN_RESULT_URL"] = runner_env["SCHEDGEN_RESULT_URL"].replace("Signature=", "Signature=0")
    result = run_runner(runner_env)
    assert_failed(result, "StorageUnavailable", 1, s3)
    assert "HTTP 403" in result.termination["message"]


def test_missing_config_is_misconfiguration(runner_env, run_runner):
    for name in ("SCHEDGEN_JOB_UID", "SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"):
        del runner_env[name]
    result = run_runner(runner_env)
    assert_failed(result, "ConfigurationError", 3)
    for name in ("SCHEDGEN_JOB_UID", "SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"):
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


def test_termination_message_path_from_termination_message_path(runner_env, run_runner, tmp_path):
    del runner_env["SCHEDGEN_TERMINATION_LOG"]
    runner_env["TERMINATION_MESSAGE_PATH"] = str(tmp_path / "from-env")
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
def test_compression_bomb_is_refused_before_it_inflates(runner_env, run_runner, s3):
    bomb = compression_bomb_pdf(320)  # ~300 KiB on the wire, 320 MiB inflated
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(bomb))
    runner_env["SCHEDGEN_MAX_MEMORY_MB"] = "95"
    result = run_runner(runner_env)
    assert_failed(result, "TooLarge", 2, s3)
    assert "decodes to more than" in result.termination["message"]


def test_memory_limit_is_a_clear_bad_input(runner_env, run_runner, s3):
    """A page too big for the memory limit fails typed; a real export fits the same limit."""
    runner_env["SCHEDGEN_MAX_MEMORY_MB"] = "92"  # the runner's code alone (no S3 or Postgres client) maps about 70 MiB
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(dense_page_pdf()))
    result = run_runner(runner_env)
    assert_failed(result, "MemoryLimitExceeded", 2, s3)
    assert result.termination["message"] == "the PDF needs more memory than the parser may use"
    uid = str(uuid.uuid4())
    real = dict(runner_env, SCHEDGEN_JOB_UID=uid, SCHEDGEN_JOB_NAME=f"job-{uid[:8]}",
                SCHEDGEN_SOURCE_URL=get_url(s3, s3.put(UP / "UP_MOD_XLS.pdf")))
    assert run_runner(real).termination["events"] == 30


def test_text_logs(runner_env, run_runner, s3):
    runner_env["SCHEDGEN_SOURCE_URL"] = get_url(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    runner_env["SCHEDGEN_LOG_FORMAT"] = "text"
    result = run_runner(runner_env)
    assert result.returncode == 0
    assert "INFO schedgen.runner: succeeded [" in result.stderr and "code=OK" in result.stderr
    assert "tenant=tenant-a" in result.stderr and f"parsejob_uid={result.uid}" in result.stderr
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
    runner_env["SCHEDGEN_SOURCE_URL"] = f"http://127.0.0.1:{silent.getsockname()[1]}/b/never-answered.pdf"
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


def test_sigterm_during_start_up_as_pid_1_is_not_lost(runner_env, tmp_path):
    """As a container's PID 1 (here: a new PID namespace), a signal without a handler is
    dropped: a pod deleted while the runner still imports would run on until SIGKILL.
    The runner notes a SIGTERM from its first lines and stops at once."""
    import json
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to run the runner as PID 1")
    runner = Path(sys.executable).with_name("schedgen-runner")
    silent = socket.socket()  # without the early handler the run would hang on this download
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    runner_env["SCHEDGEN_SOURCE_URL"] = f"http://127.0.0.1:{silent.getsockname()[1]}/b/never-answered.pdf"
    term = tmp_path / "termination-log"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(runner)], env=runner_env,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        init = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the runner (PID 1 inside) catches SIGTERM: send it
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if children:
                init = int(children[0])
                status = Path(f"/proc/{init}/status").read_text()
                caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
                if caught & (1 << (signal.SIGTERM - 1)):
                    break
            time.sleep(0.005)
        assert init is not None, "the runner did not start"
        imported = "site-packages/cryptography/" in Path(f"/proc/{init}/maps").read_text()  # pdfminer's
        os.kill(init, signal.SIGTERM)
        started = time.monotonic()
        stderr = proc.communicate(timeout=10)[1]
        took = time.monotonic() - started
    finally:
        proc.kill()
        silent.close()
    assert not imported, "SIGTERM was only caught after the imports: this tests nothing"
    assert proc.returncode == 1 and took < 5, (proc.returncode, took, stderr)
    summary = json.loads(term.read_text())
    assert summary["ok"] is False and summary["code"] == "Interrupted" and "SIGTERM" in summary["message"]
