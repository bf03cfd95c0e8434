"""Parse a schedule PDF into events, within limits, or fail with a typed error.

One pass over the document: each page is read once (pdfplumber), its ruled tables are
found once, and its characters are binned into table cells by position (not filtered
per cell), then released before the next page. The rules that turn
rows into events live in `parser_rules.py`.

The file is untrusted. Every limit holds while it is read, not after: pages are counted
one by one in the page tree, streams are decoded against a budget and pages are drawn
against theirs (`pdfbounds`), and any failure of the PDF libraries on it ends as a typed
`BadInput` error (exit 2: the same file would fail the same way again).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pdfplumber
import pdfplumber.page
from pdfminer.layout import LTChar
from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect
from pdfminer.pdfinterp import PDFResourceManager
from pdfminer.pdfpage import PDFPage
from pdfminer.pdfparser import PDFParser
from pdfminer.pdftypes import resolve1

from schedgen.errors import (
    CorruptPDF,
    EncryptedPDF,
    MemoryLimitExceeded,
    NoTables,
    NotAPDF,
    ParseTimeout,
    SchedgenError,
    TooManyPages,
    UnknownScheduleType,
)
from schedgen.models import ParseResult, ScheduleKind

from . import parser_rules as rules
from . import pdfbounds

MAGIC_WINDOW = 1024  # PDF readers accept the %PDF- header within the first KiB


@dataclass(frozen=True)
class Limits:
    """What one parse may use. The defaults keep a hostile file under 150 MiB of memory
    and a few seconds a page; real UP exports use a small fraction (at most ~2,000
    characters, ~30 graphics, an 11 x 17 ruling grid and ~16 KB of decoded streams per page)."""

    max_pages: int = 100
    max_seconds: float = 60.0
    max_chars_per_page: int = 20_000
    max_graphics_per_page: int = 5_000
    """Lines, rectangles, curves, images and forms drawn on one page."""
    max_table_grid_per_page: int = 5_000
    """Vertical times horizontal ruling lines of one page (real exports: under 200)."""
    max_content_bytes_per_page: int = 2 * 1024 * 1024
    """Drawing instructions interpreted for one page, each drawing of a form counted."""
    max_stream_bytes: int = 8 * 1024 * 1024
    """What any one stream (content, form, font, object stream) may decode to."""
    max_decoded_bytes: int = 24 * 1024 * 1024
    """What all the streams of the document may decode to together."""


def parse_pdf(path: Path | str, schedule_type: str = "auto", limits: Limits | None = None) -> ParseResult:
    """Events of the schedule in `path`; `schedule_type` is auto, lecture, test or exam."""
    limits = limits or Limits()
    path = Path(path)
    wanted = None if schedule_type in (None, "", "auto") else ScheduleKind(schedule_type)
    started = time.monotonic()
    check_file(path)
    try:
        with hard_deadline(limits.max_seconds), \
                pdfbounds.decoding_budget(limits.max_stream_bytes, limits.max_decoded_bytes):
            header, rows, pages = _read_tables(path, wanted, limits, started + limits.max_seconds)
            records = rules.to_records(rows, header)
            events = rules.events_for(header.kind, records)
    except SchedgenError:
        raise
    except Exception as exc:  # pdfminer and pdfplumber fail on bad files in many ways
        raise _typed(exc, "the PDF cannot be read") from exc
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
        page_objs = _page_objects(pdf, limits.max_pages)
        for number, page in enumerate(_pages(pdf, page_objs, limits), 1):
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
    return header, rows, len(page_objs)


class _PDF(pdfplumber.PDF):
    """pdfplumber's PDF over a `pdfbounds.Document`, without what this parser never
    reads: the metadata (which pdfplumber resolves eagerly) and `close()` building every
    page of the file first (pdfplumber's does, to flush their caches)."""

    def __init__(self, stream):
        self.stream, self.stream_is_external, self.path = stream, True, None
        self.pages_to_parse = self.laparams = self.password = self.unicode_norm = None
        self.raise_unicode_errors = True
        self.doc = pdfbounds.Document(PDFParser(stream))
        self.rsrcmgr = PDFResourceManager()
        self.metadata = {}

    def close(self) -> None:
        self.flush_cache()


@contextlib.contextmanager
def _open(path: Path):
    with path.open("rb") as stream:
        pdf = _PDF(stream)
        try:
            yield pdf
        finally:
            pdf.close()


class _LeanPage(pdfplumber.page.Page):
    """A pdfplumber page that keeps only what table finding and word reading use, drawn
    within `limits` (`pdfbounds.PageDevice`).

    pdfplumber copies and resolves every attribute of every character (colours, matrix,
    marked content); for a schedule that is about half of the time spent per page.
    Lines and rectangles, the table rules, go through pdfplumber unchanged.
    """

    limits: Limits = Limits()

    @property
    def layout(self):
        if not hasattr(self, "_layout"):
            device = pdfbounds.PageDevice(self.pdf.rsrcmgr, pageno=self.page_number,
                                          laparams=self.pdf.laparams, limits=self.limits)
            pdfbounds.PageInterpreter(self.pdf.rsrcmgr, device).process_page(self.page_obj)
            self._layout = device.get_result()
        return self._layout

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


def _page_objects(pdf, max_pages: int) -> list[PDFPage]:
    """The pages the page tree holds, counted one by one (its /Count may lie); walked to
    at most ten times the limit, to say how many there are."""
    walk_limit = 10 * max_pages
    pages = list(itertools.islice(PDFPage.create_pages(pdf.doc), walk_limit + 1))
    if len(pages) > max_pages:
        count = f"more than {walk_limit}" if len(pages) > walk_limit else str(len(pages))
        raise TooManyPages(f"the PDF has {count} pages; the limit is {max_pages}")
    if not pages:
        raise NoTables("the PDF has no pages")
    return pages


def _pages(pdf, page_objs: list[PDFPage], limits: Limits):
    """Pages one at a time (pdfplumber's `pdf.pages` builds them all up front)."""
    doctop = 0.0
    for number, page_obj in enumerate(page_objs, 1):
        if resolve1(page_obj.attrs.get("MediaBox")) is None:  # pdfplumber needs the page size
            raise CorruptPDF(f"page {number} has no MediaBox (page size), on it or above it")
        page = _LeanPage(pdf, page_obj, page_number=number, initial_doctop=doctop)
        page.limits = limits
        doctop += page.height
        yield page


def _page_tables(page, number: int, limits: Limits) -> list[list[rules.Row]]:
    """Each ruled table on the page as rows of cells of positioned lines."""
    try:
        chars = page.chars
        tables = pdfbounds.TableFinder(page, max_grid=limits.max_table_grid_per_page).tables
        return [_table_rows(table, chars) for table in tables]
    except SchedgenError:
        raise
    except Exception as exc:
        raise _typed(exc, f"page {number} cannot be read") from exc


def _typed(exc: BaseException, context: str) -> SchedgenError:
    """The typed error behind a pdfminer/pdfplumber failure (they wrap their causes):
    always a BadInput, since the same file would fail the same way again."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SchedgenError):
            return cause
        if isinstance(cause, MemoryError):
            return MemoryLimitExceeded("the PDF needs more memory than the parser may use")
        if isinstance(cause, (PDFPasswordIncorrect, PDFEncryptionError)):
            return EncryptedPDF("the PDF is password-protected or uses unsupported encryption")
        if isinstance(cause, RecursionError):
            return CorruptPDF(f"{context}: its objects are nested too deeply")
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
