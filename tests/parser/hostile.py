"""Hostile PDFs, written as raw bytes: what an attacker would upload to break the parser.

Each builder writes one small file to `path` (a few KiB to a few hundred KiB) that is
valid enough for pdfminer to open, and returns nothing. Nothing here is committed as a
binary: the tests write these files afresh. `CASES` maps a name to (builder, the error
code the parser must end with).

    .venv/bin/python tests/parser/hostile.py OUTDIR   # write every case, to try by hand
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path

from schedgen.runner.parsing import Limits

BOMB_BYTES = 150 * 1024 * 1024  # what the inflate bombs decode to
NEST_DEPTH = 20_000
MANY_PAGES = 5_000
TEXT = b"BT /F1 12 Tf 72 720 Td (Hostile) Tj ET\n0 0 m 100 100 l S\n"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def stream(data: bytes, extra: bytes = b"") -> bytes:
    """A stream object's body: its dictionary (with /Length) and the raw data."""
    return b"<< /Length %d %s >>\nstream\n%s\nendstream" % (len(data), extra, data)


def write_pdf(path: Path | str, objects: list[bytes], root: int = 1) -> None:
    """Objects numbered from 1 in order, a classic xref table and a trailer."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, root, xref)
    Path(path).write_bytes(bytes(out))


CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"


def page(resources: bytes = b"", extra: bytes = b"") -> bytes:
    """Page 3 of `one_page`: content stream 4, font 5 as /F1."""
    return (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> %s >> %s >>" % (resources, extra))


def one_page(path: Path | str, content: bytes, resources: bytes = b"",
             extra: list[bytes] = (), page_extra: bytes = b"") -> None:
    """Catalog 1, Pages 2, Page 3, content stream 4, font 5, then `extra` from 6."""
    write_pdf(path, [CATALOG, PAGES, page(resources, page_extra), content, FONT, *extra])


def zeros_deflated(size: int = BOMB_BYTES) -> bytes:
    """`size` zero bytes deflated (about 1/1000 of it), without holding them in memory."""
    packer = zlib.compressobj(9)
    chunk = b"0" * (1 << 20)
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join(parts) + packer.flush()


def pages_pdf(path: Path | str, pages: int, declared: int) -> None:
    """`pages` small pages under one /Pages node whose /Count says `declared`."""
    first = 4  # objects 1 catalog, 2 pages, 3 content, 4.. pages
    kids = b" ".join(b"%d 0 R" % (first + n) for n in range(pages))
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, declared),
        stream(TEXT),
        *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R >>"] * pages])


def page_count_lie(path):
    """150 real pages; the page tree declares 1."""
    pages_pdf(path, 150, declared=1)


def many_pages(path):
    """5,000 tiny pages, declared honestly: far beyond any page limit."""
    pages_pdf(path, MANY_PAGES, declared=MANY_PAGES)


def many_pages_declared_few(path):
    """5,000 tiny pages behind a page tree that declares 1."""
    pages_pdf(path, MANY_PAGES, declared=1)


def inflate_bomb(path):
    """A page whose content stream inflates to 150 MiB."""
    one_page(path, stream(zeros_deflated(), b"/Filter /FlateDecode"))


def inflate_bomb_corrupted(path):
    """The same bomb with its checksum cut off: pdfminer's `decompress_corrupted` path."""
    one_page(path, stream(zeros_deflated()[:-4], b"/Filter /FlateDecode"))


def inflate_bomb_twice(path):
    """A bomb deflated once more (FlateDecode twice): small at every step but the last."""
    one_page(path, stream(zlib.compress(zeros_deflated(), 9),
                          b"/Filter [/FlateDecode /FlateDecode]"))


def form_bomb(path):
    """A small page that draws a form XObject whose stream inflates to 150 MiB."""
    one_page(path, stream(b"q /X0 Do Q\n"), b"/XObject << /X0 6 0 R >>", [
        stream(zeros_deflated(), b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] "
                                 b"/Filter /FlateDecode")])


def image_bomb(path):
    """A small page that draws an image whose pixel data inflates to 150 MiB."""
    one_page(path, stream(b"q 612 0 0 792 0 0 cm /Im0 Do Q\n"), b"/XObject << /Im0 6 0 R >>", [
        stream(zeros_deflated(), b"/Type /XObject /Subtype /Image /Width 10240 /Height 5120 "
                                 b"/ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode")])


def huge_image(path):
    """An image XObject that declares 100000 x 100000 pixels (30 GB of RGB)."""
    one_page(path, stream(b"q 612 0 0 792 0 0 cm /Im0 Do Q\n"), b"/XObject << /Im0 6 0 R >>", [
        stream(zlib.compress(b"\0" * 30_000), b"/Type /XObject /Subtype /Image /Width 100000 "
               b"/Height 100000 /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode")])


def deep_array(path):
    """An array nested 20,000 deep as the page's MediaBox."""
    nested = b"[" * NEST_DEPTH + b"]" * NEST_DEPTH
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox %s /Contents 4 0 R >>" % nested,
        stream(TEXT)])


def deep_dict(path):
    """A dictionary nested 20,000 deep as the page's resources."""
    nested = b"<< /A " * NEST_DEPTH + b"1" + b" >>" * NEST_DEPTH
    one_page(path, stream(TEXT), resources=b"/Font %s" % nested)


def deep_page_tree(path):
    """A page tree 20,000 /Pages nodes deep above its one page."""
    depth = NEST_DEPTH
    nodes = [b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (3 + n) for n in range(depth)]
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        *nodes,
        b"<< /Type /Page /MediaBox [0 0 612 792] /Contents %d 0 R >>" % (4 + depth),
        stream(TEXT)])


def deep_content_array(path):
    """A text array nested 20,000 deep inside the content stream."""
    one_page(path, stream(b"BT /F1 12 Tf 72 720 Td " + b"[" * NEST_DEPTH + b"]" * NEST_DEPTH
                          + b" TJ ET\n" + TEXT))


def self_reference(path):
    """An object that is a reference to itself, used as the page's MediaBox and Contents."""
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox 4 0 R /Contents 4 0 R >>",
        b"4 0 R"])


def kids_loop(path):
    """A page tree whose /Kids holds the tree itself (and the page, once)."""
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R 3 0 R 2 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        stream(TEXT)])


def parent_loop(path):
    """A page whose /Parent chain loops, and no MediaBox on it or any node above it."""
    write_pdf(path, [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 /Parent 5 0 R >>",
        b"<< /Type /Page /Parent 2 0 R /Contents 4 0 R >>",
        stream(TEXT),
        b"<< /Type /Pages /Kids [2 0 R] /Count 1 /Parent 2 0 R >>"])


def form_loop(path):
    """A form XObject that draws itself."""
    one_page(path, stream(b"/X0 Do\n"), b"/XObject << /X0 6 0 R >>", [
        stream(b"/X0 Do\n", b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] "
                            b"/Resources << /XObject << /X0 6 0 R >> >>")])


def form_fan_out(path):
    """30 levels of forms, each drawing the next twice: 2**30 drawings of a line."""
    levels = 30
    forms = []
    for level in range(levels):
        target = 6 + level + 1
        body = b"0 0 m 1 1 l S\n" if level == levels - 1 else b"/X Do /X Do\n"
        forms.append(stream(body, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] "
                                  b"/Resources << /XObject << /X %d 0 R >> >>" % target))
    one_page(path, stream(b"/X Do\n"), b"/XObject << /X 6 0 R >>", forms)


def char_flood(path):
    """A page content stream within the content limit that draws a million characters."""
    text = b"BT /F1 1 Tf 1 0 0 1 0 0 Tm (" + b"A" * 1_000_000 + b") Tj ET\n"
    one_page(path, stream(zlib.compress(text), b"/Filter /FlateDecode"))


def path_flood(path):
    """A page content stream within the content limit that draws 140,000 lines."""
    one_page(path, stream(zlib.compress(b"0 0 m 1 1 l S\n" * 140_000), b"/Filter /FlateDecode"))


def packed_objects_pdf(path: Path | str, packed: dict[int, bytes], plain: dict[int, bytes],
                       padding: int) -> None:
    """A PDF 1.5 file: objects `packed` each alone in a deflated object stream padded with
    `padding` spaces, objects `plain` written directly, a cross-reference stream, and
    object 1 the catalog."""
    out = bytearray(b"%PDF-1.7\n")
    rows = {0: (0, 0, 65535)}
    number = max([*packed, *plain]) + 1
    for objid, body in plain.items():
        rows[objid] = (1, len(out), 0)
        out += b"%d 0 obj\n%s\nendobj\n" % (objid, body)
    for objid, body in packed.items():
        header = b"%d 0 " % objid
        packer = zlib.compressobj(9)
        data = packer.compress(header + body + b" ")
        pad = b" " * (1 << 20)
        data += b"".join(packer.compress(pad) for _ in range(padding >> 20)) + packer.flush()
        rows[objid] = (2, number, 0)
        rows[number] = (1, len(out), 0)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, stream(
            data, b"/Type /ObjStm /N 1 /First %d /Filter /FlateDecode" % len(header)))
        number += 1
    rows[number] = (1, len(out), 0)
    table = b"".join(bytes([kind]) + field.to_bytes(4, "big") + gen.to_bytes(2, "big")
                     for kind, field, gen in (rows.get(n, (0, 0, 0)) for n in range(number + 1)))
    xref = len(out)
    out += b"%d 0 obj\n%s\nendobj\n" % (number, stream(
        table, b"/Type /XRef /Size %d /W [1 4 2] /Root 1 0 R" % (number + 1)))
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    Path(path).write_bytes(bytes(out))


def object_stream_bomb(path):
    """The page tree lives in a compressed object stream that inflates to 150 MiB."""
    packed_objects_pdf(path, {2: PAGES}, {1: CATALOG, 3: page(), 4: stream(TEXT), 5: FONT},
                       padding=BOMB_BYTES)


def many_packed_streams(path):
    """Five object streams of 7 MiB each: each under the per-stream cap, too much together."""
    packed_objects_pdf(path, {1: CATALOG, 2: PAGES, 3: page(extra=b"/Rotate 6 0 R"), 5: FONT,
                              6: b"0"},
                       {4: stream(TEXT)}, padding=7 << 20)


def everything_at_once(path):
    """Just under every default limit at once: object streams of almost all the decoding
    budget, then a page of almost as many characters and lines as allowed (no table)."""
    limits = Limits()
    text = b"BT /F1 1 Tf 1 0 0 1 0 0 Tm (" + b"A" * (limits.max_chars_per_page - 100) + b") Tj ET\n"
    lines = b"0 0 m 1 1 l S\n" * (limits.max_graphics_per_page - 100)
    packed = [CATALOG, PAGES, page(), FONT]
    packed_objects_pdf(path, dict(zip((1, 2, 3, 5), packed)),
                       {4: stream(zlib.compress(text + lines), b"/Filter /FlateDecode")},
                       padding=(limits.max_decoded_bytes - (1 << 20)) // len(packed))


def ruling_grid(path):
    """A page ruled by 150 horizontal and 150 vertical lines: 22,500 cells to find."""
    lines = b"".join(b"0 %d m 600 %d l S\n%d 0 m %d 600 l S\n" % (4 * n, 4 * n, 4 * n, 4 * n)
                     for n in range(150))
    one_page(path, stream(lines))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "page_count_lie": (page_count_lie, "TooManyPages"),
    "many_pages": (many_pages, "TooManyPages"),
    "many_pages_declared_few": (many_pages_declared_few, "TooManyPages"),
    "inflate_bomb": (inflate_bomb, "TooLarge"),
    "inflate_bomb_corrupted": (inflate_bomb_corrupted, "TooLarge"),
    "inflate_bomb_twice": (inflate_bomb_twice, "TooLarge"),
    "form_bomb": (form_bomb, "TooLarge"),
    "image_bomb": (image_bomb, "NoTables"),
    "huge_image": (huge_image, "NoTables"),
    "object_stream_bomb": (object_stream_bomb, "TooLarge"),
    "many_packed_streams": (many_packed_streams, "TooLarge"),
    "everything_at_once": (everything_at_once, "NoTables"),
    "ruling_grid": (ruling_grid, "TooLarge"),
    "deep_array": (deep_array, "CorruptPDF"),
    "deep_dict": (deep_dict, "NoTables"),
    "deep_page_tree": (deep_page_tree, "NoTables"),
    "deep_content_array": (deep_content_array, "CorruptPDF"),
    "self_reference": (self_reference, "CorruptPDF"),
    "kids_loop": (kids_loop, "NoTables"),
    "parent_loop": (parent_loop, "CorruptPDF"),
    "form_loop": (form_loop, "NoTables"),
    "form_fan_out": (form_fan_out, "TooLarge"),
    "char_flood": (char_flood, "TooLarge"),
    "path_flood": (path_flood, "TooLarge"),
}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, (build, code) in CASES.items():
        build(out / f"{name}.pdf")
        print(f"{name}.pdf  (expect {code}, {(out / f'{name}.pdf').stat().st_size} bytes)")
