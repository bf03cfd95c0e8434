"""Container images for schedgen, built with podman/buildah (no Docker engine needed).

    hack/images build [runner|operator|pause|base|all ...] [--base auto|registry|debian]
                      [--refresh-base] [--force]
    hack/images save DIR [runner|operator|pause|all ...] [--format docker-archive|oci-archive]
    hack/images push REGISTRY [runner|operator|pause|all ...] [--tag T] [--authfile F] [--cert-dir D]
    hack/images list
    hack/images lock [--upgrade] [--check]
    hack/images podman ARGS...        podman with this project's engine settings

Images (tags `localhost/...`, so containerd and the kubelet never try a registry):

    runner    localhost/schedgen-runner:<version>     Dockerfile.runner, runner/requirements.txt
    operator  localhost/schedgen-operator:<version>   Dockerfile.operator, operator/requirements.txt
    pause     localhost/schedgen-pause:3.10           hack/pause/ (static C binary, FROM scratch)

`push` puts them in a registry as REGISTRY/schedgen-<name>:<version> and prints each as
`REGISTRY/schedgen-<name>@sha256:...` (the digest the registry stored), what the chart's
`image.repository` + `image.digest` take (docs/deploy.md, "Images and the registry").

Base image: `python:3.11-slim-bookworm` from Docker Hub when it is present or can be pulled;
otherwise (this project's machines reach package registries only) a Debian bookworm root
filesystem made with mmdebstrap from Debian packages: a build base (python3, python3-venv,
ca-certificates) and a runtime base (the same tree without python3-venv/pip/setuptools
wheels). Both are cached by their recipe in ~/.cache/schedgen/images/podman (tarballs) and in
podman's storage; `--refresh-base` rebuilds them (Debian security updates).

Application images are cached by content: the image carries a label with a hash of its
Dockerfile, lock files, pyproject.toml, README.md, src/ and the base image ids; a build
whose inputs are unchanged reuses the image without calling podman build.

Podman settings: the engine is told to use runc with cgroupfs and low default ulimits
(this sandbox cannot raise rlimits and crun rejects its hybrid cgroups) through a
project-owned containers.conf in the cache directory (CONTAINERS_CONF), never /etc. An
existing CONTAINERS_CONF in the environment wins.

Lock files (`lock`): compiled by uv from pyproject.toml, universal (any platform),
Python 3.11, binary wheels only, with hashes:

    requirements-dev.txt        core + extras test (the test venv, hack/setup.sh)
    requirements-build.txt      [build-system] requires (building the project wheel)
    runner/requirements.txt     core dependencies (the runner image)
    operator/requirements.txt   core + extras operator, api (the operator/API image)

`runner/` and `operator/` are the images' own folders: each holds its image's lock and a
README.md saying what the image is (never an `__init__.py`).

The image locks are compiled with requirements-dev.txt as constraints, so the images
carry exactly the versions the tests run with.

Existing pins are kept while they satisfy pyproject.toml (`--upgrade` re-resolves to the
newest versions); `--check` recompiles into a temporary directory and reports drift.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(os.environ.get("SCHEDGEN_IMAGES_CACHE")
                 or Path.home() / ".cache" / "schedgen" / "images" / "podman")
# Bump when the build procedure changes in a way the hashed inputs do not show.
RECIPE = "2"
CONTENT_LABEL = "io.schedgen.content-key"
REGISTRY_BASE = "docker.io/library/python:3.11-slim-bookworm"
PYTHON_VERSION = "3.11"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONTAINERS_CONF = """\
# Written by hack/images (schedgen); used through CONTAINERS_CONF, never installed in /etc.
# runc + cgroupfs: crun refuses this kind of host's hybrid cgroups. Low ulimits: without
# CAP_SYS_RESOURCE the runtime cannot raise rlimits above the current hard limits.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


# --------------------------------------------------------------------------- progress

_T0 = time.monotonic()
TIMINGS: list[tuple[str, float]] = []


def say(msg: str) -> None:
    print(f"==> [{time.strftime('%H:%M:%S')} +{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def note(msg: str) -> None:
    print(f"    {msg}", flush=True)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    say(label)
    start = time.monotonic()
    try:
        yield
    finally:
        took = time.monotonic() - start
        TIMINGS.append((label, took))
        note(f"({took:.1f}s) {label}")


def print_timings() -> None:
    if not TIMINGS:
        return
    print("\nsteps:", flush=True)
    for label, took in TIMINGS:
        print(f"  {took:7.1f}s  {label}", flush=True)
    print(f"  {time.monotonic() - _T0:7.1f}s  total", flush=True)


class Failure(Exception):
    """A step failed; the message says what to do."""


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
        capture: bool = False, check: bool = True, input: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    if not capture:
        note("$ " + " ".join(cmd))
    proc = subprocess.run(list(cmd), env=env, cwd=cwd, text=True, input=input, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else ""
        raise Failure(f"command failed (exit {proc.returncode}): {' '.join(cmd)}"
                      + (f"\n{detail}" if detail else ""))
    return proc


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """One build at a time per cache directory (tests and people share the storage)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another hack/images run ({CACHE_DIR / '.lock'})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_if_changed(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def version() -> str:
    return project()["version"]


# --------------------------------------------------------------------------- podman

def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF"):
        env["CONTAINERS_CONF"] = str(write_if_changed(CACHE_DIR / "containers.conf", CONTAINERS_CONF))
    return env


def podman(*args: str, capture: bool = False, check: bool = True,
           timeout: float | None = None) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        raise Failure("podman is not installed (apt-get install podman buildah runc)")
    return run(["podman", *args], env=podman_env(), capture=capture, check=check, timeout=timeout)


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, capture=True, check=False).returncode == 0


def inspect(ref: str, fmt: str) -> str:
    return podman("image", "inspect", "--format", fmt, ref, capture=True).stdout.strip()


def image_id(ref: str) -> str:
    return inspect(ref, "{{.Id}}")


def image_label(ref: str, key: str) -> str:
    value = inspect(ref, "{{ index .Labels \"%s\" }}" % key)
    return "" if value == "<no value>" else value


def image_size(ref: str) -> int:
    return int(inspect(ref, "{{.Size}}"))


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# --------------------------------------------------------------------------- base images

@dataclasses.dataclass(frozen=True)
class Base:
    runtime: str  # PYTHON_IMAGE
    build: str  # BUILD_IMAGE
    kind: str  # "registry" | "debian"


def _debian_spec() -> dict:
    mirror = os.environ.get("SCHEDGEN_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    security = os.environ.get("SCHEDGEN_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
    return {
        "recipe": 2,
        "suite": "bookworm",
        "variant": "essential",  # Essential: yes packages + the ones below, no apt
        "include": ["python3", "python3-venv", "ca-certificates"],
        # the runtime base: no way to (re)install pip in the final images
        "runtime_purge": ["python3-venv", "python3.11-venv", "python3-pip-whl",
                          "python3-setuptools-whl", "python3-distutils", "python3-lib2to3"],
        "sources": [f"deb {mirror} bookworm main", f"deb {mirror} bookworm-updates main",
                    f"deb {security} bookworm-security main"],
        "hooks": ["/usr/share/mmdebstrap/hooks/merged-usr"],  # no usrmerge (and perl)
        "dpkgopts": ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
                     "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
                     "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright"],
        "env": {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"},
    }


def debian_base_refs() -> tuple[str, str, str]:
    spec = _debian_spec()
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    tag = f"{spec['suite']}-{key}"
    return key, f"localhost/schedgen-base:{tag}", f"localhost/schedgen-base-build:{tag}"


def ensure_debian_base(refresh: bool = False) -> Base:
    spec = _debian_spec()
    key, runtime_ref, build_ref = debian_base_refs()
    base = Base(runtime_ref, build_ref, "debian")
    if not refresh and image_exists(runtime_ref) and image_exists(build_ref):
        note(f"reusing the Debian base images {runtime_ref}, {build_ref}"
             f" (created {inspect(runtime_ref, '{{.Created}}')[:19]}; --refresh-base rebuilds)")
        return base
    tars = {"build": CACHE_DIR / f"base-{key}-build.tar", "runtime": CACHE_DIR / f"base-{key}-runtime.tar"}
    if refresh or not all(t.exists() for t in tars.values()):
        _mmdebstrap(spec, key, tars)
    else:
        note(f"reusing the cached root filesystems {tars['build'].name}, {tars['runtime'].name}")
    changes: list[str] = []
    for name, value in spec["env"].items():
        changes += ["--change", f"ENV {name}={value}"]
    changes += ["--change", 'CMD ["/usr/bin/python3"]',
                "--change", f"LABEL io.schedgen.base-key={key}"]
    with timed("importing the Debian base root filesystems into podman"):
        for kind, ref in (("build", build_ref), ("runtime", runtime_ref)):
            podman("import", "--quiet", *changes, "--message",
                   f"schedgen {kind} base: Debian {spec['suite']} (mmdebstrap)", str(tars[kind]), ref,
                   capture=True)
            note(f"{ref}: {human(image_size(ref))}")
    return base


def _mmdebstrap(spec: dict, key: str, tars: dict[str, Path]) -> None:
    if shutil.which("mmdebstrap") is None:
        raise Failure("mmdebstrap is not installed (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        raise Failure("building the Debian base needs root (mmdebstrap, chroot dpkg)")
    work = CACHE_DIR / f"tmp-base-{key}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    build_dir, runtime_dir = work / "build", work / "runtime"
    try:
        with timed(f"mmdebstrap: Debian {spec['suite']} + {', '.join(spec['include'])} (from Debian packages)"):
            cmd = ["mmdebstrap", "--quiet", f"--variant={spec['variant']}",
                   f"--include={','.join(spec['include'])}", "--format=directory"]
            cmd += [f"--hook-dir={h}" for h in spec["hooks"]]
            cmd += [f"--dpkgopt={o}" for o in spec["dpkgopts"]]
            cmd += [spec["suite"], str(build_dir), *spec["sources"]]
            run(cmd)
            for leaked in ("etc/resolv.conf", "etc/hostname"):  # the host's, copied in by mmdebstrap
                (build_dir / leaked).unlink(missing_ok=True)
        with timed("runtime base: the same tree without python3-venv and the pip/setuptools wheels"):
            run(["cp", "-a", str(build_dir), str(runtime_dir)])
            run(["chroot", str(runtime_dir), "dpkg", "--purge", *spec["runtime_purge"]], capture=True)
        with timed("packing the root filesystems"):
            for kind, tree in (("build", build_dir), ("runtime", runtime_dir)):
                tmp = tars[kind].with_name(tars[kind].name + ".tmp")
                run(["tar", "--numeric-owner", "--xattrs", "--sort=name", "--exclude=./dev/*",
                     "-C", str(tree), "-cf", str(tmp), "."])
                tmp.replace(tars[kind])
                note(f"{tars[kind]}: {human(tars[kind].stat().st_size)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_base(mode: str, refresh: bool = False) -> Base:
    with timed(f"base image ({mode})"):
        if mode in ("auto", "registry"):
            if image_exists(REGISTRY_BASE):
                note(f"using the registry base {REGISTRY_BASE} (present locally)")
                return Base(REGISTRY_BASE, REGISTRY_BASE, "registry")
            try:
                proc = podman("pull", "--quiet", REGISTRY_BASE, capture=True, check=False, timeout=300)
                ok, why = proc.returncode == 0, (proc.stderr or "").strip().splitlines()
            except subprocess.TimeoutExpired:
                ok, why = False, ["timed out after 300s"]
            if ok:
                note(f"using the registry base {REGISTRY_BASE} (pulled)")
                return Base(REGISTRY_BASE, REGISTRY_BASE, "registry")
            reason = why[-1] if why else "unknown error"
            if mode == "registry":
                raise Failure(f"cannot pull {REGISTRY_BASE}: {reason}")
            note(f"the registry base {REGISTRY_BASE} cannot be pulled ({reason});")
            note("building the base from Debian packages with mmdebstrap instead")
        return ensure_debian_base(refresh)


# --------------------------------------------------------------------------- images

@dataclasses.dataclass(frozen=True)
class AppImage:
    name: str
    dockerfile: str
    lock: str

    @property
    def ref(self) -> str:
        return f"localhost/schedgen-{self.name}:{version()}"


APP_IMAGES = {
    "runner": AppImage("runner", "Dockerfile.runner", "runner/requirements.txt"),
    "operator": AppImage("operator", "Dockerfile.operator", "operator/requirements.txt"),
}
PAUSE_REF = "localhost/schedgen-pause:3.10"
ALL = ("runner", "operator", "pause")


def refs(names: Sequence[str]) -> dict[str, str]:
    return {n: APP_IMAGES[n].ref if n in APP_IMAGES else PAUSE_REF for n in names}


def context_files(img: AppImage) -> list[Path]:
    """What the image is built from (the .dockerignore allow-list, plus the recipe)."""
    files = [ROOT / p for p in (img.dockerfile, ".dockerignore", "pyproject.toml", "README.md",
                                "requirements-build.txt", img.lock)]
    for path in sorted((ROOT / "src").rglob("*")):
        rel = path.relative_to(ROOT).parts
        if path.is_file() and "__pycache__" not in rel and path.suffix != ".pyc" \
                and not any(p.endswith(".egg-info") for p in rel):
            files.append(path)
    return files


def content_key(img: AppImage, base: Base) -> str:
    h = hashlib.sha256(f"recipe {RECIPE}\n".encode())
    h.update(f"base {image_id(base.runtime)} {image_id(base.build)}\n".encode())
    for path in context_files(img):
        h.update(f"{path.relative_to(ROOT)} {sha256_file(path)}\n".encode())
    return h.hexdigest()


def _host_pip_settings() -> tuple[dict[str, str], Path | None]:
    """How pip reaches the package index on this machine: pip config files, then PIP_* env."""
    cfg = configparser.RawConfigParser()
    files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", str(Path.home() / ".pip" / "pip.conf"),
             str(Path.home() / ".config" / "pip" / "pip.conf")]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    cfg.read(files)
    keys = ("index-url", "extra-index-url", "trusted-host", "cert", "timeout", "default-timeout", "retries")
    settings: dict[str, str] = {}
    for section in ("global", "install"):
        if cfg.has_section(section):
            settings.update({k: v for k, v in cfg.items(section) if k in keys})
    for key in keys:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            settings[key] = value
    ca = settings.pop("cert", None) or os.environ.get("REQUESTS_CA_BUNDLE") \
        or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    return settings, (Path(ca) if Path(ca).is_file() else None)


def build_mounts() -> list[str]:
    """The host's CA bundle and pip settings, mounted into the RUN steps of a build.

    Only the build stages run pip; the final stages have no RUN, so the (empty) mount
    points buildah leaves behind never reach a shipped image."""
    settings, ca = _host_pip_settings()
    lines = ["# Written by hack/images: the host's pip settings, mounted at /etc/pip.conf during builds.",
             "[global]"]
    mounts: list[str] = []
    if ca is not None:
        lines.append("cert = /run/schedgen-build-ca.pem")
        mounts += ["--volume", f"{ca}:/run/schedgen-build-ca.pem:ro"]
    lines += [f"{k} = {v}" for k, v in sorted(settings.items())]
    conf = write_if_changed(CACHE_DIR / "build" / "pip.conf", "\n".join(lines) + "\n")
    return mounts + ["--volume", f"{conf}:/etc/pip.conf:ro"]


def build_app(img: AppImage, base: Base, force: bool = False) -> str:
    ref = img.ref
    key = content_key(img, base)
    if not force and image_exists(ref) and image_label(ref, CONTENT_LABEL) == key:
        note(f"{ref}: up to date (content key {key[:12]}), reusing")
        return ref
    previous = image_id(ref) if image_exists(ref) else None
    with timed(f"building {ref} ({img.dockerfile}, {base.kind} base)"):
        podman("build", "--file", str(ROOT / img.dockerfile), "--pull=never", "--network", "host",
               *ULIMITS, *build_mounts(),
               "--build-arg", f"PYTHON_IMAGE={base.runtime}", "--build-arg", f"BUILD_IMAGE={base.build}",
               "--label", f"{CONTENT_LABEL}={key}",
               "--label", f"org.opencontainers.image.version={version()}",
               "--tag", ref, str(ROOT))
    _drop_replaced(previous, ref)
    return ref


def _drop_replaced(previous: str | None, ref: str) -> None:
    """Remove the image a rebuild replaced (each one holds a venv layer of 100+ MB)."""
    if previous and previous != image_id(ref):
        proc = podman("rmi", previous, capture=True, check=False)
        if proc.returncode == 0:
            note(f"removed the replaced image {previous[:12]}")


def build_pause(force: bool = False) -> str:
    src = ROOT / "hack" / "pause"
    if shutil.which("gcc") is None:
        raise Failure("gcc is not installed (apt-get install gcc libc6-dev)")
    gcc = run(["gcc", "--version"], capture=True).stdout.splitlines()[0]
    cflags = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"]
    h = hashlib.sha256(f"recipe {RECIPE}\n{gcc}\n{cflags}\n".encode())
    for name in ("pause.c", "Containerfile"):
        h.update(f"{name} {sha256_file(src / name)}\n".encode())
    key = h.hexdigest()
    if not force and image_exists(PAUSE_REF) and image_label(PAUSE_REF, CONTENT_LABEL) == key:
        note(f"{PAUSE_REF}: up to date (content key {key[:12]}), reusing")
        return PAUSE_REF
    with timed(f"building {PAUSE_REF} (static pause binary, FROM scratch)"):
        ctx = CACHE_DIR / "pause-context"
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        shutil.copy2(src / "Containerfile", ctx / "Containerfile")
        run(["gcc", *cflags, "-o", str(ctx / "pause"), str(src / "pause.c")])
        previous = image_id(PAUSE_REF) if image_exists(PAUSE_REF) else None
        podman("build", "--file", str(ctx / "Containerfile"), "--pull=never", *ULIMITS,
               "--label", f"{CONTENT_LABEL}={key}", "--tag", PAUSE_REF, str(ctx))
        _drop_replaced(previous, PAUSE_REF)
    return PAUSE_REF


def build(names: Sequence[str], *, base_mode: str = "auto", refresh_base: bool = False,
          force: bool = False) -> dict[str, str]:
    """Build (or reuse) the named images; returns name -> ref."""
    with cache_lock():
        return _build_locked(names, base_mode=base_mode, refresh_base=refresh_base, force=force)


def _build_locked(names: Sequence[str], *, base_mode: str = "auto", refresh_base: bool = False,
                  force: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    base = None
    if "base" in names or any(n in APP_IMAGES for n in names):
        base = resolve_base(base_mode, refresh_base)
        if "base" in names:
            out.update({"base": base.runtime, "base-build": base.build})
    for name in names:
        if name in APP_IMAGES:
            with timed(f"image {name}"):
                out[name] = build_app(APP_IMAGES[name], base, force)
        elif name == "pause":
            with timed("image pause"):
                out[name] = build_pause(force)
    return out


def report(refs_: dict[str, str]) -> None:
    if not refs_:
        return
    print("\nimages:", flush=True)
    for ref in refs_.values():
        print(f"  {ref:40} {image_id(ref)[:12]}  {human(image_size(ref))}", flush=True)


def save(directory: Path, names: Sequence[str], fmt: str = "docker-archive", **build_opts) -> list[Path]:
    """Save images as archives `ctr -n k8s.io images import FILE` accepts (built if needed).

    One lock over the build and the save: another checkout building the same tag in
    between must not have its image saved under this one's name."""
    directory.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    index_lines = []
    with cache_lock():
        built = _build_locked(names, **build_opts)
        for name, ref in built.items():
            repo, tag = ref.rsplit(":", 1)
            out = directory / f"{repo.rsplit('/', 1)[1]}_{tag}.{fmt}.tar"
            stamp = out.with_name(out.name + ".id")
            iid = image_id(ref)
            if out.exists() and stamp.exists() and stamp.read_text().strip() == iid:
                note(f"{out}: up to date")
            else:
                with timed(f"saving {ref} -> {out}"):
                    tmp = out.with_name(out.name + ".tmp")
                    tmp.unlink(missing_ok=True)
                    podman("save", "--quiet", "--format", fmt, "--output", str(tmp), ref)
                    tmp.replace(out)
                    stamp.write_text(iid + "\n")
            note(f"{out.name}: {human(out.stat().st_size)}")
            files.append(out)
            index_lines.append(f"{out.name}\t{ref}\t{iid}")
    (directory / "images.txt").write_text("\n".join(index_lines) + "\n")
    print("\nimport into containerd with:", flush=True)
    for f in files:
        print(f"  ctr -n k8s.io images import {f}", flush=True)
    return files


def registry_repository(registry: str, name: str) -> str:
    """Where image `name` goes in a registry: REGISTRY/schedgen-<name> (REGISTRY may hold a path)."""
    return f"{registry.rstrip('/')}/schedgen-{name}"


def push(names: Sequence[str], registry: str, *, tag: str | None = None, authfile: Path | None = None,
         cert_dir: Path | None = None, **build_opts) -> dict[str, str]:
    """Push the named images (built or reused) to `registry` as schedgen-<name>:<tag> and return
    name -> `repository@sha256:...`, the digest the registry stored: what a chart should
    reference."""
    built = build([n for n in names if n in APP_IMAGES or n == "pause"], **build_opts)
    # by image id, taken at once: another checkout sharing the storage may re-tag the ref meanwhile
    ids = {name: image_id(ref) for name, ref in built.items()}
    return {name: push_ref(ids[name], registry_repository(registry, name), tag or version(), authfile=authfile,
                           cert_dir=cert_dir) for name in built}


def push_ref(ref: str, repository: str, tag: str, *, authfile: Path | None = None,
             cert_dir: Path | None = None) -> str:
    """`podman push ref repository:tag`; returns `repository@sha256:...` (podman --digestfile).
    TLS is always verified (`cert_dir`: extra CAs, *.crt); credentials come from `authfile` (a
    docker config.json), never the command line."""
    with tempfile.TemporaryDirectory(prefix="schedgen-push-") as tmp:
        digestfile = Path(tmp) / "digest"
        args = ["push", "--quiet", "--tls-verify=true", "--digestfile", str(digestfile)]
        if authfile:
            args += ["--authfile", str(authfile)]
        if cert_dir:
            args += ["--cert-dir", str(cert_dir)]
        with timed(f"pushing {ref} -> {repository}:{tag}"):
            podman(*args, ref, f"docker://{repository}:{tag}", capture=True)
        pushed = f"{repository}@{digestfile.read_text().strip()}"
    note(pushed)
    return pushed


# --------------------------------------------------------------------------- locks

@dataclasses.dataclass(frozen=True)
class Lock:
    path: str
    extras: tuple[str, ...] | None  # None: pyproject [build-system] requires
    # compiled with the test venv's lock as constraints: the images run the tested versions
    constrained: bool = False

    def requirements(self, root: Path = ROOT) -> list[str]:
        """The top-level requirements this lock is compiled from."""
        data = tomllib.loads((root / "pyproject.toml").read_text())
        if self.extras is None:
            return list(data["build-system"]["requires"])
        proj = data["project"]
        reqs, todo, seen = list(proj.get("dependencies", [])), list(self.extras), set()
        while todo:
            extra = todo.pop()
            if extra in seen:
                continue
            seen.add(extra)
            for req in proj.get("optional-dependencies", {}).get(extra, []):
                name = req.split("[", 1)[0].strip()
                if name == proj["name"]:  # self-reference, e.g. schedgen[operator,api]
                    todo += [e.strip() for e in req.split("[", 1)[1].split("]", 1)[0].split(",")]
                else:
                    reqs.append(req)
        return reqs


DEV_LOCK = "requirements-dev.txt"
LOCKS = (  # in compile order: the image locks are constrained by the dev lock
    Lock(DEV_LOCK, ("test",)),
    Lock("requirements-build.txt", None),
    Lock("runner/requirements.txt", (), constrained=True),
    Lock("operator/requirements.txt", ("operator", "api"), constrained=True),
)
UV_ARGS = ("pip", "compile", "--quiet", "--no-config", "--universal", "--python-version", PYTHON_VERSION,
           "--generate-hashes", "--only-binary", ":all:", "--custom-compile-command", "hack/images lock")


def find_uv() -> str:
    for cand in (os.environ.get("SCHEDGEN_UV"), str(ROOT / ".venv" / "bin" / "uv"), shutil.which("uv")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    raise Failure("uv not found: run hack/setup.sh (requirements-dev.txt has it) or pip install uv")


def compile_lock(lock: Lock, root: Path, output: Path, *, offline: bool = False,
                 upgrade: bool = False) -> subprocess.CompletedProcess:
    """uv pip compile into `output`; pins already in `output` are kept when still valid."""
    cmd = [find_uv(), *UV_ARGS, "--output-file", str(output)]
    settings, _ = _host_pip_settings()
    if settings.get("index-url"):
        cmd += ["--default-index", settings["index-url"]]
    if offline:
        cmd.append("--offline")
    if upgrade:
        cmd.append("--upgrade")
    if lock.constrained:
        cmd += ["--constraint", DEV_LOCK]
    stdin = None
    if lock.extras is None:
        cmd.append("-")
        stdin = "\n".join(lock.requirements(root)) + "\n"
    else:
        cmd.append("pyproject.toml")
        for extra in lock.extras:
            cmd += ["--extra", extra]
    return run(cmd, cwd=root, capture=True, check=False, input=stdin)


def check_locks(root: Path = ROOT) -> list[str]:
    """Recompile every lock (from uv's cache when it can) into a temporary directory,
    seeded with the committed pins; returns the drift as unified diffs (empty: in sync)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="schedgen-lockcheck-") as tmp:
        for lock in LOCKS:
            committed = root / lock.path
            if not committed.exists():
                problems.append(f"{lock.path}: missing (run hack/images lock)")
                continue
            out = Path(tmp) / lock.path.replace("/", "__")
            shutil.copy2(committed, out)
            proc = compile_lock(lock, root, out, offline=True)
            if proc.returncode != 0:  # not in uv's cache yet: ask the index
                shutil.copy2(committed, out)
                proc = compile_lock(lock, root, out)
            if proc.returncode != 0:
                problems.append(f"{lock.path}: uv pip compile failed:\n{proc.stderr.strip()}")
                continue
            old, new = committed.read_text(), out.read_text()
            if old != new:
                diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                                    f"{lock.path} (committed)", f"{lock.path} (from pyproject.toml)"))
                problems.append(diff)
    return problems


def lock(upgrade: bool = False, root: Path = ROOT) -> None:
    for lk in LOCKS:
        with timed(f"compiling {lk.path}" + (" (upgrade)" if upgrade else "")):
            out = root / lk.path
            out.parent.mkdir(parents=True, exist_ok=True)
            proc = compile_lock(lk, root, out, offline=False, upgrade=upgrade)
            if proc.returncode != 0:
                raise Failure(f"uv pip compile for {lk.path} failed:\n{proc.stderr.strip()}")
            pins = sum(1 for line in out.read_text().splitlines() if line[:1].isalnum())
            note(f"{lk.path}: {pins} pinned packages")


# --------------------------------------------------------------------------- CLI

def _names(values: Sequence[str], allowed: Sequence[str]) -> list[str]:
    names: list[str] = []
    for v in values or ["all"]:
        for n in (ALL if v == "all" else [v]):
            if n not in allowed:
                raise SystemExit(f"unknown image {v!r}; choose from {', '.join([*allowed, 'all'])}")
            if n not in names:
                names.append(n)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["podman"]:
        os.execvpe("podman", ["podman", *argv[1:]], podman_env())
    parser = argparse.ArgumentParser(prog="hack/images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or reuse) images")
    b.add_argument("images", nargs="*", metavar="runner|operator|pause|base|all")
    s = sub.add_parser("save", help="save images as archives for `ctr images import`")
    s.add_argument("dir", type=Path)
    s.add_argument("images", nargs="*", metavar="runner|operator|pause|all")
    s.add_argument("--format", choices=("docker-archive", "oci-archive"), default="docker-archive")
    for p in (b, s):
        p.add_argument("--base", choices=("auto", "registry", "debian"), default="auto",
                       help="auto: the registry python image if it can be pulled, else a Debian base")
        p.add_argument("--refresh-base", action="store_true", help="rebuild the Debian base")
        p.add_argument("--force", action="store_true", help="build even when the content key matches")
    pu = sub.add_parser("push", help="push images to a registry; print their refs by digest")
    pu.add_argument("registry", help="host[:port][/path] of the registry")
    pu.add_argument("images", nargs="*", metavar="runner|operator|pause|all")
    pu.add_argument("--tag", help="the tag to push (default: the project version)")
    pu.add_argument("--authfile", type=Path, help="credentials (docker config.json; `podman login --authfile`)")
    pu.add_argument("--cert-dir", type=Path, help="a directory of extra CA certificates (*.crt)")
    sub.add_parser("list", help="the images and their sizes")
    lk = sub.add_parser("lock", help="compile the lock files from pyproject.toml")
    lk.add_argument("--upgrade", action="store_true", help="newest versions allowed by pyproject.toml")
    lk.add_argument("--check", action="store_true", help="fail when a lock differs from pyproject.toml")
    sub.add_parser("podman", help="run podman with the project's engine settings")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            names = _names(args.images, [*ALL, "base"])
            built = build(names, base_mode=args.base, refresh_base=args.refresh_base, force=args.force)
            print_timings()
            report(built)
        elif args.command == "save":
            save(args.dir, _names(args.images, ALL), args.format, base_mode=args.base,
                 refresh_base=args.refresh_base, force=args.force)
            print_timings()
        elif args.command == "push":
            pushed = push(_names(args.images, ALL), args.registry, tag=args.tag, authfile=args.authfile,
                          cert_dir=args.cert_dir)
            print_timings()
            print("\n".join(f"{n}\t{r}" for n, r in pushed.items()))
        elif args.command == "list":
            report({n: r for n, r in refs(ALL).items() if image_exists(r)})
        elif args.command == "lock":
            if args.check:
                problems = check_locks()
                for p in problems:
                    print(p, file=sys.stderr)
                if problems:
                    print("lock files drifted from pyproject.toml: run hack/images lock", file=sys.stderr)
                    return 1
                print("lock files match pyproject.toml")
            else:
                lock(args.upgrade)
                print_timings()
    except Failure as exc:
        print_timings()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
