"""The client's subcommands of `schedgen` (argparse only: registering them needs neither
httpx nor rich, so `schedgen parse` and `schedgen db` work without the `cli` extra)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path

from schedgen.parsejob import PRIORITIES, SCHEDULE_TYPES

from . import EXIT_CODES_HELP, ClientError, require_extra

JOB_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a ParseJob name, as the API accepts
PHASES = ("Queued", "Running", "Succeeded", "Failed", "Cancelled")
MAX_LIMIT = 200  # the API's bound


def job_id(value: str) -> str:
    if not JOB_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a job id (a lower-case DNS label)")
    return value


def iso_date(value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None


def exclusion(value: str) -> str:
    """DATE or DATE..DATE (first <= last), passed on to calendar.ics as `exclude`."""
    first, sep, last = value.partition("..")
    days = [iso_date(first)] + ([iso_date(last)] if sep else [])
    if len(days) == 2 and days[0] > days[1]:
        raise argparse.ArgumentTypeError(f"{value!r}: the range ends before it starts")
    return "..".join(days)


def positive(limit: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not 1 <= n <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit}")
        return n
    return parse


def _seconds(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < n <= 86400:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 86400 seconds")
    return n


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("API connection (flags override $SCHEDGEN_API_URL/$SCHEDGEN_API_KEY, "
                                  "which override the config file)")
    g.add_argument("--api-url", metavar="URL", help="the API's base URL, e.g. http://127.0.0.1:8000")
    g.add_argument("--api-key", metavar="KEY", help="API key (prefer $SCHEDGEN_API_KEY or the config file: "
                   "a flag shows in the process list)")
    g.add_argument("--config", metavar="FILE", help="TOML file with url/key (default: $SCHEDGEN_CONFIG, else "
                   "~/.config/schedgen/config.toml)")
    g.add_argument("--timeout", type=_seconds, default=30.0, metavar="S", help="per request (default 30)")
    common.add_argument("--output", "-O", choices=("table", "json"), default="table",
                        help="table for people (default), json for scripts")
    return common


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `submit`, `jobs ...`, `events` and `queue` on the `schedgen` parser."""
    common = common_options()

    def parser(where, name: str, help_text: str, **kw) -> argparse.ArgumentParser:
        return where.add_parser(name, parents=[common], help=help_text, description=help_text,
                                epilog=EXIT_CODES_HELP, **kw)

    p = parser(sub, "submit", "upload schedule PDFs to the API (one job each)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PDF files")
    p.add_argument("--wait", action="store_true", help="follow the jobs until they finish (exit 1 if one fails)")
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, metavar="S", help="give up waiting after S "
                   "seconds (default 600; exit 4)")
    p.add_argument("--priority", choices=PRIORITIES, help="queue priority (the key may cap it)")
    p.add_argument("--type", dest="schedule_type", choices=SCHEDULE_TYPES, help="schedule type (default auto)")
    p.set_defaults(client_command="submit")

    jobs = sub.add_parser("jobs", help="list, inspect, follow, cancel or delete jobs", epilog=EXIT_CODES_HELP)
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="{list,get,watch,cancel,delete}")
    p = parser(jsub, "list", "the key's tenant's jobs, newest first")
    p.add_argument("--phase", choices=PHASES)
    p.add_argument("--limit", type=positive(MAX_LIMIT), default=None, help=f"per page (1-{MAX_LIMIT})")
    p.add_argument("--cursor", help="continue from a previous page's nextCursor")
    p.add_argument("--all", action="store_true", help="follow nextCursor through every page")
    p.set_defaults(client_command="list")
    p = parser(jsub, "get", "one job's status")
    p.add_argument("id", type=job_id)
    p.set_defaults(client_command="get")
    p = parser(jsub, "watch", "follow a job until it finishes (exit 0 Succeeded, 1 Failed/Cancelled)")
    p.add_argument("id", type=job_id)
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, metavar="S", help="give up after S seconds")
    p.set_defaults(client_command="watch")
    p = parser(jsub, "cancel", "stop a Queued or Running job; the API's DELETE also erases it (asks first)")
    p.add_argument("id", type=job_id)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(client_command="cancel")
    p = parser(jsub, "delete", "cancel (if unfinished) and erase a job and its events (asks first)")
    p.add_argument("id", type=job_id)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(client_command="delete")

    p = parser(sub, "events", "a finished job's events as a table, JSON or iCalendar")
    p.add_argument("id", type=job_id)
    p.add_argument("--format", "-f", choices=("table", "json", "ics"), default=None,
                   help="default: --output's (table or json)")
    p.add_argument("--from", dest="first_day", type=iso_date, help="ics: first day of lectures")
    p.add_argument("--until", dest="last_day", type=iso_date, help="ics: last day of lectures")
    p.add_argument("--exclude", action="append", type=exclusion, default=[], metavar="DATE[..DATE]",
                   help="ics: leave out a day or range (repeatable), e.g. a recess")
    p.add_argument("--exam-hours", type=float, default=None, help="ics: length of exams without an end time")
    p.add_argument("-o", "--out", type=Path, help="write to this file instead of standard output")
    p.set_defaults(client_command="events")

    p = parser(sub, "queue", "waiting/running/finished counts per tenant (admin keys see every tenant)")
    p.set_defaults(client_command="queue")


def run(args: argparse.Namespace) -> int:
    """Run a client command; every failure ends as `error: CODE: message` and its exit code."""
    try:
        require_extra()
        from . import commands  # imports httpx and rich

        return commands.dispatch(args)
    except ClientError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
