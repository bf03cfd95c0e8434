"""One source of pinned versions: the lock files are compiled from pyproject.toml.

`hack/images lock` (uv) writes requirements-dev.txt (the test venv), requirements-build.txt
(the project wheel's build backend), runner/requirements.txt and operator/requirements.txt
(the images, constrained to the test venv's versions). These tests fail when pyproject.toml
and the locks drift apart, and when a Dockerfile or hack/setup.sh stops using them.
Fast: the recompile reads uv's cache (the index only on a cache miss).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import images  # hack/images.py
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {lock.path: lock for lock in images.LOCKS}
PYPROJECT_LOCKS = [lock for lock in images.LOCKS if lock.extras is not None]
# never in the runner image: the operator's and the API's stacks
NOT_IN_RUNNER = {"kopf", "kubernetes", "fastapi", "starlette", "uvicorn", "pydantic", "aiohttp",
                 "psycopg-pool", "prometheus-client", "python-multipart", "pip", "setuptools"}


def parse_lock(path: Path) -> dict[str, dict]:
    """name -> {"version", "hashes", "via"} from a uv/pip-tools requirements file."""
    pins: dict[str, dict] = {}
    current = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", line):
            current = pins.setdefault(canonicalize_name(m[1]), {"version": m[2], "hashes": 0, "via": set()})
        elif current is not None and "--hash=sha256:" in line:
            current["hashes"] += 1
        elif current is not None and (m := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line)):
            if m[1].strip() != "via":
                current["via"].add(m[1].strip())
        elif line.strip() and not line.startswith(" ") and not line.startswith("#"):
            raise AssertionError(f"{path}: unexpected line {line!r}")
    return pins


def test_locks_match_pyproject():
    """Recompiling every lock from pyproject.toml (keeping the committed pins) changes nothing."""
    problems = images.check_locks(ROOT)
    assert not problems, ("lock files drifted from pyproject.toml; run `hack/images lock` and commit "
                          "the result:\n" + "\n".join(problems))


def _copy_project(dst: Path) -> Path:
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    for lock in images.LOCKS:
        (dst / lock.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / lock.path, dst / lock.path)
    return dst


def test_drift_check_fails_when_pyproject_changes(tmp_path):
    """The check can fail: a new core dependency must show up in every lock."""
    root = _copy_project(tmp_path)
    text = (root / "pyproject.toml").read_text()
    assert '"boto3>=1.35",\n' in text
    (root / "pyproject.toml").write_text(text.replace('"boto3>=1.35",\n', '"boto3>=1.35",\n  "six>=1.16",\n', 1))
    problems = images.check_locks(root)
    drifted = {p.split("\n", 1)[0] for p in problems}
    assert any("runner/requirements.txt" in d for d in drifted), problems
    assert any("operator/requirements.txt" in d for d in drifted), problems
    assert any("requirements-dev.txt" in d for d in drifted), problems


def test_drift_check_fails_when_a_lock_is_edited_by_hand(tmp_path):
    root = _copy_project(tmp_path)
    lock = root / "runner/requirements.txt"
    lock.write_text(re.sub(r"(?m)^icalendar==\S+", "icalendar==6.0.0", lock.read_text()))
    problems = images.check_locks(root)
    assert len(problems) == 1 and "runner/requirements.txt" in problems[0], problems
    assert "-icalendar==6.0.0" in problems[0]


@pytest.mark.parametrize("lock", PYPROJECT_LOCKS, ids=lambda lk: lk.path)
def test_direct_requirements_are_pinned(lock):
    """Without uv: every requirement of the lock's pyproject groups is pinned to a version it
    allows, with hashes, and the lock's `via schedgen (pyproject.toml)` set is exactly them."""
    pins = parse_lock(ROOT / lock.path)
    wanted = {}
    for text in lock.requirements(ROOT):
        req = Requirement(text)
        wanted.setdefault(canonicalize_name(req.name), []).append(req)
    for name, reqs in wanted.items():
        assert name in pins, f"{lock.path}: {name} (pyproject.toml) is not pinned"
        for req in reqs:
            assert req.specifier.contains(pins[name]["version"], prereleases=True), \
                f"{lock.path}: {name}=={pins[name]['version']} does not satisfy {req}"
            for extra in req.extras:  # psycopg[binary] -> psycopg-binary
                assert canonicalize_name(f"{name}-{extra}") in pins, f"{lock.path}: {req} extra not pinned"
    direct = {n for n, p in pins.items() if "schedgen (pyproject.toml)" in p["via"]}
    assert direct == set(wanted), f"{lock.path}: pinned as direct but not in pyproject: " \
                                  f"{sorted(direct - set(wanted))}; missing: {sorted(set(wanted) - direct)}"
    assert all(p["hashes"] > 0 for p in pins.values()), f"{lock.path}: a pin without hashes"


def test_build_lock_pins_the_build_backend():
    pins = parse_lock(ROOT / "requirements-build.txt")
    for text in LOCKS["requirements-build.txt"].requirements(ROOT):
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name]["version"]), (text, pins)
    assert all(p["hashes"] > 0 for p in pins.values())


def test_images_carry_the_tested_versions():
    dev = parse_lock(ROOT / images.DEV_LOCK)
    runner = parse_lock(ROOT / "runner/requirements.txt")
    operator = parse_lock(ROOT / "operator/requirements.txt")
    for path, pins in (("runner/requirements.txt", runner), ("operator/requirements.txt", operator)):
        differ = {n: (p["version"], dev.get(n, {}).get("version")) for n, p in pins.items()
                  if dev.get(n, {}).get("version") != p["version"]}
        assert not differ, f"{path} pins other versions than {images.DEV_LOCK}: {differ}"
    assert set(runner) <= set(operator)


def test_runner_lock_has_no_operator_or_api_stack():
    runner = parse_lock(ROOT / "runner/requirements.txt")
    assert not NOT_IN_RUNNER & set(runner), sorted(NOT_IN_RUNNER & set(runner))
    assert {"pdfplumber", "boto3", "psycopg", "psycopg-binary", "icalendar"} <= set(runner)
    operator = parse_lock(ROOT / "operator/requirements.txt")
    assert {"kopf", "kubernetes", "fastapi", "uvicorn", "psycopg-pool"} <= set(operator)
    assert int(operator["kubernetes"]["version"].split(".")[0]) < 37  # 37 needs python-dateutil>=3


@pytest.mark.parametrize("name", ["runner", "operator"])
def test_dockerfile_installs_its_lock_only(name):
    lock = images.APP_IMAGES[name].lock
    text = (ROOT / f"Dockerfile.{name}").read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(code)
    assert "<<" not in joined, "heredocs need BuildKit"
    assert not re.search(r"(?m)^#\s*syntax=", text), "no BuildKit frontend directive"
    assert not re.search(r"==\d", joined), "no pins written by hand in the Dockerfile"
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in code
    assert f"COPY {lock} /tmp/locks/image.txt" in code
    assert "COPY requirements-build.txt /tmp/locks/build.txt" in code
    assert joined.count("--require-hashes --only-binary=:all:") == 2
    assert "--no-deps --no-index /tmp/wheels/schedgen-" in joined
    assert "pip uninstall -q -y pip setuptools" in joined
    build, final = joined.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "WORKDIR /\n" in build and "WORKDIR /src" not in build  # import checks outside the source tree
    assert "\nRUN " not in final, "the final stage has no RUN (nothing to clean, no build mounts)"
    assert "USER 65532:65532" in final and "TMPDIR=/tmp" in final
    other = {"runner": "operator", "operator": "runner"}[name]
    assert f"{other}/requirements.txt" not in joined


def test_build_context_allows_what_the_dockerfiles_copy():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    for name, img in images.APP_IMAGES.items():
        for path in (img.lock, "requirements-build.txt", "pyproject.toml", "README.md", "src"):
            assert path in allowed, f".dockerignore hides {path} from Dockerfile.{name}"


def test_setup_installs_the_test_venv_from_the_lock():
    setup = (ROOT / "hack/setup.sh").read_text()
    assert "--require-hashes --only-binary=:all: -r requirements-dev.txt -r requirements-build.txt" in setup
    assert "--no-deps --no-build-isolation -e ." in setup
    assert "-e '.[test]'" not in setup


def test_image_folders_are_not_packages():
    # a top-level operator/__init__.py would shadow the standard library's `operator`
    for folder in ("operator", "runner"):
        assert not (ROOT / folder / "__init__.py").exists()


@pytest.mark.parametrize("name", ["runner", "operator"])
def test_each_image_has_its_own_folder(name):
    """`runner/` and `operator/` are the images' folders: the lock, and a README that
    names the Dockerfile and how the lock is made."""
    img = images.APP_IMAGES[name]
    assert Path(img.lock).parent == Path(name)
    readme = (ROOT / name / "README.md").read_text()
    for fact in (img.dockerfile, "requirements.txt", "hack/images lock", "65532", "read-only root filesystem"):
        assert fact in readme, f"{name}/README.md does not say {fact!r}"
