"""Prometheus and promtool for the observability tests and a local look at the metrics.

Both are built once from the Go module proxy into ~/.cache/schedgen/prometheus/<version>/
(the same cache as the Kubernetes binaries and MinIO; about 8 to 15 minutes on 2 cores the
first time). A PrometheusServer is a real `prometheus` process scraping static targets,
started in its own session and stopped by its pid.

    python hack/promserver.py build                        # prints the two binaries' paths
    python hack/promserver.py run --target op=127.0.0.1:9090 --target api=127.0.0.1:8000 \\
        [--rules charts/schedgen/rules/schedgen-alerts.yaml] --state-dir /tmp/prom
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from devservices import _Server, free_port

MODULE = "github.com/prometheus/prometheus"
VERSION = "v0.316.0"  # Prometheus 3.x's Go module version, as the module proxy serves it
BINARIES = ("prometheus", "promtool")


def cache_dir() -> Path:
    from localkube.build import cache_root

    return cache_root() / "prometheus" / VERSION


def binary(name: str) -> Path:
    return cache_dir() / name


def build() -> dict[str, Path]:
    """Build (once) prometheus and promtool; a `.complete` stamp marks a finished build."""
    stamp = cache_dir() / ".complete"
    paths = {name: binary(name) for name in BINARIES}
    if stamp.exists() and all(p.exists() for p in paths.values()):
        return paths
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOBIN=str(cache_dir()))
    env["PATH"] = env.get("PATH", "") + ":/usr/local/go/bin"
    work = cache_dir() / "src"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"building prometheus and promtool {VERSION} from the Go module proxy (8 to 15 minutes the first time)",
          file=sys.stderr, flush=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags", "-s -w",
                    *(f"{MODULE}/cmd/{name}@{VERSION}" for name in BINARIES)], cwd=work, env=env, check=True)
    stamp.write_text(VERSION)
    print(f"prometheus built in {time.monotonic() - started:.0f}s: {cache_dir()}", file=sys.stderr, flush=True)
    return paths


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (or not at all)."""


class PrometheusServer(_Server):
    """A real Prometheus scraping `targets` (job name -> host:port, path /metrics) every
    `scrape_interval`, evaluating `rule_files`, with its TSDB under the base dir."""

    name = "prometheus"

    def __init__(self, base_dir: Path | str):
        super().__init__(base_dir)

    def start(self, targets: dict[str, str], rule_files: list[Path] = (), scrape_interval: str = "1s",
              evaluation_interval: str = "1s", timeout: float = 60) -> "PrometheusServer":
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval,
                       "scrape_timeout": scrape_interval},
            "rule_files": [str(Path(f).absolute()) for f in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                               for job, address in targets.items()],
        }
        config_file = self.base_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = self.port or free_port()
        self._spawn([str(build()["prometheus"]), f"--config.file={config_file}",
                     f"--storage.tsdb.path={self.base_dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                     "--web.enable-lifecycle", "--log.level=warn"])
        self._wait_ready(self._ready, timeout)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict | list:
        """GET /api/v1/<path>; the `data` of a success, else PrometheusError."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{path} {params}: HTTP {exc.code} {exc.read()[:500]!r}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        return self.api("query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}s")["result"]

    def targets_up(self) -> dict[str, str]:
        return {t["labels"]["job"]: t["health"] for t in self.api("targets")["activeTargets"]}

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "run"])
    parser.add_argument("--target", action="append", default=[], help="job=host:port (run)")
    parser.add_argument("--rules", action="append", default=[], type=Path, help="a rule file (run)")
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/schedgen-prometheus"))
    args = parser.parse_args(argv)
    paths = build()
    if args.command == "build":
        for path in paths.values():
            print(path)
        return 0
    targets = dict(t.split("=", 1) for t in args.target)
    server = PrometheusServer(args.state_dir).start(targets, args.rules, scrape_interval="5s",
                                                    evaluation_interval="5s")
    print(f"prometheus {server.url} (pid {server.pid}); stop: kill {server.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
