"""The chart as an OCI artifact: package it (optionally with image digests baked into its
values), push it to a registry, install a release from ``oci://`` -- with helm-python-sdk (the
Helm v4 engine; no helm binary).

Used by ``hack/release`` and the chart e2e (tests/chart/test_install.py).

Registries with a private CA (the local cluster's, hack/localkube/registry.py): Helm's Go TLS
reads the CAs it trusts from ``SSL_CERT_FILE`` when its library starts, and the SDK has no
``--ca-file``; so pushes, pulls and installs from such a registry run in a child Python process
whose environment names the CA bundle (``env``, e.g. ``Registry.trust_env()``). Credentials go
to the child on stdin, never on a command line.

    >>> tgz = package(CHART, out_dir, version="1.2.3", images={"runner": "reg/schedgen-runner@sha256:..."})
    >>> push(tgz, "reg:5000/charts", ("user", "pw"), env=registry.trust_env())
    {'ref': 'reg:5000/charts/schedgen:1.2.3', 'digest': 'sha256:...'}
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "schedgen"
COMPONENTS = ("operator", "runner")  # the chart's top-level keys with an `image:` block
CHILD_TIMEOUT = 900


class ChartError(RuntimeError):
    pass


# ------------------------------------------------------------------------------ package
def pin_images(values_text: str, images: dict[str, str]) -> str:
    """values.yaml with `<component>.image.repository`/`digest` set from `repo@sha256:...`
    refs, comments and layout kept (a line edit, not a YAML round trip)."""
    out, component, in_image = [], None, False
    for line in values_text.splitlines(keepends=True):
        top = re.match(r"^([A-Za-z][\w-]*):", line)
        if top:
            component, in_image = top.group(1), False
        elif re.match(r"^  image:\s*$", line):
            in_image = True
        elif re.match(r"^  \S", line):
            in_image = False
        elif in_image and component in images:
            repository, digest = images[component].split("@", 1)
            line = _set_scalar(line, "repository", repository)
            line = _set_scalar(line, "digest", digest)
        out.append(line)
    return "".join(out)


def _set_scalar(line: str, key: str, value: str) -> str:
    return re.sub(rf"^(    {key}:\s*)(\"[^\"]*\"|\S+)", lambda m: m.group(1) + json.dumps(value), line)


def package(destination: Path, *, version: str | None = None, app_version: str | None = None,
            images: dict[str, str] | None = None, chart: Path = CHART) -> Path:
    """``helm package`` the chart into `destination`; `images` (component -> repo@digest) are
    baked into its values.yaml. Returns the archive (``schedgen-<version>.tgz``)."""
    import helm_python as helm

    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="schedgen-chart-") as tmp:
        copy = Path(tmp) / chart.name
        shutil.copytree(chart, copy, symlinks=False)  # crds/ is a link to the repository's crds/
        if images:
            unknown = set(images) - set(COMPONENTS)
            if unknown:
                raise ChartError(f"no image block for {sorted(unknown)} in the chart's values")
            values = copy / "values.yaml"
            values.write_text(pin_images(values.read_text(), images))
        archive = helm.package(str(copy), destination=str(destination), version=version, app_version=app_version)
    return Path(archive)


# ------------------------------------------------------------------------------ registry
def push(archive: Path, remote: str, credentials: tuple[str, str] | None = None,
         env: dict[str, str] | None = None) -> dict:
    """Push a packaged chart to ``oci://<remote>`` (host[:port]/path); returns the child's
    answer (``ref``, ``digest``)."""
    return _child("push", {"archive": str(archive), "remote": remote, "credentials": credentials}, env)


def install(ref: str, version: str, *, name: str, namespace: str, values: dict, kubeconfig: Path,
            credentials: tuple[str, str] | None = None, env: dict[str, str] | None = None,
            timeout: int = 300) -> dict:
    """``helm install NAME oci://REF --version VERSION --wait`` (the watcher); the release as
    the SDK returns it (with its ``manifest``)."""
    return _child("install", {"ref": ref, "version": version, "name": name, "namespace": namespace,
                              "values": values, "kubeconfig": str(kubeconfig), "credentials": credentials,
                              "timeout": timeout}, env, timeout=timeout + 120)


def tags(ref: str, credentials: tuple[str, str] | None = None, env: dict[str, str] | None = None) -> list[str]:
    """The chart versions stored at ``oci://REF``, newest first."""
    return _child("tags", {"ref": ref, "credentials": credentials}, env)["tags"]


def _child(op: str, args: dict, env: dict[str, str] | None, timeout: float = CHILD_TIMEOUT) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", op], input=json.dumps(args), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise ChartError(f"helm {op} failed: {done.stderr.strip()[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the child
def _client(host: str, credentials, workdir: str):
    import helm_python as helm
    from helm_python.registry import RegistryClient

    client = RegistryClient(credentials_file=str(Path(workdir) / "registry.json"))
    if credentials:
        client.login(host, *credentials)
    return helm, client


def _host(ref: str) -> str:
    return ref.removeprefix("oci://").split("/", 1)[0]


def _run_child(op: str, args: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="schedgen-helm-") as tmp:
        if op == "push":
            helm, client = _client(_host(args["remote"]), args["credentials"], tmp)
            remote = args["remote"].removeprefix("oci://").rstrip("/")
            client.push(args["archive"], f"oci://{remote}")
            chart = helm.Chart.load_archive(Path(args["archive"]).read_bytes())
            ref = f"{remote}/{chart.name}:{chart.version}"
            return {"ref": ref, "digest": client.resolve(f"oci://{ref}")["digest"]}
        if op == "tags":
            _, client = _client(_host(args["ref"]), args["credentials"], tmp)
            return {"tags": client.tags(f"oci://{args['ref'].removeprefix('oci://')}")}
        if op == "install":
            helm, client = _client(_host(args["ref"]), args["credentials"], tmp)
            cfg = helm.Config(kubeconfig_path=args["kubeconfig"], namespace=args["namespace"])
            cfg.set_registry_client(client)
            release = cfg.install(f"oci://{args['ref'].removeprefix('oci://')}", args["name"], args["values"],
                                  namespace=args["namespace"], chart_version=args["version"],
                                  wait="watcher", timeout=args["timeout"])
            return dict(release)
    raise ChartError(f"unknown operation {op}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"] or len(sys.argv) != 3:
        raise SystemExit("internal: python chart_oci.py --child push|tags|install < args.json")
    print(json.dumps(_run_child(sys.argv[2], json.loads(sys.stdin.read())), default=str))
