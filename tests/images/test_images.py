"""The images, run with podman the way a cluster runs them.

Builds (or reuses: `hack/images` caches by content, so a second run takes about a second)
localhost/schedgen-runner, localhost/schedgen-operator and localhost/schedgen-pause, then
runs them as uid 65532 with a read-only root filesystem and no network: the runner parses
a real schedule PDF exactly like the test venv does and carries no operator/API stack, the
operator image imports the operator and the API, no image has pip, the pause image blocks
until SIGTERM. The saved archives import into containerd with `ctr images import`.
A cold build (Debian base with mmdebstrap + both images) takes about two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import images  # hack/images.py
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.containers]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
RUN = ["run", "--rm", "--read-only", "--network", "none"]


@pytest.fixture(scope="module")
def refs() -> dict[str, str]:
    return images.build(images.ALL)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return images.podman(*args, capture=True, check=check)


def config(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]["Config"]


def python_in(ref: str, code: str) -> subprocess.CompletedProcess:
    return podman(*RUN, "--entrypoint", "python", ref, "-c", code, check=False)


FIND = ("import importlib.util as u, json, shutil, os; "
        "print(json.dumps({'found': {m: bool(u.find_spec(m)) for m in %r}, "
        "'pip_on_path': [p for p in ('pip', 'pip3') if shutil.which(p)], 'uid': os.getuid(), "
        "'gid': os.getgid(), 'tmpdir': os.environ.get('TMPDIR')}))")


@pytest.mark.parametrize("name", ["runner", "operator"])
def test_image_config(refs, name):
    cfg = config(refs[name])
    assert cfg["User"] == "65532:65532"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].startswith("/opt/schedgen/bin:") and "TMPDIR" in env
    assert cfg["Labels"]["org.opencontainers.image.version"] == images.version()
    if name == "runner":
        assert cfg["Entrypoint"] == ["schedgen-runner"]
    else:
        assert cfg["Cmd"] == ["schedgen-operator"]


def test_runner_parses_a_pdf_read_only_as_uid_65532(refs, tmp_path):
    pdf = FIXTURES / "UP_TST_PDF.pdf"
    assert pdf.is_file(), f"missing fixture {pdf}"
    expected = subprocess.run([sys.executable, "-m", "schedgen.cli", "parse", str(pdf)],
                              capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    proc = podman(*RUN, "--volume", f"{FIXTURES}:/in:ro", "--entrypoint", "schedgen",
                  refs["runner"], "parse", f"/in/{pdf.name}", check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == json.loads(expected)
    assert got["events"], "no events parsed"


def test_runner_entrypoint_reports_missing_configuration(refs):
    """`schedgen-runner` starts (all its imports work) and fails as the Job contract says."""
    proc = podman(*RUN, refs["runner"], check=False)
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    first = json.loads((proc.stdout + proc.stderr).strip().splitlines()[0])
    assert first["code"] == "ConfigurationError"


def test_runner_has_no_operator_api_or_pip(refs):
    mods = ["schedgen.runner.main", "boto3", "pdfplumber", "psycopg", "icalendar",
            "kopf", "kubernetes", "fastapi", "starlette", "uvicorn", "aiohttp", "psycopg_pool",
            "prometheus_client", "pip", "setuptools", "ensurepip", "pydantic", "pydantic_settings", "pythonjsonlogger"]
    proc = python_in(refs["runner"], FIND % mods)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    present = {m for m, found in out["found"].items() if found}
    assert present == {"schedgen.runner.main", "boto3", "pdfplumber", "psycopg", "icalendar", "pythonjsonlogger"}, present
    assert out["pip_on_path"] == []
    assert (out["uid"], out["gid"], out["tmpdir"]) == (65532, 65532, "/tmp")


def test_operator_image_runs_the_operator_and_the_api(refs):
    ref = refs["operator"]
    code = ("import schedgen.operator.main, schedgen.operator.handlers, schedgen.api.main, "
            "schedgen.api.app, schedgen.runner.main; " + FIND % ["kopf", "fastapi", "pydantic_settings", "pip",
                                                                 "setuptools"])
    proc = python_in(ref, code)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["found"] == {"kopf": True, "fastapi": True, "pydantic_settings": True, "pip": False, "setuptools": False}
    assert out["pip_on_path"] == [] and out["uid"] == 65532
    for command in ("schedgen-operator", "schedgen-api"):
        proc = podman(*RUN, ref, command, "--help", check=False)
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: {command}"), proc.stderr


def test_read_only_root_only_tmp_is_writable(refs):
    code = ("import tempfile, os\n"
            "with tempfile.NamedTemporaryFile() as f: print(f.name)\n"
            "try:\n    open('/opt/schedgen/x', 'w')\nexcept OSError as e: print(type(e).__name__)\n")
    proc = podman(*RUN, "--tmpfs", "/tmp", "--entrypoint", "python", refs["runner"], "-c", code, check=False)
    assert proc.returncode == 0, proc.stderr
    name, err = proc.stdout.split()
    assert name.startswith("/tmp/") and err in ("PermissionError", "OSError")


def test_pause_blocks_until_sigterm(refs):
    ref = refs["pause"]
    cfg = config(ref)
    assert cfg["Entrypoint"] == ["/pause"] and cfg["User"] == "65535:65535"
    assert images.image_size(ref) < 2_000_000
    for signal in ("TERM", "INT"):
        cid = podman("run", "--detach", "--read-only", "--network", "none", ref).stdout.strip()
        try:
            time.sleep(1)
            state = podman("inspect", "--format", "{{.State.Running}}", cid).stdout.strip()
            assert state == "true", "pause exited on its own"
            start = time.monotonic()
            podman("kill", "--signal", signal, cid)
            code = podman("wait", cid).stdout.strip()
            assert code == "0" and time.monotonic() - start < 5, (signal, code)
        finally:
            podman("rm", "--force", cid, check=False)


def test_saved_archives_import_into_containerd(refs, tmp_path):
    files = images.save(tmp_path / "out", ["runner", "pause"])
    for f in files:
        with tarfile.open(f) as t:
            manifest = json.load(t.extractfile("manifest.json"))
        assert [m["RepoTags"] for m in manifest] in ([[refs["runner"]]], [[refs["pause"]]])
    assert shutil.which("containerd") and shutil.which("ctr"), "containerd/ctr not installed"
    # a private containerd (own root, state, socket): the node's is not touched
    base = Path(tempfile.mkdtemp(prefix="schedgen-ctrd-", dir="/tmp"))
    sock = base / "containerd.sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    log = open(base / "containerd.log", "w")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (base / "containerd.log").read_text()
            time.sleep(0.1)
        ctr = ["ctr", "--address", str(sock), "--namespace", "k8s.io"]
        for f in files:
            subprocess.run([*ctr, "images", "import", str(f)], check=True, capture_output=True, timeout=300)
        listed = subprocess.run([*ctr, "images", "list", "--quiet"], check=True, capture_output=True,
                                text=True).stdout.split()
        assert {refs["runner"], refs["pause"]} <= set(listed), listed
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_second_build_reuses_everything(refs):
    images.build(images.ALL)  # catches up if someone edited src/ since the fixture built
    ids = {n: images.image_id(r) for n, r in refs.items()}
    start = time.monotonic()
    again = images.build(images.ALL)
    took = time.monotonic() - start
    assert again == refs and {n: images.image_id(r) for n, r in again.items()} == ids
    assert took < 10, f"an unchanged build took {took:.1f}s"


def test_podman_engine_settings_are_project_owned():
    env = images.podman_env()
    if os.environ.get("CONTAINERS_CONF"):
        return
    conf = Path(env["CONTAINERS_CONF"])
    assert conf.is_file() and ROOT not in conf.parents and not str(conf).startswith("/etc/")
    assert 'runtime = "runc"' in conf.read_text()
