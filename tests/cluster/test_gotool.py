"""localkube.gotool: one `go install pkg@version` into the cache, really run against a module
proxy of this test's own (GOPROXY=file://), so no network and no mock of Go."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from localkube.gotool import GoTool

MODULE, VERSION = "example.com/hello", "v1.0.0"

pytestmark = pytest.mark.go  # the Go toolchain (hack/setup.sh); out of the Python-only loop


def _module_proxy(root: Path, main_go: str) -> str:
    """A GOPROXY directory serving MODULE@VERSION with one main package at cmd/hello."""
    d = root / "proxy" / MODULE / "@v"
    d.mkdir(parents=True)
    (d / "list").write_text(VERSION + "\n")
    (d / f"{VERSION}.info").write_text('{"Version": "%s"}\n' % VERSION)
    mod = f"module {MODULE}\n\ngo 1.21\n"
    (d / f"{VERSION}.mod").write_text(mod)
    with zipfile.ZipFile(d / f"{VERSION}.zip", "w") as z:
        z.writestr(f"{MODULE}@{VERSION}/go.mod", mod)
        z.writestr(f"{MODULE}@{VERSION}/cmd/hello/main.go", main_go)
    return (root / "proxy").as_uri()


@pytest.fixture
def go_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCHEDGEN_K8S_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "gomod"))  # each test's module, not a cached one
    monkeypatch.setenv("GOSUMDB", "off")
    monkeypatch.setenv("GOFLAGS", "-mod=mod")  # go_env drops it: `go install pkg@version` refuses -mod
    yield tmp_path
    subprocess.run(["chmod", "-R", "u+w", str(tmp_path / "gomod")], check=False)  # Go keeps it read-only


def test_builds_once_names_the_binary_and_stamps_it(go_cache, monkeypatch):
    monkeypatch.setenv("GOPROXY", _module_proxy(go_cache, 'package main\nfunc main() { println("hi") }\n'))
    companions = []
    tool = GoTool("hello", f"{MODULE}/cmd/hello", VERSION, "hello-tool",
                  after_build=lambda: companions.append(1), extra_ready=lambda: bool(companions))
    assert not tool.is_built()
    binary = tool.build(log=lambda msg: None)
    assert binary == go_cache / "cache" / f"hello-{VERSION}" / "bin" / "hello-tool"
    assert subprocess.run([binary], capture_output=True, text=True).stderr == "hi\n"
    assert (binary.parent / ".complete").exists() and tool.is_built() and companions == [1]

    mtime = binary.stat().st_mtime_ns
    assert tool.build(log=lambda msg: None) == binary
    assert binary.stat().st_mtime_ns == mtime and companions == [1]  # reused, not rebuilt

    companions.clear()  # the companions went missing: restored without a rebuild
    assert tool.build(log=lambda msg: None) == binary and companions == [1] and binary.stat().st_mtime_ns == mtime


def test_a_failed_build_says_why_and_leaves_no_stamp(go_cache, monkeypatch):
    monkeypatch.setenv("GOPROXY", _module_proxy(go_cache, "package main\nfunc main() { undefined() }\n"))
    tool = GoTool("broken", f"{MODULE}/cmd/hello", VERSION, "broken")
    with pytest.raises(RuntimeError, match="undefined"):
        tool.build(log=lambda msg: None)
    assert not (tool.bin_dir() / ".complete").exists() and not tool.is_built()
