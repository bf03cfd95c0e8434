"""Helpers for the API tests and bench/api_load.py: the API as a uvicorn subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_env(*, database_url: str, s3_endpoint_url: str, bucket: str, namespace: str, kubeconfig: str,
            **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
    env.update({
        "SCHEDGEN_DATABASE_URL": database_url,
        "SCHEDGEN_S3_ENDPOINT_URL": s3_endpoint_url,
        "SCHEDGEN_S3_BUCKET": bucket,
        "SCHEDGEN_API_NAMESPACE": namespace,
        "KUBECONFIG": kubeconfig,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "SCHEDGEN_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class ApiProcess:
    """`python -m schedgen.api serve` in its own session, stopped by its pid."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None):
        self.env = env
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ApiProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "schedgen.api", "serve", "--host", "127.0.0.1",
                                          "--port", str(self.port)], env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True, cwd=str(ROOT))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the API did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
