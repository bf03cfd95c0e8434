"""Calendar feeds end with the API key that made them and may expire (no cluster;
api_harness.py; the jobs are known from their Postgres records)."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
from api_harness import exam_record

def new_feed(server, key: str, job: str, query: str = "") -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/jobs/{job}/feed{query}", headers={"X-API-Key": key}, timeout=10)


def fetch(server, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/feeds/{token}.ics", timeout=10)  # no key: calendar apps send none


def test_revoking_the_key_ends_its_feeds(serve_api, make_key, pg_conn):
    from schedgen.api.backends import postgres as api_db

    server = serve_api()
    tenant = f"feeds-{uuid.uuid4().hex[:6]}"
    key, other_key = make_key(tenant), make_key(tenant)
    name, _ = exam_record(pg_conn, server.ctx.cfg.namespace, tenant)
    feed = new_feed(server, key, name)
    assert feed.status_code == 201, feed.text
    assert fetch(server, feed.json()["token"]).status_code == 200
    other_name, _ = exam_record(pg_conn, server.ctx.cfg.namespace, tenant)
    other = new_feed(server, other_key, other_name).json()["token"]
    assert api_db.revoke_key_sync(pg_conn, key[:12]) == 1
    gone = fetch(server, feed.json()["token"])
    assert gone.status_code == 404 and gone.json()["code"] == "FeedNotFound"  # at once, not after a cache
    assert fetch(server, other).status_code == 200  # another key's feed of the same tenant serves on


def test_feeds_expire(serve_api, make_key, pg_conn):
    server = serve_api({"SCHEDGEN_API_FEED_MAX_DAYS": "30"})
    tenant = f"feeds-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant)
    name, uid = exam_record(pg_conn, server.ctx.cfg.namespace, tenant)
    now = dt.datetime.now(dt.timezone.utc)
    made = new_feed(server, key, name, "?expiresInDays=2")
    assert made.status_code == 201, made.text
    expires = dt.datetime.fromisoformat(made.json()["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(days=2) - dt.timedelta(minutes=1) < expires - now < dt.timedelta(days=2, minutes=1)
    token = made.json()["token"]
    assert fetch(server, token).status_code == 200
    pg_conn.execute("UPDATE calendar_feeds SET expires_at = now() - interval '1 second' WHERE job_uid = %s", (uid,))
    assert fetch(server, token).status_code == 404
    # no expiresInDays: the server's maximum; more than it: refused
    default = new_feed(server, key, name).json()
    expires = dt.datetime.fromisoformat(default["expiresAt"].replace("Z", "+00:00"))
    assert dt.timedelta(days=30) - dt.timedelta(minutes=1) < expires - now < dt.timedelta(days=30, minutes=1)
    for bad in ("?expiresInDays=31", "?expiresInDays=0", "?expiresInDays=soon"):
        refused = new_feed(server, key, name, bad)
        assert refused.status_code == 422 and refused.json()["code"] == "InvalidParameters", refused.text
    assert fetch(server, default["token"]).status_code == 200  # the refusals changed nothing


def test_a_feed_from_before_keys_were_bound_serves_until_revoked(serve_api, make_key, pg_conn):
    """Rows made before migration 0007 have no key and no expiry: they keep working."""
    import hashlib
    import secrets

    server = serve_api()
    tenant = f"feeds-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant)
    name, uid = exam_record(pg_conn, server.ctx.cfg.namespace, tenant)
    token = secrets.token_urlsafe(32)
    pg_conn.execute("INSERT INTO calendar_feeds (token_hash, tenant, namespace, job_name, job_uid)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (hashlib.sha256(token.encode()).hexdigest(), tenant, server.ctx.cfg.namespace, name, uid))
    assert fetch(server, token).status_code == 200
    assert httpx.delete(f"{server.url}/api/v1/jobs/{name}/feed", headers={"X-API-Key": key}).status_code == 204
    assert fetch(server, token).status_code == 404
