"""Helpers for the API tests and bench/api_load.py: the API as a uvicorn subprocess."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

from child_process import ChildProcess
from devservices import free_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]


def api_env(*, database_url: str, s3_endpoint_url: str, s3_credentials: dict[str, str], bucket: str,
            namespace: str, kubeconfig: str, **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
    env.update({
        "SCHEDGEN_DATABASE_URL": database_url,
        "SCHEDGEN_S3_ENDPOINT_URL": s3_endpoint_url,
        "SCHEDGEN_S3_BUCKET": bucket,
        "SCHEDGEN_API_NAMESPACE": namespace,
        "KUBECONFIG": kubeconfig,
        **s3_credentials,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SCHEDGEN_LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class ApiProcess(ChildProcess):
    """`python -m schedgen.api serve` in its own session, stopped by its pid."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None,
                 metrics_port: int | None = None):
        self.port = port or free_port()
        # /metrics has a listener of its own (default 9091): a free port of each process's
        # own (an env copied from another process's must not reuse that one's)
        self.metrics_port = metrics_port or free_port()
        env = {**env, "SCHEDGEN_API_METRICS_PORT": str(self.metrics_port)}
        super().__init__([PYTHON, "-m", "schedgen.api", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                         env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 30) -> "ApiProcess":
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the API exited:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the API did not answer within {timeout}s:\n{self.log_tail()}")
