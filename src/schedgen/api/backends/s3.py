"""S3: the uploaded PDFs and the runners' result objects (blocking, called from a thread
pool; see the package docstring)."""

from __future__ import annotations

from typing import BinaryIO

from ..config import ApiConfig
from . import BackendUnavailable, one_line


class Storage:
    def __init__(self, cfg: ApiConfig):
        import boto3
        from botocore.config import Config

        self.bucket = cfg.s3_bucket
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=cfg.s3_endpoint_url or None, region_name=cfg.aws_region,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"},
                          max_pool_connections=32, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def put(self, key: str, body: BinaryIO, size: int, sha256_hex: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body.seek(0)
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=size,
                                   ContentType="application/pdf", Metadata={"sha256": sha256_hex})
        except (BotoCoreError, ClientError, OSError) as exc:
            raise BackendUnavailable("s3", f"cannot store the upload in S3: {one_line(exc)}") from None

    def modified(self, key: str, bucket: str | None = None) -> float | None:
        """The object's LastModified (epoch seconds); None when it does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=bucket or self.bucket, Key=key)["LastModified"].timestamp()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BackendUnavailable("s3", f"cannot read {key} in S3: {one_line(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise BackendUnavailable("s3", f"cannot read {key} in S3: {one_line(exc)}") from None

    def delete(self, key: str, bucket: str | None = None) -> None:
        """Delete one object (absent is fine: S3 deletes are idempotent)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=bucket or self.bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise BackendUnavailable("s3", f"cannot delete {key} in S3: {one_line(exc)}") from None

    def ping(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise BackendUnavailable("s3", f"S3 bucket {self.bucket!r} unreachable: {one_line(exc)}") from None
