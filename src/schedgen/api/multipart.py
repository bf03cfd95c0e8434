"""Streaming multipart/form-data reader with hard limits.

The body is parsed as it arrives (python-multipart's push parser): the `file` part goes
to a SpooledTemporaryFile (memory up to `spool_bytes`, then one temp file, never more
than `max_bytes`) while its SHA-256 is computed; reading stops with 413 as soon as the
file, or the body as a whole, passes the limit. At most a few small text fields, few
parts and short part headers are accepted. Nothing from the client names a file.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import AsyncIterator

from python_multipart.multipart import MultipartParser, parse_options_header

from .errors import ApiError

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024  # PDF readers accept the header anywhere in the first KiB
MAX_PARTS = 4
MAX_FIELD_BYTES = 64
BODY_OVERHEAD = 64 * 1024  # boundaries, part headers, small fields
TEXT_FIELDS = ("priority", "scheduleType")


@dataclass
class Upload:
    file: tempfile.SpooledTemporaryFile
    size: int
    sha256: str
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.file.close()


class _Reader:
    def __init__(self, max_bytes: int, spool_bytes: int):
        self.max_bytes = max_bytes
        self.spool_bytes = spool_bytes
        self.parts = 0
        self.headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self.current: str | None = None  # "file", a text field name
        self.file: tempfile.SpooledTemporaryFile | None = None
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._text = bytearray()
        self.done = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda d, s, e: self._add("_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._add("_value", d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def _add(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise ApiError(400, "TooManyParts", f"at most {MAX_PARTS} form fields are accepted")
        self.headers = {}
        self.current = None

    def header_end(self) -> None:
        self.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def headers_finished(self) -> None:
        disposition = self.headers.get(b"content-disposition")
        if not disposition:
            raise ApiError(400, "MalformedMultipart", "a form part has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        if kind.lower() != b"form-data":
            raise ApiError(400, "MalformedMultipart", "form parts must be form-data")
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if self.file is not None:
                raise ApiError(400, "DuplicateField", "only one `file` part is accepted")
            self.current = "file"
            raw = params.get(b"filename")
            self.filename = _clean_filename(raw.decode("utf-8", "replace")) if raw is not None else None
            self.file = tempfile.SpooledTemporaryFile(max_size=self.spool_bytes)
        elif name in TEXT_FIELDS:
            if name in self.fields:
                raise ApiError(400, "DuplicateField", f"only one `{name}` field is accepted")
            self.current = name
            self._text = bytearray()
        else:
            raise ApiError(400, "UnexpectedField", "unexpected form field (accepted: file, priority, scheduleType)")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.current == "file":
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise ApiError(413, "PayloadTooLarge", f"the file is larger than {self.max_bytes} bytes")
            if len(self.head) < MAGIC_WINDOW:
                self.head += chunk[:MAGIC_WINDOW - len(self.head)]
            self.hash.update(chunk)
            self.file.write(chunk)
        else:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                raise ApiError(400, "FieldTooLong", f"form field `{self.current}` is too long")

    def part_end(self) -> None:
        if self.current in TEXT_FIELDS:
            try:
                self.fields[self.current] = self._text.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ApiError(400, "InvalidField", f"form field `{self.current}` is not UTF-8") from None
        self.current = None

    def end(self) -> None:
        self.done = True


async def read_upload(content_type: str, content_length: str | None, stream: AsyncIterator[bytes], *,
                      max_bytes: int, spool_bytes: int) -> Upload:
    kind, params = parse_options_header(content_type or "")
    if kind.lower() != b"multipart/form-data":
        raise ApiError(415, "UnsupportedMediaType", "send the PDF as multipart/form-data (field `file`)")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "MalformedMultipart", "the multipart boundary is missing or too long")
    body_limit = max_bytes + BODY_OVERHEAD
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "InvalidContentLength", "Content-Length is not a number") from None
        if declared > body_limit:
            raise ApiError(413, "PayloadTooLarge", f"the upload is larger than {max_bytes} bytes")
    reader = _Reader(max_bytes, spool_bytes)
    parser = MultipartParser(boundary, reader.callbacks(), max_header_count=8, max_header_size=1024)
    received = 0
    ok = False
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > body_limit:
                raise ApiError(413, "PayloadTooLarge", f"the upload is larger than {max_bytes} bytes")
            if chunk:
                try:
                    parser.write(chunk)
                except ApiError:
                    raise
                except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
                    raise ApiError(400, "MalformedMultipart", f"malformed multipart body: {_short(exc)}") from None
        try:
            parser.finalize()
        except Exception as exc:  # noqa: BLE001
            raise ApiError(400, "MalformedMultipart", f"malformed multipart body: {_short(exc)}") from None
        if not reader.done:
            raise ApiError(400, "MalformedMultipart", "the multipart body is incomplete")
        if reader.file is None:
            raise ApiError(400, "MissingFile", "the form has no `file` part")
        if reader.size == 0 or PDF_MAGIC not in reader.head:
            raise ApiError(415, "NotAPDF", "the file is not a PDF (no %PDF- header)")
        ok = True
        return Upload(reader.file, reader.size, reader.hash.hexdigest(), reader.filename, reader.fields)
    finally:
        if not ok and reader.file is not None:
            reader.file.close()


def _clean_filename(name: str) -> str:
    """For display only (an annotation): printable, no path, at most 200 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if ch.isprintable())[:200]


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
