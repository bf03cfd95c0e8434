"""The chart's lifecycle hook Jobs (charts/schedgen/templates/hook-crds.yaml and
hook-uninstall.yaml), run from the operator image; docs/deploy.md "Upgrades", "Uninstall".

    python -m schedgen.operator.release_hooks apply-crds DIR
        pre-install, pre-upgrade: server-side apply of every CustomResourceDefinition in
        DIR's YAML files (the chart's crds/, mounted from a hook ConfigMap), field manager
        `schedgen-crds`, conflicts forced, then wait until each is Established. Helm
        installs crds/ on a release's first install only and never upgrades them.

    python -m schedgen.operator.release_hooks release --namespace NS --stop DEPLOY ...
            --configmap NAME [--served NS ...]
        pre-delete: stop the release's operator and API (delete their Deployments and wait
        until their pods are gone, so nothing adds the finalizer back), then remove
        `schedgen.io/record` from the operator's ConfigMap and from every ParseJob the
        release served (all namespaces unless --served). Without an operator nobody would,
        and deleting such a ParseJob, or its namespace, would hang. ParseJobs and the CRD
        stay; a later install serves them again (kopf adds its finalizer back).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.rest import ApiException

from schedgen.errors import ConfigurationError, SchedgenError
from schedgen.parsejob import FINALIZER, GROUP, PLURAL, VERSION

log = logging.getLogger("schedgen.release_hooks")

FIELD_MANAGER = "schedgen-crds"
APPLY = "application/apply-patch+yaml"
PAGE = 500


class HookFailed(SchedgenError):
    """A lifecycle hook could not finish its work; the Helm operation fails with it."""

    code = "HookFailed"


# --- CRDs ------------------------------------------------------------------------------


def crds_in(directory: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in the directory's *.yaml files, by file name (a
    ConfigMap mount also holds `..data` links and hidden entries: only *.yaml count)."""
    files = sorted(p for p in directory.iterdir() if p.name.endswith((".yaml", ".yml")) and not p.name.startswith("."))
    crds = [doc for path in files for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise ConfigurationError(f"no CustomResourceDefinition in {directory}")
    return crds


def established(crd: Any) -> bool:
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def apply_crds(api: kubernetes.client.ApiextensionsV1Api, crds: Iterable[dict[str, Any]],
               timeout: float = 60, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Apply each CRD server-side (the chart's version wins every field it sets), then wait
    until each is Established; returns their names."""
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        api.patch_custom_resource_definition(name, crd, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY)
        log.info("applied CustomResourceDefinition %s", name)
        names.append(name)
    wait_until(lambda: all(established(api.read_custom_resource_definition(n)) for n in names),
               timeout, f"the CustomResourceDefinitions {', '.join(names)} to be Established", clock)
    return names


def wait_until(done: Callable[[], bool], timeout: float, what: str,
               clock: Callable[[], float] = time.monotonic, interval: float = 0.5) -> None:
    deadline = clock() + timeout
    while not done():
        if clock() >= deadline:
            raise HookFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- uninstall -------------------------------------------------------------------------


def stop_deployments(apps: kubernetes.client.AppsV1Api, namespace: str, names: Iterable[str],
                     timeout: float = 180, clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Delete the Deployments in the foreground (each goes once its pods are gone) and wait
    for that; returns those that were there. Helm's own delete then finds them gone."""
    stopped = []
    for name in names:
        try:
            apps.delete_namespaced_deployment(name, namespace, propagation_policy="Foreground")
            stopped.append(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    wait_until(lambda: not [n for n in stopped if _exists(apps, namespace, n)], timeout,
               f"the Deployments {', '.join(stopped)} and their pods to be gone", clock)
    return stopped


def _exists(apps: kubernetes.client.AppsV1Api, namespace: str, name: str) -> bool:
    try:
        apps.read_namespaced_deployment(name, namespace)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def without_finalizer(metadata: dict[str, Any], finalizer: str = FINALIZER) -> dict[str, Any] | None:
    """The merge patch that removes `finalizer` from an object's metadata, None if it has
    none. The resourceVersion makes it conditional: a change meanwhile is a 409."""
    finalizers = list(metadata.get("finalizers") or [])
    if finalizer not in finalizers:
        return None
    return {"metadata": {"finalizers": [f for f in finalizers if f != finalizer],
                         "resourceVersion": metadata["resourceVersion"]}}


def release_one(current: dict[str, Any], reread: Callable[[], dict], patch: Callable[[dict], Any],
                tries: int = 5) -> bool:
    """Remove the finalizer from one object as read (`current`), re-reading it after a
    conflict; True if it was removed, False if the object had none or is gone."""
    for _ in range(tries):
        try:
            body = without_finalizer(current["metadata"])
            if body is None:
                return False
            patch(body)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status != 409:
                raise
        try:
            current = reread()
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    raise HookFailed(f"the object kept changing: {tries} tries to remove the finalizer {FINALIZER} failed")


def parsejobs(custom: kubernetes.client.CustomObjectsApi, namespaces: list[str]) -> Iterator[dict[str, Any]]:
    """Every ParseJob in these namespaces ([] = all), page by page."""
    for namespace in namespaces or [None]:
        token = None
        while True:
            kwargs = {"limit": PAGE, **({"_continue": token} if token else {})}
            page = (custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs) if namespace
                    else custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs))
            yield from page["items"]
            token = page["metadata"].get("continue")
            if not token:
                break


def release_parsejobs(custom: kubernetes.client.CustomObjectsApi, namespaces: list[str]) -> int:
    """Remove the finalizer from every ParseJob that has it; returns how many."""
    released = 0
    for item in parsejobs(custom, namespaces):
        if FINALIZER not in (item["metadata"].get("finalizers") or []):
            continue
        released += release_parsejob(custom, item)
    return released


def release_parsejob(custom: kubernetes.client.CustomObjectsApi, item: dict[str, Any]) -> bool:
    ns, name = item["metadata"]["namespace"], item["metadata"]["name"]
    return release_one(item, lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name),
                       lambda body: custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body))


def release_configmap(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> bool:
    """The operator's ConfigMap: kopf keeps the finalizer on it while the daemons it carries
    run. The operator removes it when it stops cleanly; this covers a pod that did not."""
    def read() -> dict:
        return core.api_client.sanitize_for_serialization(core.read_namespaced_config_map(name, namespace))

    try:
        current = read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return release_one(current, read, lambda body: core.patch_namespaced_config_map(name, namespace, body))


def release(api_client: kubernetes.client.ApiClient, namespace: str, stop: list[str], configmap: str,
            served: list[str]) -> int:
    """The pre-delete hook's work, in its order; returns the number of ParseJobs released."""
    stopped = stop_deployments(kubernetes.client.AppsV1Api(api_client), namespace, stop)
    log.info("stopped %s in %s", ", ".join(stopped) or "nothing (already gone)", namespace)
    if release_configmap(kubernetes.client.CoreV1Api(api_client), namespace, configmap):
        log.info("removed %s from ConfigMap %s/%s", FINALIZER, namespace, configmap)
    count = release_parsejobs(kubernetes.client.CustomObjectsApi(api_client), served)
    log.info("removed %s from %d ParseJob(s) in %s", FINALIZER, count, ", ".join(served) or "all namespaces")
    return count


# --- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m schedgen.operator.release_hooks",
                                     description="the chart's lifecycle hooks (docs/deploy.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    crds = sub.add_parser("apply-crds", help="server-side apply the CRDs in DIR (pre-install, pre-upgrade)")
    crds.add_argument("directory", type=Path)
    crds.add_argument("--timeout", type=float, default=60, help="seconds to wait for Established")
    rel = sub.add_parser("release", help="stop the release, release its ParseJobs' finalizers (pre-delete)")
    rel.add_argument("--namespace", required=True, help="the release namespace")
    rel.add_argument("--stop", action="append", default=[], help="a Deployment to stop first (repeat)")
    rel.add_argument("--configmap", required=True, help="the operator's ConfigMap")
    rel.add_argument("--served", action="append", default=[], help="a served namespace (repeat; none = all)")
    return parser


def run(args: argparse.Namespace, api_client: kubernetes.client.ApiClient) -> None:
    if args.command == "apply-crds":
        apply_crds(kubernetes.client.ApiextensionsV1Api(api_client), crds_in(args.directory), args.timeout)
    else:
        release(api_client, args.namespace, args.stop, args.configmap, args.served)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    from .kube import load_client_config

    try:
        run(args, load_client_config())
    except SchedgenError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except ApiException as exc:
        log.error("Kubernetes API error %s %s: %s", exc.status, exc.reason, (exc.body or "")[:500])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
