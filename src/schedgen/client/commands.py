"""What each client command does (httpx through `api.Api`, tables through `render`).

Human output goes to stdout as tables (`-o table`, `-o wide`); progress and messages go
to stderr, so `-o json`/`-o yaml` leave stdout a single document and `-o name` the ids.
On a terminal, progress is a live display (rich); otherwise one plain line per change,
which reads well in logs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import EXIT_API, EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, ClientError, ConfigError, config, render
from .api import FINISHED, Api, ApiError

POLL_SECONDS = 1.0
LOG_POLL_SECONDS = 2.0  # `logs --follow`
LONG_POLL_SECONDS = 20
MAX_PAGES = 1000  # --all stops here (a cursor loop cannot run forever)


def dispatch(args: argparse.Namespace) -> int:
    cfg = config.resolve(flag_url=args.api_url, flag_key=args.api_key, config_path=args.config)
    with Api(cfg, timeout=args.timeout) as client:
        return COMMANDS[args.client_command](client, args)


def emit_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def to_yaml(value) -> str:
    try:
        import yaml
    except ImportError:
        raise ConfigError("MissingExtra", "-o yaml needs PyYAML: install it with `pip install 'schedgen[cli]'`") \
            from None
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def emit_document(value, fmt: str) -> None:
    """-o json or -o yaml: the one document on stdout."""
    if fmt == "yaml":
        sys.stdout.write(to_yaml(value))
    else:
        emit_json(value)


def emit_names(names) -> None:
    """-o name: one a line (for xargs and shell loops)."""
    for name in names:
        print(name)


def show_jobs(items: list[dict], fmt: str, document, *, files: list[str] | None = None) -> None:
    """A list of job statuses: `document` for json/yaml, the ids for name, else a table."""
    if fmt in ("json", "yaml"):
        emit_document(document, fmt)
    elif fmt == "name":
        emit_names(s["id"] for s in items)
    else:
        render.console().print(render.jobs_table(items, files=files, wide=fmt == "wide"))


def failed(status: dict) -> bool:
    return status.get("phase") in ("Failed", "Cancelled")


# --- submit and watch -------------------------------------------------------------------


def _poll(client: Api, job_id: str, single: bool) -> dict:
    """One status read: a long poll when following one job; a server without ?wait=
    answers at once, so then sleep a little."""
    started = time.monotonic()
    status = client.job(job_id, wait=LONG_POLL_SECONDS if single else None)
    if status.get("phase") not in FINISHED and time.monotonic() - started < POLL_SECONDS:
        time.sleep(POLL_SECONDS)
    return status


class Reporter:
    """Progress on stderr: a rich display on a terminal, plain lines elsewhere."""

    def __init__(self) -> None:
        self.err = render.console(stderr=True)
        self.live = self.err.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=self.err,
                                 disable=not self.live)
        self.tasks: dict[str, int] = {}
        self.last: dict[str, str] = {}

    def __enter__(self) -> "Reporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def add(self, name: str, label: str) -> None:
        self.tasks[name] = self.progress.add_task(label, total=3, state="waiting")

    def update(self, name: str, state: str, step: int | None = None) -> None:
        kwargs = {"completed": step} if step is not None else {}
        self.progress.update(self.tasks[name], state=state, **kwargs)
        if not self.live and self.last.get(name) != state:
            print(f"{self.progress.tasks[self.tasks[name]].description}: {state}", file=sys.stderr, flush=True)
        self.last[name] = state


def _step(status: dict) -> int:
    return {"Queued": 1, "Running": 2}.get(status.get("phase"), 3)


def follow(client: Api, ids: list[str], reporter: Reporter, deadline: float) -> dict[str, dict]:
    """Poll each job until all have finished; ClientError when the deadline passes."""
    final: dict[str, dict] = {}
    while len(final) < len(ids):
        if time.monotonic() > deadline:
            left = ", ".join(i for i in ids if i not in final)
            raise ClientError("WaitTimeout", f"still not finished: {left}", EXIT_API)
        pending = [i for i in ids if i not in final]
        for job_id in pending:
            status = _poll(client, job_id, single=len(pending) == 1)
            reporter.update(job_id, render.progress_text(status), _step(status))
            if status.get("phase") in FINISHED:
                final[job_id] = status
    return final


def submit(client: Api, args: argparse.Namespace) -> int:
    files: list[Path] = list(dict.fromkeys(args.files))  # the same path twice is one upload
    for f in files:
        if not f.is_file():
            raise ClientError("FileNotFound", f"{f}: no such file", EXIT_USAGE)
    accepted: list[tuple[Path, dict]] = []
    errors = 0
    with Reporter() as reporter:
        def on_retry(delay: float, err: ApiError) -> None:
            print(f"{err.code}: retrying in {delay:g}s", file=sys.stderr, flush=True)
        client.on_retry = on_retry
        for f in files:
            reporter.add(str(f), f.name)
        for f in files:
            reporter.update(str(f), "uploading")
            try:
                body = client.upload(f, priority=args.priority, schedule_type=args.schedule_type,
                                     idempotency_key=f"schedgen-cli-{uuid.uuid4()}")
            except ApiError as err:
                errors += 1
                reporter.update(str(f), f"refused: {err.code}: {err.message}", 3)
                continue
            reporter.tasks[body["id"]] = reporter.tasks.pop(str(f))
            reporter.progress.update(reporter.tasks[body["id"]], description=f"{f.name} → {body['id']}")
            reporter.update(body["id"], render.progress_text(body), _step(body))
            accepted.append((f, body))
        if args.wait and accepted:
            final = follow(client, [b["id"] for _, b in accepted], reporter, time.monotonic() + args.wait_timeout)
            accepted = [(f, final[b["id"]]) for f, b in accepted]
    statuses = [s for _, s in accepted]
    if accepted or args.output in ("json", "yaml"):
        show_jobs(statuses, args.output, [{"file": str(f), **s} for f, s in accepted],
                  files=[f.name for f, _ in accepted])
    if errors:
        return EXIT_API
    return EXIT_JOB_FAILED if args.wait and any(failed(s) for s in statuses) else EXIT_OK


def watch(client: Api, args: argparse.Namespace) -> int:
    with Reporter() as reporter:
        reporter.add(args.id, args.id)
        status = follow(client, [args.id], reporter, time.monotonic() + args.wait_timeout)[args.id]
    show_status(status, args.output)
    return EXIT_JOB_FAILED if failed(status) else EXIT_OK


# --- reads ------------------------------------------------------------------------------


def show_status(status: dict, fmt: str) -> None:
    """One job: every field as a two-column table; wide: one row of `jobs list -o wide`."""
    if fmt == "table":
        render.console().print(render.job_detail(status))
    else:
        show_jobs([status], fmt, status)


def get(client: Api, args: argparse.Namespace) -> int:
    show_status(client.job(args.id), args.output)
    return EXIT_OK


def list_jobs(client: Api, args: argparse.Namespace) -> int:
    page = client.list_jobs(phase=args.phase, limit=args.limit, cursor=args.cursor)
    items = list(page.get("items") or [])
    pages = 1
    while args.all and page.get("nextCursor") and pages < MAX_PAGES:
        page = client.list_jobs(phase=args.phase, limit=args.limit, cursor=page["nextCursor"])
        items += page.get("items") or []
        pages += 1
    cursor = page.get("nextCursor")
    show_jobs(items, args.output, {"items": items, "nextCursor": cursor})
    if cursor and args.output not in ("json", "yaml"):
        print(f"more jobs: schedgen jobs list --cursor {cursor}  (or --all)", file=sys.stderr)
    return EXIT_OK


def events(client: Api, args: argparse.Namespace) -> int:
    fmt = args.output
    if args.output_file and fmt not in ("json", "yaml", "ics"):
        raise ClientError("Usage", "--output-file needs -o json, yaml or ics", EXIT_USAGE)
    try:
        if fmt == "ics":
            text = client.calendar(args.id, first_day=args.first_day, last_day=args.last_day,
                                   exclude=args.exclude, exam_hours=args.exam_hours)
        else:
            body = client.events(args.id)
    except ApiError as err:
        if err.code == "JobNotSucceeded":
            err.exit_code = EXIT_JOB_FAILED
        raise
    if fmt == "ics":
        pass
    elif fmt == "json":
        text = json.dumps(body, indent=2) + "\n"
    elif fmt == "yaml":
        text = to_yaml(body)
    else:
        render.console().print(render.events_table(body["kind"], body["events"], wide=fmt == "wide"))
        return EXIT_OK
    if args.output_file:
        args.output_file.write_text(text, encoding="utf-8")
        print(f"wrote {args.output_file}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def queue(client: Api, args: argparse.Namespace) -> int:
    body = client.queue()
    if args.output in ("json", "yaml"):
        emit_document(body, args.output)
        return EXIT_OK
    if args.output == "name":
        emit_names(body.get("tenants") or {})
        return EXIT_OK
    table = render.new_table()
    columns = ("waiting", "running", "succeeded", "failed", "cancelled", "oldestWaitingSeconds")
    for header in ("Tenant", "Waiting", "Running", "Succeeded", "Failed", "Cancelled", "Oldest wait (s)"):
        table.add_column(header, justify="left" if header == "Tenant" else "right")
    for name, counts in [*(body.get("tenants") or {}).items(), ("(total)", body.get("total") or {})]:
        table.add_row(name, *(render._cell(counts.get(c)) for c in columns))
    render.console().print(table)
    return EXIT_OK


# --- cancel and delete ------------------------------------------------------------------


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ClientError("ConfirmationRequired", "not a terminal: pass --yes to confirm", EXIT_USAGE)
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ClientError("NotConfirmed", "nothing done", EXIT_USAGE)


def cancel(client: Api, args: argparse.Namespace) -> int:
    return _delete(client, args, only_unfinished=True)


def delete(client: Api, args: argparse.Namespace) -> int:
    return _delete(client, args, only_unfinished=False)


def _delete(client: Api, args: argparse.Namespace, *, only_unfinished: bool) -> int:
    """The API has one DELETE: it cancels an unfinished job and erases it with its events.
    `cancel` refuses a finished job (nothing to stop); both ask before erasing."""
    status = client.job(args.id)
    phase = status.get("phase")
    if only_unfinished and phase in FINISHED:
        raise ClientError("AlreadyFinished", f"job {args.id} is {phase}: nothing to cancel "
                          "(`schedgen jobs delete` erases it)", EXIT_USAGE)
    what = "Cancel and erase" if phase not in FINISHED else "Erase"
    _confirm(f"{what} job {args.id} ({phase}) and its events?", args.yes)
    client.delete_job(args.id)
    if args.output in ("json", "yaml"):
        emit_document({"id": args.id, "deleted": True, "phase": phase}, args.output)
    elif args.output == "name":
        emit_names([args.id])
    else:
        print(f"{'cancelled and erased' if phase not in FINISHED else 'erased'} job {args.id} (was {phase})")
    return EXIT_OK


# --- logs -------------------------------------------------------------------------------


def logs(client: Api, args: argparse.Namespace) -> int:
    """The runner's summary and the ParseJob's Kubernetes Events (`GET .../log`); with
    --follow, new Events as they come until the job finishes (then the summary)."""
    if not args.follow:
        doc = client.logs(args.id)
        if args.output in ("json", "yaml"):
            emit_document(doc, args.output)
        else:
            out = render.console()
            out.print(render.log_header(doc))
            out.print(render.log_events_table(doc.get("events") or [], wide=args.output == "wide"))
        return EXIT_OK
    deadline = time.monotonic() + args.wait_timeout
    seen: set[tuple] = set()
    streaming = args.output not in ("json", "yaml")
    while True:
        doc = client.logs(args.id)
        if streaming:
            for event in doc.get("events") or []:
                key = tuple(event.get(k) for k in ("firstTime", "lastTime", "count", "type", "reason", "message"))
                if key not in seen:
                    seen.add(key)
                    print(render.log_line(event, wide=args.output == "wide"), flush=True)
        if doc.get("phase") in FINISHED:
            break
        if time.monotonic() > deadline:
            raise ClientError("WaitTimeout", f"job {args.id} is still {doc.get('phase')}", EXIT_API)
        time.sleep(LOG_POLL_SECONDS)
    if streaming:
        render.console().print(render.log_header(doc))
    else:
        emit_document(doc, args.output)
    return EXIT_JOB_FAILED if failed(doc) else EXIT_OK


COMMANDS = {"submit": submit, "list": list_jobs, "get": get, "watch": watch, "cancel": cancel, "delete": delete,
            "events": events, "logs": logs, "queue": queue}
