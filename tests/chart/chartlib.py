"""Helpers for the chart tests: render charts/schedgen with helm-python-sdk (the Helm v4
engine, no helm binary), and build kubeconfigs from a ServiceAccount's own token."""

from __future__ import annotations

import base64
import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "schedgen"
REPO_CRDS = ROOT / "crds"
FIXTURES = ROOT.parent / "shared" / "fixtures"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
from schedgen.parsejob import GROUP, PLURAL, VERSION  # noqa: E402,F401


# What every install must say and the chart cannot default: the S3 endpoint runner pods may
# reach (networkPolicy.s3.to; the render fails without it). render() and notes() merge these
# under the values they are given (an address of TEST-NET-1: nothing real); required=False
# renders the chart's own defaults alone.
REQUIRED_VALUES = {"networkPolicy": {"s3": {"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}]}}}


def with_required(values: dict | None) -> dict:
    return deep_merge(REQUIRED_VALUES, values or {})


def chart():
    import helm_python as helm

    return helm.Chart.load(str(CHART))


def render(values: dict | None = None, *, name: str = "schedgen", namespace: str = "schedgen-system",
           with_crds: bool = False, api_versions: list[str] | None = None,
           required: bool = True) -> list[dict[str, Any]]:
    """The manifests of a `helm install` with these values, as objects (NOTES.txt left out).
    api_versions: extra APIs the cluster is said to serve (.Capabilities.APIVersions);
    required: merge REQUIRED_VALUES under ``values`` (False: exactly these values)."""
    if required:
        values = with_required(values)
    c = chart()
    if api_versions:
        out = _render_with_api_versions(c, values or {}, name, namespace, api_versions)
    else:
        out = c.render(values or {}, name=name, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    if with_crds:
        for crd in c.crds:
            docs.extend(d for d in yaml.safe_load_all(crd["data"]) if d)
    for path in sorted(out):
        if not path.endswith((".yaml", ".yml")):
            continue
        docs.extend(d for d in yaml.safe_load_all(out[path]) if d)
    return docs


def _render_with_api_versions(c, values: dict, name: str, namespace: str, api_versions: list[str]) -> dict:
    """Chart.render has no api_versions argument; the engine's render options do
    (`helm template --api-versions`), so call it with them."""
    import json

    from helm_python import _native

    opts = {"name": name, "namespace": namespace, "is_install": True, "api_versions": api_versions}
    return json.loads(_native.call_string("helm_render", c._raw(), json.dumps(values), json.dumps(opts)))


def notes(values: dict | None = None, *, name: str = "schedgen", namespace: str = "schedgen-system") -> str:
    out = chart().render(with_required(values), name=name, namespace=namespace, is_install=True)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def find(docs: Iterable[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def one(docs: Iterable[dict], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_specs(docs: Iterable[dict]) -> list[tuple[str, dict]]:
    """(object name, pod spec) of every workload in the manifests."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def write_manifests(docs: Iterable[dict], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def deep_merge(base: dict, *overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for ov in overrides:
        for k, v in ov.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
    return out


# --- ServiceAccount identities -----------------------------------------------------


def service_account_kubeconfig(cluster, admin_api, namespace: str, sa: str, directory: Path,
                               seconds: int = 3600) -> Path:
    """A kubeconfig authenticating with a fresh token of `namespace/sa` (TokenRequest API),
    the cluster's CA and server, and nothing else."""
    from kubernetes import client

    core = client.CoreV1Api(admin_api)
    req = core.create_namespaced_service_account_token(
        sa, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": seconds}})
    token = req.status.token
    ca = Path(cluster.pki / "ca.crt").read_bytes()
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": f"{namespace}:{sa}", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": f"{namespace}:{sa}",
                                                "namespace": namespace}}],
        "current-context": "sa",
    }
    path = directory / f"{namespace}-{sa}.kubeconfig"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    path.chmod(0o600)
    return path


def api_client_for(kubeconfig: Path):
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def can_i(api_client, verb: str, resource: str, *, namespace: str | None = None, group: str = "",
          subresource: str = "", name: str = "") -> bool:
    """SelfSubjectAccessReview as the client's own identity."""
    from kubernetes import client

    attrs = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attrs["namespace"] = namespace
    if subresource:
        attrs["subresource"] = subresource
    if name:
        attrs["name"] = name
    review = client.AuthorizationV1Api(api_client).create_self_subject_access_review(
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
         "spec": {"resourceAttributes": attrs}})
    return bool(review.status.allowed)


def whoami(api_client) -> str:
    from kubernetes import client

    review = client.AuthenticationV1Api(api_client).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return review.status.user_info.username


def container_env(deployment: dict, container: str, *, pod_name: str, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment the kubelet would give `container` of this Deployment's pod:
    literal values, fieldRef (metadata.name/namespace) and secretKeyRef (from `secrets`)."""
    spec = deployment["spec"]["template"]["spec"]
    c = next(x for x in spec["containers"] if x["name"] == container)
    env: dict[str, str] = {}
    for item in c.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        src = item["valueFrom"]
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name,
                                 "metadata.namespace": deployment["metadata"]["namespace"]}[path]
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            raise AssertionError(f"unexpected env source {item}")
    return env


def kubectl(cluster, *args: str, kubeconfig: Path | None = None, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
    cfg = str(kubeconfig or cluster.kubeconfig)
    done = subprocess.run([cluster.bin("kubectl"), f"--kubeconfig={cfg}", *args], capture_output=True,
                          text=True, timeout=120, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def clean_env() -> dict[str, str]:
    """The test process's environment without anything that would point a child at the
    admin identity or another configuration."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SCHEDGEN_", "KUBECONFIG", "AWS_"))}
