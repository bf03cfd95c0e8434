"""`schedgen-api`: serve the upload API, or manage API keys.

    schedgen-api [serve] [--host 0.0.0.0] [--port 8000] [--migrate] [--access-log]
    schedgen-api add-key --tenant T [--description TEXT] [--admin] [--max-priority high|normal|low]
                                                             # prints the key once
    schedgen-api revoke-key KEY_OR_PREFIX

Configuration: environment variables (docs/api.md), e.g. SCHEDGEN_DATABASE_URL,
SCHEDGEN_S3_ENDPOINT_URL, SCHEDGEN_S3_BUCKET, SCHEDGEN_API_NAMESPACE, KUBECONFIG.
`serve` answers /metrics on a listener of its own (SCHEDGEN_API_METRICS_PORT, 9091).
`add-key` and `revoke-key` need a login in role schedgen_key_admin (or the schema owner):
the API's own login (role schedgen_api) may not create or revoke keys.
"""

from __future__ import annotations

import argparse
import logging
import sys

from schedgen import logs
from schedgen.errors import ConfigurationError, SchedgenError
from schedgen.parsejob import EXIT_MISCONFIGURED


def setup_logging(cfg) -> None:  # type: ignore[no-untyped-def]
    """The schema of schedgen.logs; the pool logs every checkout at INFO (its warnings,
    failed connects, still show)."""
    logs.configure("api", cfg.log_format, cfg.log_level, quiet={"psycopg.pool": logging.WARNING})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv.insert(0, "serve")
    parser = argparse.ArgumentParser(prog="schedgen-api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (default)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--migrate", action="store_true", help="apply database migrations first")
    serve.add_argument("--access-log", action="store_true")
    add = sub.add_parser("add-key", help="create an API key for a tenant (printed once)")
    add.add_argument("--tenant", required=True)
    add.add_argument("--description")
    add.add_argument("--admin", action="store_true", help="the key sees every tenant in /api/v1/queue")
    add.add_argument("--max-priority", choices=("high", "normal", "low"), default="normal",
                     help="the most urgent priority its uploads may ask for (default: normal)")
    revoke = sub.add_parser("revoke-key", help="revoke an API key (the key or its 12-character prefix)")
    revoke.add_argument("key")
    args = parser.parse_args(argv)

    from .config import TENANT_PATTERN, ApiConfig

    try:
        cfg = ApiConfig.from_env()
        if args.command == "serve":
            return _serve(cfg, args)
        if args.command == "add-key" and (not TENANT_PATTERN.fullmatch(args.tenant) or len(args.tenant) > 63):
            print("error: the tenant must be a DNS label (a-z, 0-9, -)", file=sys.stderr)
            return 2
        return _manage_keys(cfg, args)
    except SchedgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _manage_keys(cfg, args) -> int:
    """`add-key` / `revoke-key` through the key functions of migration 0007."""
    import psycopg

    from schedgen import db

    from .backends import postgres

    dsn = cfg.database_url.get_secret_value()
    with db.connect(dsn) as conn:
        try:
            if args.command == "add-key":
                print(postgres.add_key_sync(conn, args.tenant, args.description, admin=args.admin,
                                         max_priority=args.max_priority))
                return 0
            n = postgres.revoke_key_sync(conn, args.key)
        except psycopg.errors.InsufficientPrivilege:
            print(f"error: {db.describe_dsn(dsn).split('@')[0]} may not {args.command.replace('-', ' ')}s:"
                  " log in as a member of role schedgen_key_admin (or as the schema owner)", file=sys.stderr)
            return EXIT_MISCONFIGURED
    print(f"revoked {n} key(s)")
    return 0 if n else 1


def _serve(cfg, args) -> int:
    import uvicorn

    from .app import asgi

    setup_logging(cfg)
    if args.migrate:
        from schedgen import db

        with db.connect(cfg.database_url.get_secret_value()) as conn:
            db.migrate(conn, log=lambda m: logging.getLogger("schedgen.api").info(m))
    app = asgi(cfg)
    _serve_metrics(cfg, args)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_config=None,
                h11_max_incomplete_event_size=16 * 1024, limit_concurrency=1000, backlog=1024,
                timeout_keep_alive=30, lifespan="on", proxy_headers=False, server_header=False)
    return 0


def _serve_metrics(cfg, args) -> None:
    """/metrics on a listener of its own (a thread), never on the public port: the
    NetworkPolicy lets only Prometheus reach it, and the public Service has no such port."""
    if not cfg.metrics_port:
        return
    if cfg.metrics_port == args.port:
        raise ConfigurationError(f"SCHEDGEN_API_METRICS_PORT={cfg.metrics_port} is the API's own port")
    from prometheus_client import start_http_server

    try:
        start_http_server(cfg.metrics_port, addr=args.host)
    except OSError as exc:
        raise ConfigurationError(f"cannot listen for metrics on port {cfg.metrics_port}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
