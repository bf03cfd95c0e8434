"""Fetch the uploaded PDF and store the result, both through presigned URLs.

The runner holds no credentials: the operator hands it a short-lived presigned GET
for its PDF and a presigned PUT for its result object (plain HTTP, no S3 client). The
download is streamed to disk and cut off past `max_bytes` (by Content-Length first,
then by a running count). Failures map onto typed errors: missing object or an
expired/refused URL -> SourceNotFound (bad input), unreachable store ->
StorageUnavailable (transient). Messages never contain a URL's query (its signature).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from schedgen.errors import SourceNotFound, StorageUnavailable, TooLarge

CHUNK_BYTES = 1024 * 1024
TIMEOUT_SECONDS = 15.0


def redact(url: str) -> str:
    """The URL without its query string (the signature) for messages and logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def download(url: str, dest: Path, max_bytes: int, timeout: float = TIMEOUT_SECONDS) -> int:
    """Write the object behind the presigned GET `url` to `dest`; returns its size."""
    where = redact(url)
    request = urllib.request.Request(url, method="GET")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, checked in config
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (403, 404):
            raise SourceNotFound(f"{where} is missing or its URL was refused (HTTP {exc.code})") from None
        raise StorageUnavailable(f"GET {where}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StorageUnavailable(f"S3 unreachable for {where}: {getattr(exc, 'reason', exc)}") from None
    written = 0
    try:
        with response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise TooLarge(f"{where} is {length} bytes; the limit is {max_bytes}")
            expected = int(length) if length and length.isdigit() else None
            with open(dest, "wb") as out:
                while chunk := response.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_bytes:
                        raise TooLarge(f"{where} grew past the limit of {max_bytes} bytes while downloading")
                    out.write(chunk)
    except OSError as exc:
        if exc.filename is not None:
            raise  # local disk trouble, not the store's
        raise StorageUnavailable(f"download of {where} was interrupted: {exc}") from None
    if expected is not None and written < expected:
        raise StorageUnavailable(f"download of {where} stopped at {written} of {expected} bytes")
    return written


def upload(url: str, data: bytes, timeout: float = TIMEOUT_SECONDS) -> None:
    """PUT `data` (JSON) to the presigned PUT `url`."""
    where = redact(url)
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310
            pass
    except urllib.error.HTTPError as exc:
        exc.close()
        raise StorageUnavailable(f"PUT {where}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StorageUnavailable(f"S3 unreachable for {where}: {getattr(exc, 'reason', exc)}") from None
