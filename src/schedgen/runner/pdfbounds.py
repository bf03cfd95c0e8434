"""Bounds on what pdfminer.six may do with one untrusted PDF.

pdfminer.six trusts its input: `PDFStream.decode` inflates a stream with a single
`zlib.decompress` (230 KB can become 150 MiB, all at once), `resolve1` follows an object
that is a reference to itself for ever, and the page interpreter draws whatever a page
asks for, as often as it asks. This module bounds each of them:

* Decoding (the one patch point, `_install`, run at import). `pdfminer.pdftypes` calls
  its decoders by module-level name from `PDFStream.decode`; the ones that can expand
  (`zlib.decompress`, `decompress_corrupted`, `lzwdecode`, `rldecode`, `ccittfaxdecode`,
  `ascii85decode`) are replaced by versions that, inside a `decoding_budget(...)` block,
  never produce more than the budget allows: inflating is incremental
  (`zlib.decompressobj().decompress(data, max_length)`), LZW is consumed chunk by chunk,
  RunLength is decoded into a bounded buffer, and fax (CCITT) data, which only images use,
  is never decoded. Every decoded stream is charged to the budget (`PDFStream.decode` is
  wrapped), so one stream never exceeds `stream_bytes` and all of them together never
  exceed `total_bytes` (pdfminer keeps decoded streams for the document's lifetime).
  A stream past the budget raises `TooLarge`. Outside a budget block the decoders are
  pdfminer's own.
* References: `Document`, a PDFDocument whose objects that are references to other
  objects are followed once, and a loop among them is `CorruptPDF` (not an endless loop).
* Pages: `PageInterpreter` and `PageDevice` count, per page, the bytes of drawing
  instructions interpreted (each drawing of a form XObject counts again), the characters
  and the graphics (lines, rectangles, curves, images, forms) drawn, and raise `TooLarge`
  past a limit, while drawing, before the page's objects pile up. `TableFinder` refuses
  a ruling grid too dense to find cells in, in reasonable time.

Images are never decoded here: table finding needs only where they are.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import types
import zlib
from collections.abc import Iterator
from io import BytesIO

from pdfminer import pdftypes
from pdfminer.lzw import LZWDecoder
from pdfminer.pdfdocument import PDFDocument
from pdfminer.pdfinterp import PDFPageInterpreter
from pdfminer.pdftypes import PDFObjRef, PDFStream, resolve1
import pdfplumber.table
from pdfplumber.page import PDFPageAggregatorWithMarkedContent

from schedgen.errors import CorruptPDF, TooLarge

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class DecodingBudget:
    """Decoded bytes allowed: per stream, and for all streams of one document together."""

    def __init__(self, stream_bytes: int, total_bytes: int):
        self.stream_bytes = stream_bytes
        self.total_bytes = total_bytes
        self.used = 0

    def room(self) -> int:
        """How many bytes the stream being decoded may still become."""
        return min(self.stream_bytes, self.total_bytes - self.used)

    def check(self, size: int) -> None:
        if size > self.stream_bytes:
            raise TooLarge(f"a stream of the PDF decodes to more than {self.stream_bytes} bytes; "
                           f"the limit is {self.stream_bytes}")
        if size > self.total_bytes - self.used:
            raise TooLarge(f"the PDF's streams decode to more than {self.total_bytes} bytes "
                           f"together; the limit is {self.total_bytes}")

    def charge(self, size: int) -> None:
        self.check(size)
        self.used += size


_BUDGET: contextvars.ContextVar[DecodingBudget | None] = contextvars.ContextVar(
    "schedgen_decoding_budget", default=None)


@contextlib.contextmanager
def decoding_budget(stream_bytes: int, total_bytes: int) -> Iterator[DecodingBudget]:
    """Within this block, pdfminer decodes streams against a fresh budget."""
    budget = DecodingBudget(stream_bytes, total_bytes)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


# --- bounded decoders --------------------------------------------------------------

_PDFMINER = {name: getattr(pdftypes, name) for name in (
    "zlib", "decompress_corrupted", "lzwdecode", "rldecode", "ccittfaxdecode", "ascii85decode")}
_pdfminer_decode = PDFStream.decode


def _inflate_part(inflater, data: bytes, room: int, budget: DecodingBudget) -> bytes:
    """Inflate `data`, never past `room` bytes."""
    part = inflater.decompress(data, room + 1)
    if len(part) > room:
        budget.check(len(part))
    return part


def _inflate(data: bytes) -> bytes:
    """`zlib.decompress(data)`, bounded: the same result and the same errors."""
    budget = _BUDGET.get()
    if budget is None:
        return zlib.decompress(data)
    inflater = zlib.decompressobj()
    out = _inflate_part(inflater, data, budget.room(), budget)
    if not inflater.eof:
        raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
    return out


def _inflate_corrupted(data: bytes) -> bytes:
    """pdfminer's `decompress_corrupted`, bounded (and linear, not byte by byte): an error
    in the last 3 bytes (the checksum) is tolerated, an earlier one raised."""
    budget = _BUDGET.get()
    if budget is None:
        return _PDFMINER["decompress_corrupted"](data)
    inflater, room = zlib.decompressobj(), budget.room()
    parts = [_inflate_part(inflater, data[:-3], room, budget)]
    try:
        for index in range(max(0, len(data) - 3), len(data)):
            room -= len(parts[-1])
            parts.append(_inflate_part(inflater, data[index:index + 1], room, budget))
    except zlib.error:
        log.warning("Data-loss while decompressing corrupted data")
    return b"".join(parts)


def _lzw(data: bytes) -> bytes:
    budget = _BUDGET.get()
    if budget is None:
        return _PDFMINER["lzwdecode"](data)
    parts, size, room = [], 0, budget.room()
    for part in LZWDecoder(BytesIO(data)).run():
        size += len(part)
        if size > room:
            budget.check(size)
        parts.append(part)
    return b"".join(parts)


def _runlength(data: bytes) -> bytes:
    """RunLength (PDF 1.7, 7.4.5) into a bounded buffer (pdfminer's builds a list of ints)."""
    budget = _BUDGET.get()
    if budget is None:
        return _PDFMINER["rldecode"](data)
    out, index, room = bytearray(), 0, budget.room()
    while index < len(data) and data[index] != 128:
        length = data[index]
        if length < 128:
            run, index = data[index + 1:index + length + 2], index + length + 2
            if len(run) < length + 1:
                raise ValueError("RunLength data ends inside a run")
            out += run
        else:
            if index + 1 >= len(data):
                raise ValueError("RunLength data ends inside a run")
            out += data[index + 1:index + 2] * (257 - length)
            index += 2
        if len(out) > room:
            budget.check(len(out))
    return bytes(out)


def _fax(data: bytes, params: dict) -> bytes:
    if _BUDGET.get() is None:
        return _PDFMINER["ccittfaxdecode"](data, params)
    raise CorruptPDF("a stream the parser must read is fax-compressed (CCITTFaxDecode), "
                     "which only images use")


def _ascii85(data: bytes) -> bytes:
    out = _PDFMINER["ascii85decode"](data)  # at most 4 bytes per input byte
    budget = _BUDGET.get()
    if budget is not None:
        budget.check(len(out))
    return out


def _decode(self: PDFStream) -> None:
    """`PDFStream.decode`, charging the decoded stream to the budget."""
    _pdfminer_decode(self)
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(len(self.data))


def _install() -> None:
    """The patch point. A pdfminer.six that renames one of these names fails at import
    (`_PDFMINER`); one that decodes by other means fails tests/parser/test_hostile.py."""
    pdftypes.zlib = types.SimpleNamespace(  # only PDFStream.decode and decompress_corrupted use it
        decompress=_inflate, decompressobj=zlib.decompressobj, error=zlib.error)
    pdftypes.decompress_corrupted = _inflate_corrupted
    pdftypes.lzwdecode = _lzw
    pdftypes.rldecode = _runlength
    pdftypes.ccittfaxdecode = _fax
    pdftypes.ascii85decode = _ascii85
    PDFStream.decode = _decode


if PDFStream.decode is _pdfminer_decode and pdftypes.zlib is zlib:
    _install()


# --- references --------------------------------------------------------------------


class Document(PDFDocument):
    """A PDFDocument in which an object that is only a reference to another one resolves
    to what the chain ends in, and a chain that loops is CorruptPDF."""

    def getobj(self, objid: int) -> object:
        obj = super().getobj(objid)
        if isinstance(obj, PDFObjRef):
            seen = {objid}
            while isinstance(obj, PDFObjRef):
                if obj.objid in seen:
                    raise CorruptPDF(f"object {objid} of the PDF refers to itself "
                                     f"(through {len(seen)} object(s))")
                seen.add(obj.objid)
                obj = super().getobj(obj.objid)
        return obj


# --- pages -------------------------------------------------------------------------


class PageDevice(PDFPageAggregatorWithMarkedContent):
    """pdfplumber's layout device, counting what one page draws against `limits` (the
    parser's Limits: max_chars_per_page, max_graphics_per_page, max_content_bytes_per_page)."""

    def __init__(self, rsrcmgr, *, pageno: int, laparams, limits):
        super().__init__(rsrcmgr, pageno=pageno, laparams=laparams)
        self.limits = limits
        self.chars = self.graphics = self.content_bytes = 0

    def count_content(self, size: int) -> None:
        self.content_bytes += size
        if self.content_bytes > self.limits.max_content_bytes_per_page:
            raise TooLarge(f"page {self.pageno} has {self.content_bytes} bytes of drawing instructions "
                           f"(forms counted each time drawn); the limit is {self.limits.max_content_bytes_per_page}")

    def _count_graphic(self) -> None:
        self.graphics += 1
        if self.graphics > self.limits.max_graphics_per_page:
            raise TooLarge(f"page {self.pageno} draws more than {self.limits.max_graphics_per_page} lines, "
                           f"shapes, images and forms; the limit is {self.limits.max_graphics_per_page}")

    def render_char(self, *args, **kwargs) -> float:
        self.chars += 1
        if self.chars > self.limits.max_chars_per_page:
            raise TooLarge(f"page {self.pageno} holds more than {self.limits.max_chars_per_page} "
                           f"characters; the limit is {self.limits.max_chars_per_page}")
        return super().render_char(*args, **kwargs)

    def paint_path(self, *args, **kwargs) -> None:
        self._count_graphic()  # a path of many subpaths comes back here once for each
        super().paint_path(*args, **kwargs)

    def render_image(self, *args, **kwargs) -> None:
        self._count_graphic()
        super().render_image(*args, **kwargs)

    def begin_figure(self, *args, **kwargs) -> None:
        self._count_graphic()
        super().begin_figure(*args, **kwargs)


class PageInterpreter(PDFPageInterpreter):
    """The page interpreter, charging every content stream it runs (the page's and each
    drawn form's) to its `PageDevice` before running it; drawing instructions that are
    not a stream are CorruptPDF (pdfminer would skip them and read half a page)."""

    device: PageDevice

    def execute(self, streams) -> None:
        for obj in streams:
            stream = resolve1(obj)
            if stream is None:  # a missing object: nothing to draw
                continue
            if not isinstance(stream, PDFStream):  # pdfminer would skip it: half a page
                raise CorruptPDF(f"page {self.device.pageno} has drawing instructions that are "
                                 f"not a stream ({type(stream).__name__})")
            self.device.count_content(len(stream.get_data()))
        super().execute(streams)


class TableFinder(pdfplumber.table.TableFinder):
    """pdfplumber's table finder, refusing a page ruled more densely than `max_grid`
    (vertical times horizontal ruling lines, after merging): finding the cells of a grid
    costs about the square of its crossings, minutes for a 100 x 100 grid."""

    def __init__(self, page, *, max_grid: int):
        self.max_grid = max_grid
        super().__init__(page)

    def get_edges(self):
        edges = super().get_edges()
        vertical = sum(1 for edge in edges if edge["orientation"] == "v")
        grid = vertical * (len(edges) - vertical)
        if grid > self.max_grid:
            raise TooLarge(f"page {self.page.page_number} is ruled by a grid of {grid} line crossings; "
                           f"the limit is {self.max_grid}")
        return edges
