"""Build (or reuse) pinned Kubernetes control-plane binaries from the Go module proxy.

Binaries land in ``~/.cache/schedgen/k8s-<version>/bin/`` (override the root with
``SCHEDGEN_K8S_CACHE``). A ``.complete`` stamp marks a finished build; later calls
reuse it without touching Go.

Recipe: a tiny Go module (written here) requires ``k8s.io/kubernetes vX.Y.Z`` and
replaces every ``k8s.io/<staging>`` module -- which the monorepo's go.mod lists at
v0.0.0 with local ``./staging`` paths -- with its published ``v0.Y.Z``. etcd is built
from ``go.etcd.io/etcd/server/v3`` (its main package is the module root) in a
separate module so its dependency graph is not mixed with Kubernetes'.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
GO_DIRECTIVE = "1.26.0"

KUBE_BINARIES = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
}
ETCD_BINARIES = {"etcd": "go.etcd.io/etcd/server/v3"}
ALL_BINARIES = tuple(KUBE_BINARIES) + tuple(ETCD_BINARIES)


def cache_root() -> Path:
    env = os.environ.get("SCHEDGEN_K8S_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "schedgen"


def version_dir(version: str = K8S_VERSION) -> Path:
    return cache_root() / f"k8s-{version}"


def bin_dir(version: str = K8S_VERSION) -> Path:
    return version_dir(version) / "bin"


def stamp_path(version: str = K8S_VERSION) -> Path:
    return bin_dir(version) / ".complete"


def is_built(version: str = K8S_VERSION) -> bool:
    b = bin_dir(version)
    return stamp_path(version).exists() and all((b / n).exists() for n in ALL_BINARIES)


class _Steps:
    def __init__(self, out=sys.stderr):
        self.out = out
        self.t0 = time.monotonic()

    def log(self, msg: str) -> None:
        print(f"[build +{time.monotonic() - self.t0:7.1f}s] {msg}", file=self.out, flush=True)

    def run(self, title: str, cmd: list[str], cwd: Path, env: dict, verbose_count: bool = False) -> None:
        self.log(f"{title}: {' '.join(cmd)}")
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        tail: list[str] = []
        n = 0
        last = time.monotonic()
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            del tail[:-60]
            n += 1
            now = time.monotonic()
            if verbose_count and now - last >= 20:
                self.log(f"  ... {n} packages so far (latest: {line.strip()[:90]})")
                last = now
            elif not verbose_count and now - last >= 20:
                self.log(f"  ... {line.strip()[:110]}")
                last = now
        rc = proc.wait()
        if rc != 0:
            sys.stderr.write("\n".join(tail) + "\n")
            raise RuntimeError(f"step '{title}' failed with exit code {rc}")
        self.log(f"{title}: done in {time.monotonic() - start:.1f}s")


def _go_env(vdir: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    env["CGO_ENABLED"] = "0"
    env["GOTOOLCHAIN"] = "local"
    env["GOFLAGS"] = "-mod=mod"
    # Keep build cache out of the repo; the default (~/.cache/go-build) is shared and fine.
    return env


def _staging_modules(kube_gomod: str) -> list[str]:
    mods = re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/", kube_gomod, re.M)
    required = set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s+v0\.0\.0\b", kube_gomod, re.M))
    return sorted(m for m in mods if m in required)


def _kube_gomod_text(steps: _Steps, env: dict, version: str) -> str:
    out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                         env=env, cwd=str(Path.home()), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"go mod download k8s.io/kubernetes@{version} failed: {out.stdout}{out.stderr}")
    info = json.loads(out.stdout)
    return Path(info["GoMod"]).read_text()


def build(version: str = K8S_VERSION, etcd_version: str = ETCD_VERSION, force: bool = False,
          jobs: int = 2) -> Path:
    """Build or reuse the binaries; return the bin directory.

    Concurrent callers (several pytest sessions, a CLI) serialise on a lock file; the
    later ones reuse what the first one built.
    """
    import fcntl
    steps = _Steps()
    bdir = bin_dir(version)
    if is_built(version) and not force:
        steps.log(f"reusing {bdir} ({_stamp_summary(version)})")
        return bdir
    version_dir(version).mkdir(parents=True, exist_ok=True)
    with open(version_dir(version) / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            steps.log("another process is building these binaries; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if is_built(version) and not force:
            steps.log(f"reusing {bdir} ({_stamp_summary(version)})")
            return bdir
        return _build_locked(steps, version, etcd_version, jobs)


def _stamp_summary(version: str) -> str:
    try:
        st = json.loads(stamp_path(version).read_text())
        return f"kubernetes {st['kubernetes']}, etcd {st['etcd']}, built {st['built_at']} in {st['seconds']:.0f}s"
    except (OSError, ValueError, KeyError):
        return "stamp unreadable"


def _build_locked(steps: "_Steps", version: str, etcd_version: str, jobs: int) -> Path:
    bdir = bin_dir(version)
    stamp_path(version).unlink(missing_ok=True)
    if shutil.which("go") is None:
        raise RuntimeError("Go toolchain not found on PATH")
    vdir = version_dir(version)
    vdir.mkdir(parents=True, exist_ok=True)
    bdir.mkdir(parents=True, exist_ok=True)
    env = _go_env(vdir)
    t_start = time.monotonic()
    minor = version.lstrip("v").split(".", 1)[1]  # "37.2"
    staging_version = f"v0.{minor}"
    major, minor_num = version.lstrip("v").split(".")[:2]
    ldflags = " ".join([
        "-s", "-w",
        *(f"-X {pkg}.{k}={v}" for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
          for k, v in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor_num),
                       ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"))),
    ])

    # ---- Kubernetes -------------------------------------------------------------------------
    steps.log(f"step 1/4: resolving k8s.io/kubernetes@{version}")
    kube_mod = _kube_gomod_text(steps, env, version)
    staging = _staging_modules(kube_mod)
    steps.log(f"  {len(staging)} staging modules -> {staging_version}")
    kdir = vdir / "src" / "kube"
    kdir.mkdir(parents=True, exist_ok=True)
    godebug = re.findall(r"^godebug .*$", kube_mod, re.M)
    lines = ["module schedgen.local/k8sbuild", "", f"go {GO_DIRECTIVE}", "", *godebug, "",
             f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{m} => {m} {staging_version}" for m in staging]
    lines += [")", ""]
    (kdir / "go.mod").write_text("\n".join(lines))
    (kdir / "go.sum").touch()
    pkgs = list(KUBE_BINARIES.values())
    steps.run("step 2/4: go get (download kubernetes dependencies)",
              ["go", "get", *(f"{p}@{version}" for p in pkgs)], kdir, env)
    steps.run("step 3/4: go build " + ", ".join(KUBE_BINARIES),
              ["go", "build", "-v", "-p", str(jobs), "-trimpath", "-ldflags", ldflags, "-o", str(bdir) + "/",
               *pkgs], kdir, env, verbose_count=True)

    # ---- etcd -------------------------------------------------------------------------------
    edir = vdir / "src" / "etcd"
    edir.mkdir(parents=True, exist_ok=True)
    (edir / "go.mod").write_text("\n".join([
        "module schedgen.local/etcdbuild", "", f"go {GO_DIRECTIVE}", "",
        f"require go.etcd.io/etcd/server/v3 {etcd_version}", ""]))
    (edir / "go.sum").touch()
    steps.run("step 4/4a: go get etcd", ["go", "get", f"go.etcd.io/etcd/server/v3@{etcd_version}"], edir, env)
    steps.run("step 4/4b: go build etcd",
              ["go", "build", "-v", "-p", str(jobs), "-trimpath", "-ldflags", "-s -w", "-o",
               str(bdir / "etcd"), "go.etcd.io/etcd/server/v3"], edir, env, verbose_count=True)

    total = time.monotonic() - t_start
    sizes = {n: (bdir / n).stat().st_size for n in ALL_BINARIES}
    stamp = {"kubernetes": version, "etcd": etcd_version, "seconds": round(total, 1),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sizes": sizes}
    stamp_path(version).write_text(json.dumps(stamp) + "\n")
    steps.log(f"all binaries built in {total:.0f}s: " +
              ", ".join(f"{n} {s / 1e6:.0f}MB" for n, s in sizes.items()))
    return bdir


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="build or reuse local Kubernetes binaries")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    print(build(force=a.force, jobs=a.jobs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
