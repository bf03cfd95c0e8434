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

# -o/--output: what each command can print (the first is the default). table/wide: rich
# tables for people (wide: more columns); json/yaml: the API's documents for scripts;
# name: job ids (tenants for `queue`), one a line, for xargs; ics: iCalendar.
JOB_FORMATS = ("table", "wide", "json", "yaml", "name")
EVENT_FORMATS = ("table", "wide", "json", "yaml", "ics")
LOG_FORMATS = ("table", "wide", "json", "yaml")
QUEUE_FORMATS = ("table", "json", "yaml", "name")
JOB_OUTPUT_HELP = "table, wide (more columns), json or yaml (the API's documents), name (job ids, one a line)"
# shtab's completion hints (`schedgen completion`): file names
FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
PDF_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files -g '*.pdf'", "tcsh": "f:*.pdf"}
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
    config_file = g.add_argument("--config", metavar="FILE",
                                 help="TOML file with url/key (default: $SCHEDGEN_CONFIG, else "
                                      "~/.config/schedgen/config.toml)")
    g.add_argument("--timeout", type=_seconds, default=30.0, metavar="S", help="per request (default 30)")
    config_file.complete = FILE_COMPLETION  # type: ignore[attr-defined]  # read by shtab (schedgen completion)
    return common


def output_format(formats: tuple[str, ...]):
    """`-o`'s check: one of `formats`; a file name gets a hint (`-o FILE` was the old
    spelling of `--output-file FILE`)."""
    def parse(value: str) -> str:
        if value in formats:
            return value
        hint = ""
        if "." in value or "/" in value:
            hint = "; -o selects the output format, --output-file FILE writes to a file"
        raise argparse.ArgumentTypeError(f"{value!r} is not an output format (choose from "
                                         f"{', '.join(formats)}){hint}")
    return parse


def add_output(p: argparse.ArgumentParser, formats: tuple[str, ...], help_text: str) -> None:
    """`-o/--output FORMAT`, as kubectl: the format of what goes to stdout."""
    p.add_argument("-o", "--output", type=output_format(formats), choices=formats, default=formats[0], metavar="FORMAT",
                   help=f"{help_text} (default {formats[0]})")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `submit`, `jobs ...`, `events`, `logs` and `queue` on the `schedgen` parser."""
    common = common_options()

    def parser(where, name: str, help_text: str, **kw) -> argparse.ArgumentParser:
        return where.add_parser(name, parents=[common], help=help_text, description=help_text,
                                epilog=EXIT_CODES_HELP, **kw)

    p = parser(sub, "submit", "upload schedule PDFs to the API (one job each)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="PDF files").complete = PDF_COMPLETION
    p.add_argument("--wait", action="store_true", help="follow the jobs until they finish (exit 1 if one fails)")
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, metavar="S", help="give up waiting after S "
                   "seconds (default 600; exit 4)")
    p.add_argument("--priority", choices=PRIORITIES, help="queue priority (the key may cap it)")
    p.add_argument("--type", dest="schedule_type", choices=SCHEDULE_TYPES, help="schedule type (default auto)")
    add_output(p, JOB_FORMATS, JOB_OUTPUT_HELP)
    p.set_defaults(client_command="submit")

    jobs = sub.add_parser("jobs", help="list, inspect, follow, cancel or delete jobs", epilog=EXIT_CODES_HELP)
    add_job_parsers(jobs.add_subparsers(dest="jobs_command", required=True,
                                        metavar="{list,get,watch,cancel,delete}"), parser)
    add_read_parsers(sub, parser)


def add_job_parsers(jsub: argparse._SubParsersAction, parser) -> None:
    """`jobs list|get|watch|cancel|delete`."""
    p = parser(jsub, "list", "the key's tenant's jobs, newest first")
    p.add_argument("--phase", choices=PHASES)
    p.add_argument("--limit", type=positive(MAX_LIMIT), default=None, help=f"per page (1-{MAX_LIMIT})")
    p.add_argument("--cursor", help="continue from a previous page's nextCursor")
    p.add_argument("--all", action="store_true", help="follow nextCursor through every page")
    add_output(p, JOB_FORMATS, JOB_OUTPUT_HELP)
    p.set_defaults(client_command="list")
    p = parser(jsub, "get", "one job's status")
    p.add_argument("id", type=job_id)
    add_output(p, JOB_FORMATS, "table (every field), wide (one row with more columns), json, yaml, name")
    p.set_defaults(client_command="get")
    p = parser(jsub, "watch", "follow a job until it finishes (exit 0 Succeeded, 1 Failed/Cancelled)")
    p.add_argument("id", type=job_id)
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, metavar="S", help="give up after S seconds")
    add_output(p, JOB_FORMATS, "the final status: as `jobs get -o`")
    p.set_defaults(client_command="watch")
    for name, help_text in (("cancel", "stop a Queued or Running job; the API's DELETE also erases it (asks first)"),
                            ("delete", "cancel (if unfinished) and erase a job and its events (asks first)")):
        p = parser(jsub, name, help_text)
        p.add_argument("id", type=job_id)
        p.add_argument("--yes", "-y", action="store_true", help="do not ask")
        add_output(p, JOB_FORMATS, "table/wide (a sentence), json or yaml ({id, deleted, phase}), name (the id)")
        p.set_defaults(client_command=name)


def add_read_parsers(sub: argparse._SubParsersAction, parser) -> None:
    """`events`, `logs` and `queue`."""
    p = parser(sub, "events", "a finished job's events as a table, JSON, YAML or iCalendar")
    p.add_argument("id", type=job_id)
    add_output(p, EVENT_FORMATS, "table, wide (every field any event has), json or yaml ({kind, events}), "
                                 "ics (iCalendar)")
    p.add_argument("--from", dest="first_day", type=iso_date, help="ics: first day of lectures")
    p.add_argument("--until", dest="last_day", type=iso_date, help="ics: last day of lectures")
    p.add_argument("--exclude", action="append", type=exclusion, default=[], metavar="DATE[..DATE]",
                   help="ics: leave out a day or range (repeatable), e.g. a recess")
    p.add_argument("--exam-hours", type=float, default=None, help="ics: length of exams without an end time")
    p.add_argument("--output-file", type=Path, metavar="FILE",
                   help="json, yaml, ics: write to FILE instead of standard output").complete = FILE_COMPLETION
    p.set_defaults(client_command="events")

    p = parser(sub, "logs", "what happened to a job: the runner's summary and the ParseJob's Kubernetes Events")
    p.add_argument("id", type=job_id)
    p.add_argument("--follow", "-f", action="store_true", help="print Events as they come until the job finishes")
    p.add_argument("--wait-timeout", type=_seconds, default=600.0, metavar="S",
                   help="--follow: give up after S seconds (default 600; exit 4)")
    add_output(p, LOG_FORMATS, "table, wide (+ count, first seen, from), json or yaml (the API's document)")
    p.set_defaults(client_command="logs")

    p = parser(sub, "queue", "waiting/running/finished counts per tenant (admin keys see every tenant)")
    add_output(p, QUEUE_FORMATS, "table, json, yaml, name (the tenants, one a line)")
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
