"""Run `schedgen-runner` as a real subprocess against the session's S3, through presigned
URLs only: the runner's environment holds no credential."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import schedgen

RUNNER = Path(sys.executable).with_name("schedgen-runner")
# The runner process imports the schedgen these tests import (a worktree's src/, say),
# not whichever checkout the venv's editable install points at.
SRC = str(Path(schedgen.__file__).resolve().parents[1])


@dataclass
class RunnerResult:
    returncode: int
    termination: dict | None
    termination_bytes: int
    stderr: str
    uid: str

    @property
    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def runner_env(tmp_path, s3):
    """Environment for one runner process: a fresh job uid, a presigned PUT for its result
    object; a test sets SCHEDGEN_SOURCE_URL (runner_testlib.get_url)."""
    from runner_testlib import put_url, result_key

    uid = str(uuid.uuid4())
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": SRC,
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "SCHEDGEN_JOB_NAMESPACE": "tenant-a",
        "SCHEDGEN_JOB_NAME": f"job-{uid[:8]}",
        "SCHEDGEN_JOB_UID": uid,
        "SCHEDGEN_TENANT": "tenant-a",
        "SCHEDGEN_SOURCE_URL": f"{s3.endpoint_url}/{s3.bucket}/unset",
        "SCHEDGEN_RESULT_URL": put_url(s3, result_key(uid)),
        "SCHEDGEN_TERMINATION_LOG": str(tmp_path / "termination-log"),
    }


@pytest.fixture
def run_runner(tmp_path):
    """Call with the env (from `runner_env`, edited); returns a RunnerResult."""

    def run(env: dict[str, str], timeout: float = 120) -> RunnerResult:
        term = Path(env.get("SCHEDGEN_TERMINATION_LOG") or env.get("TERMINATION_MESSAGE_PATH")
                    or tmp_path / "termination-log")
        term.unlink(missing_ok=True)
        proc = subprocess.run([str(RUNNER)], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        raw = term.read_bytes() if term.exists() else b""
        return RunnerResult(
            returncode=proc.returncode,
            termination=json.loads(raw) if raw else None,
            termination_bytes=len(raw),
            stderr=proc.stderr,
            uid=env.get("SCHEDGEN_JOB_UID", ""),
        )

    return run
