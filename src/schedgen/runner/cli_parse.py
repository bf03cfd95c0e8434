"""`schedgen parse FILE.pdf [-o json|ics] [--output-file FILE]`: the parser on a laptop, no
cluster needed."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from schedgen.errors import BadInput, MemoryLimitExceeded, SchedgenError
from schedgen.ics import CalendarRangeRequired, InvalidExclusion, parse_exclusions, to_ics
from schedgen.parsejob import DEFAULT_SCHEDULE_TYPE, SCHEDULE_TYPES

from .parsing import Limits, parse_pdf


FORMATS = ("json", "ics")
FILE_COMPLETION = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}  # shtab's hint


def output_format(value: str) -> str:
    """`-o`'s check; a file name gets a hint (`-o FILE` was the old `--output-file FILE`)."""
    if value in FORMATS:
        return value
    hint = "; -o selects the output format, --output-file FILE writes to a file" if "." in value or "/" in value else ""
    raise argparse.ArgumentTypeError(f"{value!r} is not an output format (choose from {', '.join(FORMATS)}){hint}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the schedule PDF").complete = {**FILE_COMPLETION, "zsh": "_files -g '*.pdf'"}
    parser.add_argument("-o", "--output", type=output_format, choices=FORMATS, default="json", metavar="FORMAT",
                        help="json (the events) or ics (iCalendar); default json")
    parser.add_argument("--type", dest="schedule_type", default=DEFAULT_SCHEDULE_TYPE, choices=SCHEDULE_TYPES)
    parser.add_argument("--from", dest="first_day", type=dt.date.fromisoformat,
                        help="first day of the lecture calendar (ISO date; ics for lectures)")
    parser.add_argument("--until", dest="last_day", type=dt.date.fromisoformat,
                        help="last day of the lecture calendar (ISO date; ics for lectures)")
    parser.add_argument("--exam-hours", type=float, default=3.0,
                        help="assumed exam duration in the calendar (default 3)")
    parser.add_argument("--exclude", action="append", default=[], metavar="DATE|FROM..UNTIL",
                        help="skip lectures on this date or inclusive range (EXDATE; repeatable, at most 50)")
    parser.add_argument("--max-pages", type=int, default=Limits.max_pages)
    parser.add_argument("--timeout", type=float, default=Limits.max_seconds, help="seconds")
    parser.add_argument("--output-file", metavar="FILE",
                        help="write here instead of standard output").complete = FILE_COMPLETION


def run(args: argparse.Namespace) -> int:
    try:
        exclude = parse_exclusions(args.exclude)
    except InvalidExclusion as exc:
        print(f"error: InvalidExclusion: {exc}", file=sys.stderr)
        return 2
    try:
        result = parse_pdf(args.file, args.schedule_type,
                           Limits(max_pages=args.max_pages, max_seconds=args.timeout))
        if args.output == "json":
            payload = (json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n").encode()
        else:
            payload = to_ics(result.kind, result.events, first_day=args.first_day,
                             last_day=args.last_day, exam_hours=args.exam_hours, exclude=exclude)
    except FileNotFoundError as exc:
        print(f"error: NotFound: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except MemoryError:  # formatting the result of a big schedule, under a memory limit
        return run_failed(MemoryLimitExceeded("the schedule needs more memory than this process may use"))
    except SchedgenError as exc:
        return run_failed(exc)
    except CalendarRangeRequired as exc:
        print(f"error: CalendarRangeRequired: {exc}", file=sys.stderr)
        return 2
    if args.output_file:
        with open(args.output_file, "wb") as fh:
            fh.write(payload)
    else:
        sys.stdout.buffer.write(payload)
    return 0


def run_failed(exc: SchedgenError) -> int:
    print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
    return exc.exit_code if isinstance(exc, BadInput) else 1
