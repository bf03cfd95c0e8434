"""A tenant's jobs, newest first, one page at a time (keyset pagination).

The list merges the live ParseJobs of the API's namespace with the Postgres records
(they outlive retention), one entry per job id: the live object answers while it
exists. The order is (createdAt, id) descending, createdAt to the microsecond from the
upload's `ANN_CREATED` annotation where there is one; the cursor is that key of the
last item, opaque (base64url JSON), so jobs created after the first page never shift
later pages."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json

from schedgen.parsejob import ANN_CREATED, tenant_of

from ..backends import postgres
from ..context import ApiContext
from ..errors import ApiError
from .lookup import status_from_object, status_from_record

MAX_LIMIT = 200

Key = tuple[dt.datetime, str]  # (createdAt, id): the list's order, and the cursor


def encode_cursor(key: Key) -> str:
    raw = json.dumps([key[0].isoformat(), key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, name = json.loads(raw)
        when = dt.datetime.fromisoformat(ts)
        if when.tzinfo is None or not isinstance(name, str) or len(name) > 63:
            raise ValueError("bad cursor")
        return when, name
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "InvalidParameters", "cursor: not a cursor this API returned") from None


def _created(value: str | None) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _live(items: list[dict], tenant: str, phase: str | None, before: Key | None,
          queue: dict | None = None) -> tuple[list, list[str]]:
    """The tenant's live ParseJobs on this page as (key, status), and the names of all of
    them (their records must not be listed a second time)."""
    page, names = [], []
    for obj in items:
        if tenant_of(obj) != tenant:
            continue
        meta = obj["metadata"]
        names.append(meta["name"])
        status = status_from_object(obj, queue)
        key = (_created((meta.get("annotations") or {}).get(ANN_CREATED) or meta.get("creationTimestamp")),
               status["id"])
        if (phase is None or status["phase"] == phase) and (before is None or key < before):
            page.append((key, status))
    return page, names


async def page(ctx: ApiContext, tenant: str, phase: str | None, limit: int, cursor: str | None) -> dict:
    """One page of the list: `{"items", "nextCursor"}` (None on the last page)."""
    before = decode_cursor(cursor) if cursor else None
    live, live_names = _live(await ctx.blocking(ctx.jobs.list_all), tenant, phase, before, await ctx.queue_data())
    records = await postgres.list_records(ctx.pool, ctx.cfg.namespace, tenant, phase, before, live_names,
                                          limit + 1)
    merged = live + [((r["created_at"], r["name"]), status_from_record(r["name"], r)) for r in records]
    merged.sort(key=lambda pair: pair[0], reverse=True)
    items = merged[:limit]
    more = len(merged) > limit
    return {"items": [status for _, status in items], "nextCursor": encode_cursor(items[-1][0]) if more else None}
