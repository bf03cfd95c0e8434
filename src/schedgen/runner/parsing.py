"""Parse a schedule PDF into events, within limits, or fail with a typed error.

One pass over the document: each page is read once (pdfplumber), its ruled tables are
found once, and its words are binned into table cells by position (not by filtering
every character per cell), then released before the next page. The rules that turn
rows into events live in `parser_rules.py`.
"""

from __future__ import annotations

import bisect
import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pdfplumber
import pdfplumber.page
from pdfminer.layout import LTChar
from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
from pdfminer.pdfpage import PDFPage
from pdfminer.pdftypes import resolve1

from schedgen.errors import (
    CorruptPDF,
    EncryptedPDF,
    MemoryLimitExceeded,
    NoTables,
    NotAPDF,
    ParseTimeout,
    SchedgenError,
    TooLarge,
    TooManyPages,
    UnknownScheduleType,
)
from schedgen.models import ParseResult, ScheduleKind

from . import parser_rules as rules

MAGIC_WINDOW = 1024  # PDF readers accept the %PDF- header within the first KiB


@dataclass(frozen=True)
class Limits:
    max_pages: int = 100
    max_seconds: float = 60.0
    max_chars_per_page: int = 100_000
    max_content_bytes_per_page: int = 2 * 1024 * 1024


def parse_pdf(path: Path | str, schedule_type: str = "auto", limits: Limits | None = None) -> ParseResult:
    """Events of the schedule in `path`; `schedule_type` is auto, lecture, test or exam."""
    limits = limits or Limits()
    path = Path(path)
    wanted = None if schedule_type in (None, "", "auto") else ScheduleKind(schedule_type)
    started = time.monotonic()
    check_file(path)
    with hard_deadline(limits.max_seconds):
        header, rows, pages = _read_tables(path, wanted, limits, started + limits.max_seconds)
        records = rules.to_records(rows, header)
        events = rules.events_for(header.kind, records)
    return ParseResult(kind=header.kind, events=events, pages=pages,
                       seconds=time.monotonic() - started)


def check_file(path: Path) -> None:
    """Cheap checks before any parsing: the PDF signature and a complete trailer."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(MAGIC_WINDOW)
        if b"%PDF-" not in head:
            raise NotAPDF("the file does not start with a PDF header (%PDF-)")
        fh.seek(max(0, size - MAGIC_WINDOW))
        tail = fh.read()
    if b"%%EOF" not in tail:
        raise CorruptPDF("the PDF has no end-of-file marker: it is truncated or damaged")


def _read_tables(path: Path, wanted: ScheduleKind | None, limits: Limits, deadline: float):
    header: rules.Header | None = None
    rows: list[rules.Row] = []
    found_table = False
    with _open(path) as pdf:
        pages = _page_count(pdf)
        if pages > limits.max_pages:
            raise TooManyPages(f"the PDF has {pages} pages; the limit is {limits.max_pages}")
        if pages == 0:
            raise NoTables("the PDF has no pages")
        for number, page in enumerate(_pages(pdf), 1):
            if time.monotonic() > deadline:
                raise ParseTimeout(f"parsing took longer than {limits.max_seconds:g} s (at page {number})")
            for table_rows in _page_tables(page, number, limits):
                found_table = True
                for row in table_rows:
                    texts = [" ".join(line.text for line in cell) for cell in row]
                    candidate = rules.recognise_header(texts, only=wanted or (header and header.kind))
                    if candidate is not None:
                        header = header or candidate  # a repeated header row is skipped
                    elif header is not None:
                        rows.append(row)
            page.close()
    if not found_table:
        raise NoTables("no ruled table was found in the PDF")
    if header is None:
        what = f"a {wanted.value} schedule" if wanted else "a UP lecture, test or exam schedule"
        raise UnknownScheduleType(f"no table header of {what} was found")
    return header, rows, pages


@contextlib.contextmanager
def _open(path: Path):
    try:
        pdf = pdfplumber.open(path)
    except Exception as exc:  # pdfminer raises many types for damaged files
        raise _typed(exc, "the PDF cannot be read") from exc
    try:
        yield pdf
    finally:
        pdf.close()


class _LeanPage(pdfplumber.page.Page):
    """A pdfplumber page that keeps only what table finding and word reading use.

    pdfplumber copies and resolves every attribute of every character (colours, matrix,
    marked content); for a schedule that is about half of the time spent per page.
    Lines and rectangles, the table rules, go through pdfplumber unchanged.
    """

    def process_object(self, obj):
        if not isinstance(obj, LTChar):
            return super().process_object(obj)
        top = self.height - obj.y1 + self.mediabox[1]
        x_shift = self.mediabox[0]
        return {
            "object_type": "char", "page_number": self.page_number, "text": obj.get_text(),
            "x0": obj.x0 + x_shift, "x1": obj.x1 + x_shift, "y0": obj.y0, "y1": obj.y1,
            "top": top, "bottom": top + obj.height, "doctop": self.initial_doctop + top,
            "width": obj.width, "height": obj.height, "size": obj.size,
            "upright": obj.upright, "fontname": obj.fontname,
        }


def _pages(pdf):
    """Pages one at a time (pdfplumber's `pdf.pages` builds them all up front)."""
    doctop = 0.0
    for number, page_obj in enumerate(PDFPage.create_pages(pdf.doc), 1):
        page = _LeanPage(pdf, page_obj, page_number=number, initial_doctop=doctop)
        doctop += page.height
        yield page


def _page_count(pdf) -> int:
    try:
        return int(resolve1(resolve1(pdf.doc.catalog["Pages"])["Count"]))
    except Exception:  # fall back to walking the page tree
        try:
            return len(pdf.pages)
        except Exception as exc:
            raise CorruptPDF(f"the page tree cannot be read ({type(exc).__name__})") from exc


def _page_tables(page, number: int, limits: Limits) -> list[list[rules.Row]]:
    """Each ruled table on the page as rows of cells of positioned lines."""
    try:
        content = _content_bytes(page)
        if content > limits.max_content_bytes_per_page:
            raise TooLarge(f"page {number} has {content} bytes of drawing instructions; "
                           f"the limit is {limits.max_content_bytes_per_page}")
        chars = page.chars
        if len(chars) > limits.max_chars_per_page:
            raise TooLarge(f"page {number} holds {len(chars)} characters; "
                           f"the limit is {limits.max_chars_per_page}")
        tables = page.find_tables()
        return [_table_rows(table, chars) for table in tables]
    except Exception as exc:
        raise _typed(exc, f"page {number} cannot be read") from exc


def _content_bytes(page) -> int:
    """Size of the page's decoded content streams: a cheap bound before interpreting them."""
    streams = resolve1(page.page_obj.attrs.get("Contents"))
    if streams is None:
        return 0
    if not isinstance(streams, list):
        streams = [streams]
    return sum(len(resolve1(stream).get_data()) for stream in streams)


def _typed(exc: BaseException, context: str) -> SchedgenError:
    """The typed error behind a pdfminer/pdfplumber failure (they wrap their causes)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SchedgenError):
            return cause
        if isinstance(cause, MemoryError):
            return MemoryLimitExceeded("the PDF needs more memory than the parser may use")
        if isinstance(cause, (PDFPasswordIncorrect, PDFEncryptionError)):
            return EncryptedPDF("the PDF is password-protected or uses unsupported encryption")
        cause = cause.__cause__ or cause.__context__
    return CorruptPDF(f"{context} ({type(exc).__name__}: {str(exc)[:200]})")


def _table_rows(table, chars: list[dict]) -> list[rules.Row]:
    """Bin characters into cells by their centre, then read each cell's lines.

    Characters, not words, are binned: header text that overlaps a neighbouring cell
    would otherwise merge into one word across two columns.
    """
    columns, rows = table.columns, table.rows  # computed properties: read once
    col_edges = [column.bbox[0] for column in columns][1:]
    row_edges = [row.bbox[1] for row in rows][1:]
    x0, top, x1, bottom = table.bbox
    grid: list[list[list[dict]]] = [[[] for _ in columns] for _ in rows]
    for char in chars:
        cx, cy = (char["x0"] + char["x1"]) / 2, (char["top"] + char["bottom"]) / 2
        if x0 <= cx <= x1 and top <= cy <= bottom:
            grid[bisect.bisect_right(row_edges, cy)][bisect.bisect_right(col_edges, cx)].append(char)
    return [[_cell_lines(cell) for cell in row] for row in grid]


def _cell_lines(chars: list[dict], tolerance: float = 2.0, gap: float = 3.0) -> rules.Cell:
    """Lines of a cell, positioned by `doctop` so that continued rows keep page order.

    Characters on one line are joined left to right; a horizontal gap wider than `gap`
    points starts a new word (pdfplumber's default x tolerance).
    """
    lines: list[tuple[float, list[dict]]] = []
    for char in sorted(chars, key=lambda c: (c["doctop"], c["x0"])):
        if lines and abs(char["doctop"] - lines[-1][0]) <= tolerance:
            lines[-1][1].append(char)
        else:
            lines.append((char["doctop"], [char]))
    out = []
    for top, line_chars in lines:
        line_chars.sort(key=lambda c: c["x0"])
        parts, right = [], None
        for char in line_chars:
            if right is not None and char["x0"] - right > gap:
                parts.append(" ")
            parts.append(char["text"])
            right = char["x1"]
        text = " ".join("".join(parts).split())
        if text:
            out.append(rules.Line(text, top))
    return out


@contextlib.contextmanager
def hard_deadline(seconds: float):
    """Interrupt work stuck inside one page (pdfminer loops) with ParseTimeout (SIGALRM).

    Only possible in the main thread; elsewhere the per-page deadline check applies. An
    outer timer that was running is put back, less the time spent here.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ParseTimeout(f"parsing took longer than {seconds:g} s")

    outer_remaining, _ = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_remaining:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_remaining - (time.monotonic() - started)))
