"""Batch mode as a process (`schedgen-runner` with a run file of several members, as the
operator's Secret mounts it): one after another, each with its own result object; a bad
member fails only itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from runner_testlib import FIXTURES, get_url, put_url, read_result, result_key

from conftest import RUNNER

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "parser"))
import hostile  # noqa: E402  (tests/parser/hostile.py: the hostile PDF generators)

UP = FIXTURES / "up"


def member(s3, source_key: str, **extra: str) -> dict[str, str]:
    uid = str(uuid.uuid4())
    return {"SCHEDGEN_JOB_NAMESPACE": "tenant-a", "SCHEDGEN_JOB_NAME": f"job-{uid[:8]}", "SCHEDGEN_JOB_UID": uid,
            "SCHEDGEN_TENANT": "tenant-a", "SCHEDGEN_SOURCE_URL": get_url(s3, source_key),
            "SCHEDGEN_RESULT_URL": put_url(s3, result_key(uid)), **extra}


def run_file(directory, runs) -> str:
    """The run file as the operator's Secret mounts it (SCHEDGEN_RUN_FILE)."""
    path = directory / f"run-{uuid.uuid4().hex[:6]}.json"
    path.write_text(runs if isinstance(runs, str) else json.dumps(runs))
    return str(path)


def batch_env(runner_env: dict, members: list[dict]) -> dict:
    env = {k: v for k, v in runner_env.items() if not k.startswith(("SCHEDGEN_JOB_", "SCHEDGEN_SOURCE",
                                                                      "SCHEDGEN_RESULT", "SCHEDGEN_TENANT"))}
    directory = Path(env.get("SCHEDGEN_TERMINATION_LOG", tempfile.mkdtemp())).parent
    return {**env, "SCHEDGEN_RUN_FILE": run_file(directory, members)}


def test_a_hostile_member_in_the_middle_fails_only_itself(runner_env, run_runner, s3, tmp_path):
    bomb = tmp_path / "bomb.pdf"  # a content stream that inflates to 150 MiB: TooLarge, never inflated past the cap
    hostile.inflate_bomb(bomb)
    members = [member(s3, s3.put(UP / "UP_MOD_XLS.pdf")), member(s3, s3.put(bomb)),
               member(s3, s3.put(UP / "UP_TST_PDF.pdf"))]
    result = run_runner(batch_env(runner_env, members))
    assert result.returncode == 0, result.stderr
    assert result.termination == {"ok": True, "kind": None, "events": 3, "pages": None, "seconds": None}
    first, bad, last = (read_result(s3, m["SCHEDGEN_JOB_UID"]) for m in members)
    assert first["kind"] == "lecture" and len(first["events"]) == 30
    assert last["kind"] == "test" and len(last["events"]) == 12
    assert bad["ok"] is False and bad["retry"] is False and bad["killed"] is None, bad
    assert bad["code"] == "TooLarge", bad
    assert "Signature" not in result.stderr


def test_a_member_past_its_deadline_is_killed_and_the_batch_goes_on(runner_env, run_runner, s3, monkeypatch):
    import schedgen.runner.batch as batch

    # a source URL that accepts the connection and never answers: the child hangs in the download
    import socket
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    stuck = member(s3, "x")
    stuck["SCHEDGEN_SOURCE_URL"] = f"http://127.0.0.1:{hole.getsockname()[1]}/b/k.pdf"
    stuck["SCHEDGEN_PARSE_TIMEOUT_SECONDS"] = "0.5"
    ok = member(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    started = time.monotonic()
    result = run_runner(batch_env(runner_env, [stuck, ok]), timeout=120)
    took = time.monotonic() - started
    hole.close()
    assert result.returncode == 0, result.stderr
    doc = read_result(s3, stuck["SCHEDGEN_JOB_UID"])
    # the download's own timeout (15 s) ends it first, typed and transient, or the parent's kill
    assert doc["ok"] is False and (doc["killed"] == "deadline" or doc["retry"] is True), doc
    assert took < 0.5 + batch.MARGIN_SECONDS + 15, took
    assert len(read_result(s3, ok["SCHEDGEN_JOB_UID"])["events"]) == 5


def test_sigterm_writes_interrupted_for_the_current_member_and_nothing_for_the_rest(runner_env, s3, tmp_path):
    import socket
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    stuck = member(s3, "x")
    stuck["SCHEDGEN_SOURCE_URL"] = f"http://127.0.0.1:{hole.getsockname()[1]}/b/k.pdf"
    rest = member(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    env = batch_env(runner_env, [stuck, rest])
    proc = subprocess.Popen([str(RUNNER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hole.settimeout(60)
    waiting, _ = hole.accept()  # the first member's child is waiting on the silent source (no fixed sleep)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    waiting.close()
    hole.close()
    assert proc.returncode == 1, stderr  # transient: the batch did not finish
    doc = read_result(s3, stuck["SCHEDGEN_JOB_UID"])
    assert doc["ok"] is False and doc["code"] == "Interrupted" and doc["retry"] is True, doc
    assert read_result(s3, rest["SCHEDGEN_JOB_UID"]) is None  # never reached: the operator requeues it
    term = json.loads((tmp_path / "termination-log").read_text())
    assert term["ok"] is False and term["code"] == "Interrupted"


def test_a_malformed_run_file_is_a_configuration_error(runner_env, run_runner, tmp_path):
    for bad in ("not json", "[]", json.dumps([{"SCHEDGEN_JOB_UID": 5}]), json.dumps([{}] * 51), "[" * 100_000,
                " " * (1024 * 1024 + 1)):
        result = run_runner({**runner_env, "SCHEDGEN_RUN_FILE": run_file(tmp_path, bad)})
        assert result.returncode == 3 and result.termination["code"] == "ConfigurationError", (bad[:20], result.stderr)
    result = run_runner({**runner_env, "SCHEDGEN_RUN_FILE": str(tmp_path / "missing.json")})
    assert result.returncode == 3 and "cannot be read" in result.termination["message"]


def test_a_run_file_of_one_is_a_single_run(runner_env, run_runner, s3, tmp_path):
    """The operator's single Job: its one run in the file, nothing of it in the env."""
    one = member(s3, s3.put(UP / "UP_EXAM_SS.pdf"))
    env = batch_env(runner_env, [one])
    result = run_runner(env)
    assert result.returncode == 0 and result.termination["ok"] is True, result.stderr
    assert result.termination["kind"] == "exam" and result.termination["events"] == 5
