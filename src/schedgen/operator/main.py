"""`schedgen-operator`: run the ParseJob operator (kopf).

Equivalent to `kopf run -m schedgen.operator.handlers --all-namespaces
--peering=schedgen-operator --liveness=http://0.0.0.0:8080/healthz` plus: a peering
priority that lets the oldest live replica lead (so a restarted replica does not take
over from a healthy leader mid-tick) and the peering object created if missing.

Watch scope: `SCHEDGEN_WATCH_NAMESPACES` (comma-separated) limits the operator to those
namespaces (`kopf run -n a -n b`; the ConfigMap's namespace is always added) and
peers through a namespaced `KopfPeering` in each of them; empty (the default) serves
all namespaces and peers through the `ClusterKopfPeering`.
Configuration: environment variables and the ConfigMap (docs/operator.md).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time

from schedgen import logs
from schedgen.errors import ConfigurationError


def watch_namespaces(cfg) -> list[str]:  # type: ignore[no-untyped-def]
    """The namespaces to serve; [] = all. The operator's ConfigMap carries the daemons,
    so its namespace is always served in namespace-scoped mode."""
    namespaces = list(cfg.watch_namespaces)
    if namespaces and cfg.namespace not in namespaces:
        namespaces.append(cfg.namespace)
    return namespaces


def _ensure_peering_object(name: str, namespaces: list[str] | None = None, api=None) -> None:  # type: ignore[no-untyped-def]
    """Make sure the peering object exists: the ClusterKopfPeering (cluster-wide), or a
    KopfPeering in every served namespace. Read first and create only when missing: the
    chart creates these objects itself and grants no `create`, so a 403 is expected
    there and only logged at debug level."""
    log = logging.getLogger(__name__)
    try:
        if api is None:
            import kubernetes

            from .kube import load_client_config

            api = kubernetes.client.CustomObjectsApi(load_client_config())
    except Exception as exc:  # noqa: BLE001 - kopf reports the real connection problem
        log.warning("cannot ensure the peering object %s: %s", name, exc)
        return

    def ensure(kind: str, what: str, read, create) -> None:  # type: ignore[no-untyped-def]
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        try:
            read()
            return
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "status", None)
            if status == 403:
                log.debug("not allowed to read %s %s (%s); assuming it exists", kind, what, exc)
                return
            if status != 404:
                log.warning("cannot read %s %s: %s", kind, what, exc)
                return
        try:
            create(body)
            log.info("created %s %s", kind, what)
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "status", None)
            if status == 409:
                return
            if status == 403:
                log.debug("not allowed to create %s %s: %s", kind, what, exc)
                return
            log.warning("cannot create %s %s: %s", kind, what, exc)

    if not namespaces:
        ensure("ClusterKopfPeering", name,
               lambda: api.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name),
               lambda body: api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body))
        return
    for ns in namespaces:
        ensure("KopfPeering", f"{ns}/{name}",
               lambda ns=ns: api.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", name),
               lambda body, ns=ns: api.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", body))


QUIET_LOGGERS = {"kubernetes": logging.WARNING, "urllib3": logging.WARNING, "aiohttp.access": logging.WARNING,
                 "asyncio": logging.WARNING}


def configure_logging(log_format: str, level: str = "info", verbose: bool = False) -> None:
    """kopf's lines and ours in the schema of schedgen.logs (kopf's ParseJob reference
    becomes `parsejob_uid` and `parsejob`); `--verbose` is debug."""
    logs.configure("operator", log_format, "debug" if verbose else level, quiet=QUIET_LOGGERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schedgen-operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standalone", action="store_true", default=None,
                        help="no peering (a single replica); default: $SCHEDGEN_STANDALONE")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority (default: older replicas rank higher)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    import kopf

    from . import handlers  # noqa: F401 - registers the handlers
    from .config import OperatorConfig

    try:
        cfg = OperatorConfig.from_env()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    standalone = cfg.standalone if args.standalone is None else args.standalone
    # Older replicas rank higher (start time in ms, a random tie-breaker within the ms:
    # equal priorities would make kopf freeze both replicas).
    priority = args.priority if args.priority is not None else (
        2**52 - (int(time.time() * 1000) * 1000 + random.randrange(1000)))
    namespaces = watch_namespaces(cfg)
    configure_logging(cfg.log_format, cfg.log_level, verbose=args.verbose)
    if not standalone:
        _ensure_peering_object(cfg.peering_name, namespaces)
    liveness = f"http://0.0.0.0:{cfg.liveness_port}/healthz" if cfg.liveness_port else None
    if namespaces:
        logging.getLogger(__name__).info("serving namespaces: %s", ", ".join(namespaces))
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        priority=priority,
        peering_name=None if standalone else cfg.peering_name,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
