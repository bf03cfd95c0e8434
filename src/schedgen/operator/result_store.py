"""The runner's result objects in S3: read one (bounded, untrusted: result_document.py),
list a namespace's (batch members are decided as their objects appear), delete one.
S3 calls run in worker threads, each under the S3 backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from schedgen.models import ParseResult
from schedgen.parsejob import ParseJob, result_prefix

from . import presign, result_document
from .backoff import Backoff, Unavailable, report_unavailable
from .config import OperatorConfig
from .result_document import RunnerFailure

log = logging.getLogger(__name__)

LISTING_SECONDS = 1.0  # a namespace with batches running is listed at most this often


class ResultStore:
    def __init__(self, cfg: OperatorConfig, client: Any = None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self._client = client
        self.clock = clock
        self.backoff = Backoff("S3", clock)
        self._listings: dict[str, tuple[float, set[str]]] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = presign.make_client(self.cfg)
        return self._client

    @property
    def bucket(self) -> str:
        return presign.results_bucket(self.cfg)

    def urls(self, pj: ParseJob) -> dict[str, str]:
        return presign.urls(self.client, pj, self.cfg)

    async def fetch(self, pj: ParseJob) -> ParseResult | RunnerFailure | None:
        """The checked result object (None: there is none). Raises
        result_document.InvalidResult or Unavailable."""
        data = await asyncio.to_thread(self._get, pj.result_key)
        if data is None:
            return None
        return result_document.parse(data, self.cfg.result_max_bytes, self.cfg.result_max_events)

    def _get(self, key: str) -> bytes | None:
        with self.backoff.attempt():
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise Unavailable(f"S3 error reading {key}: {code}") from None
            except BotoCoreError as exc:
                raise Unavailable(f"S3 unreachable reading {key}: {exc}") from None
            body = obj["Body"]
            try:
                if int(obj.get("ContentLength") or 0) > self.cfg.result_max_bytes:
                    raise result_document.InvalidResult(
                        f"the result object is {obj['ContentLength']} bytes; the limit is {self.cfg.result_max_bytes}")
                return body.read(self.cfg.result_max_bytes + 1)
            except BotoCoreError as exc:
                raise Unavailable(f"S3 read of {key} interrupted: {exc}") from None
            finally:
                body.close()

    async def present(self, namespace: str) -> set[str]:
        """The uids with a result object in `namespace`, listed at most once a
        `LISTING_SECONDS` (the last listing while S3 is away)."""
        at, found = self._listings.get(namespace, (float("-inf"), set()))
        if self.clock() - at >= LISTING_SECONDS:
            try:
                found = await asyncio.to_thread(self._list, namespace)
                self._listings[namespace] = (self.clock(), found)
            except Unavailable as exc:
                report_unavailable(exc)
        return found

    def _list(self, namespace: str) -> set[str]:
        prefix = result_prefix(namespace)
        found: set[str] = set()
        with self.backoff.attempt():
            try:
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                    found.update(o["Key"][len(prefix):].removesuffix(".json") for o in page.get("Contents") or [])
            except (ClientError, BotoCoreError) as exc:
                raise Unavailable(f"S3 listing of {prefix} failed: {exc}") from None
        return found

    async def discard(self, pj: ParseJob) -> None:
        """Delete a ParseJob's result object: before a retry (a stale failure document
        would decide the next run before it starts) and when the ParseJob is deleted
        (personal data). Best effort: one left behind is logged (a bucket lifecycle rule
        on results/ is the backstop, docs/deploy.md)."""
        self._listings.get(pj.namespace, (0.0, set()))[1].discard(pj.uid)
        try:
            await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=pj.result_key)
        except (ClientError, BotoCoreError) as exc:
            log.warning("could not delete the result object %s: %s", pj.result_key, exc,
                        extra={"fields": pj.log_context()})
