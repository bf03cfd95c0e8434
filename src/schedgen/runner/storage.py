"""Fetch the uploaded PDF from S3 (or an S3-compatible store) with bounded size and time.

The object is HEADed first so an oversized upload is rejected without transferring
it; the download is streamed to disk and its byte count re-checked, since the object
can change between the two requests. Failures map onto typed errors: missing object
-> SourceNotFound (bad input), unreachable store -> StorageUnavailable (transient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from schedgen.errors import (
    ConfigurationError,
    SourceNotFound,
    StorageUnavailable,
    TooLarge,
)

CHUNK_BYTES = 1024 * 1024
# Short timeouts and few retries: a stuck store should fail the attempt quickly and
# let the Job's own retry (with backoff) take over.
CLIENT_CONFIG = Config(
    connect_timeout=3,
    read_timeout=15,
    retries={"max_attempts": 3, "mode": "standard"},
)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def make_client(endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    """An S3 client; credentials come from boto3's usual chain (env, files, IRSA...)."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=CLIENT_CONFIG
    )


def download(client: Any, bucket: str, key: str, dest: Path, max_bytes: int) -> int:
    """Write s3://bucket/key to `dest`; returns its size in bytes."""
    where = f"s3://{bucket}/{key}"
    head = _call(where, client.head_object, Bucket=bucket, Key=key)
    size = int(head.get("ContentLength", 0))
    if size > max_bytes:
        raise TooLarge(f"{where} is {size} bytes; the limit is {max_bytes}")
    extra = {"IfMatch": head["ETag"]} if head.get("ETag") else {}
    response = _call(where, client.get_object, Bucket=bucket, Key=key, **extra)
    body = response["Body"]
    written = 0
    try:
        with open(dest, "wb") as out:
            while chunk := body.read(CHUNK_BYTES):
                written += len(chunk)
                if written > max_bytes:
                    raise TooLarge(f"{where} grew past the limit of {max_bytes} bytes while downloading")
                out.write(chunk)
    except (BotoCoreError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:
            raise  # local disk trouble, not the store's
        raise StorageUnavailable(f"download of {where} was interrupted: {exc}") from None
    finally:
        body.close()
    if written < size:
        raise StorageUnavailable(f"download of {where} stopped at {written} of {size} bytes")
    return written


def _call(where: str, method: Any, **kwargs: Any) -> dict:
    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND or status == 404:
            raise SourceNotFound(f"{where} does not exist") from None
        if code in _DENIED or status == 403:
            raise ConfigurationError(f"access to {where} denied ({code}); check the runner's S3 credentials") from None
        if code in ("412", "PreconditionFailed"):
            raise StorageUnavailable(f"{where} changed during download") from None
        raise StorageUnavailable(f"S3 error on {where}: {code or status} {error.get('Message', '')}".strip()) from None
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ConfigurationError(f"no usable S3 credentials: {exc}") from None
    except BotoCoreError as exc:  # connection refused, timeouts, DNS, TLS...
        raise StorageUnavailable(f"S3 unreachable for {where}: {exc}") from None
