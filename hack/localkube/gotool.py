"""One Go tool built once with ``go install pkg@version`` into the cache outside the repo.

kwok, kube-network-policies, Karpenter's KWOK provider and Kueue are each one main package
from the Go module proxy: a :class:`GoTool` names it, and builds it into
``<cache root>/<name>-<version>/bin/<binary>`` (``SCHEDGEN_K8S_CACHE`` moves the root) with a
``.complete`` stamp written last, so a half-finished build is never taken for a finished one.
Concurrent callers serialise on a lock file; the later ones reuse the first one's binary.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import build as _build


def log_stderr(msg: str) -> None:
    print(f"[localkube] {msg}", file=sys.stderr, flush=True)


def go_env(toolchain: str | None = "local", **extra: str) -> dict[str, str]:
    """The environment of a ``go`` command: static binaries, the module proxy, ``go`` on PATH."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("Go toolchain not found (neither on PATH nor /usr/local/go/bin)")
    env = dict(os.environ, CGO_ENABLED="0", **extra)
    if toolchain:
        env["GOTOOLCHAIN"] = toolchain
    env.pop("GOFLAGS", None)  # `go install pkg@version` takes no -mod
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    env["PATH"] = f"{Path(go).parent}:{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class GoTool:
    """``go install <package>@<version>``, kept as ``bin/<binary_name>``.

    ``toolchain`` is GOTOOLCHAIN (``local``: the machine's Go; a version such as ``go1.26.9``
    when the module needs a newer one; None: Go's default). ``minutes`` is what the log
    promises for a cold build on 2 cores. ``after_build`` runs once the binary is in place
    (and again on a finished build that ``extra_ready`` finds incomplete)."""

    name: str
    package: str
    version: str
    binary_name: str
    toolchain: str | None = "local"
    minutes: float = 2
    after_build: Callable[[], None] | None = None
    extra_ready: Callable[[], bool] | None = None

    def home(self) -> Path:
        return _build.cache_root() / f"{self.name}-{self.version}"

    def bin_dir(self) -> Path:
        return self.home() / "bin"

    def binary(self) -> Path:
        return self.bin_dir() / self.binary_name

    def _installed(self) -> bool:
        return (self.bin_dir() / ".complete").exists() and self.binary().exists()

    def is_built(self) -> bool:
        return self._installed() and (self.extra_ready is None or self.extra_ready())

    def build(self, force: bool = False, log: Callable[[str], None] = log_stderr) -> Path:
        """Build (once) and return the binary."""
        if self.is_built() and not force:
            return self.binary()
        self.bin_dir().mkdir(parents=True, exist_ok=True)
        with open(self.home() / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._installed() and not force:
                if not self.is_built() and self.after_build:
                    self.after_build()  # a binary built before its companions were kept with it
                return self.binary()
            return self._build_locked(log)

    def _build_locked(self, log: Callable[[str], None]) -> Path:
        stamp = self.bin_dir() / ".complete"
        stamp.unlink(missing_ok=True)
        t0 = time.monotonic()
        log(f"building {self.name} {self.version} from the Go module proxy (about {self.minutes:g} min the first time)")
        with tempfile.TemporaryDirectory(prefix="gobin-", dir=self.home()) as gobin:
            cmd = ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{self.package}@{self.version}"]
            done = subprocess.run(cmd, cwd=self.home(), env=go_env(self.toolchain, GOBIN=gobin),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                                   f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
            # `go install` names the binary after the package's last element ("cmd", "kwok", ...)
            os.replace(Path(gobin) / self.package.rsplit("/", 1)[-1], self.binary())
        if self.after_build:
            self.after_build()
        seconds = time.monotonic() - t0
        size = self.binary().stat().st_size
        stamp.write_text(json.dumps({
            self.name: self.version, "go": self.toolchain or "default", "seconds": round(seconds, 1), "size": size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        log(f"{self.name} built in {seconds:.0f}s: {self.binary()} ({size / 1e6:.0f} MB)")
        return self.binary()
