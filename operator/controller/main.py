"""`schedgen-operator`: run the ParseJob operator (kopf, cluster-wide).

Equivalent to `kopf run -m schedgen.operator.handlers --all-namespaces
--peering=schedgen-operator --liveness=http://0.0.0.0:8080/healthz` plus: a peering
priority that lets the oldest live replica lead (so a restarted replica does not take
over from a healthy leader mid-tick), the peering object created if missing, and
kopf's own API requests counted in `schedgen_operator_api_requests_total`.
Configuration: environment variables and the ConfigMap (docs/operator.md).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time


def _count_kopf_requests() -> None:
    import aiohttp

    from . import metrics

    original = aiohttp.ClientSession._request
    if getattr(original, "_schedgen_counted", False):
        return

    async def counted(self, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        metrics.API_REQUESTS.labels(client="kopf", method=str(method).upper()).inc()
        return await original(self, method, *args, **kwargs)

    counted._schedgen_counted = True  # type: ignore[attr-defined]
    aiohttp.ClientSession._request = counted  # type: ignore[method-assign]


def _ensure_peering_object(name: str) -> None:
    import kubernetes

    from .kube import load_client_config

    try:
        api = kubernetes.client.CustomObjectsApi(load_client_config())
        api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                         {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                          "metadata": {"name": name}})
    except Exception as exc:  # noqa: BLE001 - 409 (exists) is the usual answer
        status = getattr(exc, "status", None)
        if status != 409:
            logging.getLogger(__name__).warning("cannot ensure ClusterKopfPeering %s: %s", name, exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schedgen-operator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--standalone", action="store_true", default=None,
                        help="no peering (a single replica); default: $SCHEDGEN_STANDALONE")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority (default: older replicas rank higher)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    for noisy in ("kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import kopf

    from . import handlers  # noqa: F401 - registers the handlers
    from .config import OperatorConfig

    cfg = OperatorConfig.from_env()
    standalone = cfg.standalone if args.standalone is None else args.standalone
    # Older replicas rank higher (start time in ms, a random tie-breaker within the ms:
    # equal priorities would make kopf freeze both replicas).
    priority = args.priority if args.priority is not None else (
        2**52 - (int(time.time() * 1000) * 1000 + random.randrange(1000)))
    _count_kopf_requests()
    if not standalone:
        _ensure_peering_object(cfg.peering_name)
    liveness = f"http://0.0.0.0:{cfg.liveness_port}/healthz" if cfg.liveness_port else None
    kopf.configure(verbose=args.verbose)
    kopf.run(
        clusterwide=True,
        standalone=standalone,
        priority=priority,
        peering_name=None if standalone else cfg.peering_name,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
