"""`schedgen` command line: parse a PDF locally, manage the database schema, and talk to
the upload API (submit, jobs, events, logs, queue: the `cli` extra, docs/cli.md)."""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh", "tcsh")  # what shtab writes completion scripts for


def build_parser() -> argparse.ArgumentParser:
    from schedgen.client import EXIT_CODES_HELP, cli_jobs

    parser = argparse.ArgumentParser(prog="schedgen", description=__doc__, epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"schedgen {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    from schedgen.runner import cli_parse  # local import keeps `schedgen db` light

    cli_parse.add_arguments(sub.add_parser("parse", help="parse a schedule PDF into events"))

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    migrate.add_argument("--dsn", help="Postgres DSN (default: $SCHEDGEN_DATABASE_URL)")

    cli_jobs.add_parsers(sub)

    completion = sub.add_parser(
        "completion", help="print a shell completion script (bash, zsh, tcsh)",
        description="print a shell completion script (bash, zsh, tcsh)",
        epilog="bash: `source <(schedgen completion bash)` in ~/.bashrc, or save the script as "
               "~/.local/share/bash-completion/completions/schedgen; zsh: save it as `_schedgen` in a "
               "directory of $fpath (before `compinit`); tcsh: `eval \"`schedgen completion tcsh`\"`.")
    completion.add_argument("shell", choices=SHELLS)
    return parser


def main(argv: list[str] | None = None) -> int:
    from schedgen.client import cli_jobs

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "client_command", None):
        return cli_jobs.run(args)
    if args.command == "parse":
        from schedgen.runner import cli_parse

        return cli_parse.run(args)
    if args.command == "db" and args.db_command == "migrate":
        from schedgen import db as dbmod

        return dbmod.migrate_command(args.dsn)
    if args.command == "completion":
        return completion(parser, args.shell)
    parser.error("unknown command")
    return 2


def completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """The completion script (shtab, from the argparse parser itself: every command,
    option and choice, files where a command takes files)."""
    from schedgen.client import EXIT_CONFIG

    try:
        import shtab
    except ImportError:
        print("error: MissingExtra: completion needs shtab: install it with `pip install 'schedgen[cli]'`",
              file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(shtab.complete(parser, shell=shell))
    return 0


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("schedgen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
