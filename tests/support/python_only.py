"""Run pytest the way the Python-only loop does (README "Python-only loop"): as an ordinary
user (uid 65534), in a copy of the checkout that user owns, with a PATH of the venv and
the system less Go, podman, buildah, runc and kubectl, an empty HOME and an empty build
cache (so no MinIO or Kubernetes binary built earlier on this machine can be found).

One allowance: the test venv's interpreter lives under /root (pyenv), which an ordinary
user cannot read, so the process keeps CAP_DAC_READ_SEARCH (read and search only: it
cannot write, chown or bind where its uid may not). `python -m pytest` in it is what a
developer runs after `pip install -e '.[dev]'`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from child_process import ROOT

# A test using the fixture needs what it names (promtool: tests/observability/test_rules.py).
NEEDS_BY_FIXTURE = {"s3": "minio", "local_cluster": "kube", "promtool": "go"}
NEEDS_BEYOND_PYTHON = ("kube", "minio", "go", "containers", "root")  # the full setup (hack/setup.sh): `cluster` too
USER = 65534  # nobody
BEYOND_PYTHON = {"go", "gofmt", "podman", "buildah", "runc", "crun", "ctr", "containerd", "kubectl",
                 "mmdebstrap", "minio"}


def mark_needs(item) -> None:
    """Mark what a collected test needs by the fixtures it uses, and `cluster` if any of it
    is beyond Python and pip (tests/conftest.py calls this before `-m` selects). A test
    marked `cluster` by hand is a Kubernetes test (`kube`): it starts a control plane."""
    used = set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("cluster") is not None and item.get_closest_marker("kube") is None:
        item.add_marker("kube")
    for fixture, marker in NEEDS_BY_FIXTURE.items():
        if fixture in used and item.get_closest_marker(marker) is None:
            item.add_marker(marker)
    if item.get_closest_marker("cluster") is None and any(item.get_closest_marker(m) for m in NEEDS_BEYOND_PYTHON):
        item.add_marker("cluster")


def bin_without_tools(where: Path) -> Path:
    """A directory of links to /usr/bin and /bin, less the tools beyond Python."""
    where.mkdir()
    for source in (Path("/usr/bin"), Path("/bin")):
        for tool in source.iterdir():
            link = where / tool.name
            if tool.name not in BEYOND_PYTHON and not link.exists():
                link.symlink_to(tool)
    return where


def checkout_copy(base: Path) -> Path:
    """The checkout's files (tracked and new, not ignored: what `git ls-files` lists),
    without .git, caches or venvs; the fixtures beside it as in the workspace (../shared)."""
    repo = base / "repo"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() or source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name, follow_symlinks=False)
    (base / "shared").symlink_to(ROOT.parent / "shared")
    return repo


def run_as_user(base: Path, pytest_args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m pytest ARGS` in a fresh copy under `base` (made here), as USER."""
    repo = checkout_copy(base)
    home, cache = base / "home", base / "cache"
    home.mkdir()
    cache.mkdir()
    path = bin_without_tools(base / "bin")
    for owned in (base, repo, home, cache):
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(owned)], check=True)
    venv_bin = Path(sys.executable).parent  # first on PATH, as in an activated venv
    env = {"HOME": str(home), "PATH": f"{venv_bin}:{path}", "SCHEDGEN_K8S_CACHE": str(cache), "LANG": "C.UTF-8",
           "PYTHONPATH": str(repo / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    argv = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
    return subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True)


def can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None
