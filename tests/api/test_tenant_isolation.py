"""The API's whole surface logged in as role `schedgen_api`, so row-level security
(migration 0007) applies to every statement, as deployed (no cluster; api_harness.py):
each tenant sees its own jobs, records, events, feeds and queue, an admin key every
tenant's queue; idempotency, erasure and the purge work through their tenant's scope or
their functions. (The cluster tests log in as the database owner, which RLS exempts.)"""

from __future__ import annotations

import uuid

import httpx
from api_harness import exam_record, multipart
from api_testlib import FIXTURES

PDF = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()


class Caller:
    def __init__(self, server, key: str):
        self.http = httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=20)

    def upload(self, data: bytes, **headers) -> httpx.Response:
        content_type, body = multipart(data)
        return self.http.post("/api/v1/uploads", content=body, headers={"Content-Type": content_type, **headers})


def test_each_tenant_sees_its_own_and_the_admin_every_queue(serve_api, make_key, pg_conn):
    server = serve_api(compat_routes=True, queue_cache_seconds=0)
    ns = server.ctx.cfg.namespace
    ta, tb = f"iso-a-{uuid.uuid4().hex[:6]}", f"iso-b-{uuid.uuid4().hex[:6]}"
    a, b = Caller(server, make_key(ta, max_priority="high")), Caller(server, make_key(tb))
    admin = Caller(server, make_key("iso-admin", admin=True))
    # uploads, with an idempotency key (claimed, completed and replayed in the tenant's scope)
    first = a.upload(PDF + b"\n% iso\n", **{"Idempotency-Key": "iso-1"})
    assert first.status_code == 202, first.text
    again = a.upload(PDF + b"\n% iso\n", **{"Idempotency-Key": "iso-1"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"] and again.json()["replayed"]
    assert b.upload(PDF + b"\n% iso\n", **{"Idempotency-Key": "iso-1"}).json()["id"] != first.json()["id"]
    # jobs known from their records only: each tenant's own
    rec_a, _ = exam_record(pg_conn, ns, ta)
    rec_b, _ = exam_record(pg_conn, ns, tb)
    listed = {item["id"] for item in a.http.get("/api/v1/jobs").json()["items"]}
    assert listed == {first.json()["id"], rec_a}
    assert a.http.get(f"/api/v1/jobs/{rec_a}").json()["source"] == "records"
    assert a.http.get(f"/api/v1/jobs/{rec_a}/events").json()["events"][0]["module"] == "COS 301"
    assert a.http.get(f"/api/v1/jobs/{rec_a}/calendar.ics").status_code == 200
    for path in (f"/api/v1/jobs/{rec_b}", f"/api/v1/jobs/{rec_b}/events", f"/api/v1/jobs/{rec_b}/calendar.ics"):
        assert a.http.get(path).status_code == 404, path
    assert b.http.get(f"/api/jobs/{rec_a}").status_code == 404  # the compatibility routes too
    assert a.http.get(f"/api/jobs/{rec_a}/result").json()["events"][0]["module"] == "COS 301"
    # the queue: a tenant its own counts, an admin key every tenant's
    own = a.http.get("/api/v1/queue").json()
    assert list(own["tenants"]) == [ta] and own["total"]["succeeded"] == 1 and own["total"]["waiting"] == 1
    assert a.http.get("/api/jobs/metrics").json()["completed"] == 1
    every = admin.http.get("/api/v1/queue").json()
    assert every["tenants"][ta]["succeeded"] == 1 and every["tenants"][tb]["succeeded"] == 1
    assert sum(p["finished"] for p in a.http.get("/api/v1/queue/history").json()["points"]) == 1
    assert sum(p["finished"] for p in admin.http.get("/api/v1/queue/history").json()["points"]) >= 2


def test_feeds_erasure_and_purge_under_the_api_role(serve_api, make_key, pg_conn):
    server = serve_api()
    ns = server.ctx.cfg.namespace
    tenant = f"iso-{uuid.uuid4().hex[:6]}"
    caller = Caller(server, make_key(tenant))
    name, uid = exam_record(pg_conn, ns, tenant, source_key=f"uploads/namespaces/{ns}/sha256/{'e' * 64}.pdf")
    feed = caller.http.post(f"/api/v1/jobs/{name}/feed")
    assert feed.status_code == 201, feed.text
    assert httpx.get(f"{server.url}/feeds/{feed.json()['token']}.ics").status_code == 200
    # erasure: the rows through schedgen_erase_job, the PDF's other users through schedgen_source_key_in_use
    erased = caller.http.delete(f"/api/v1/jobs/{name}")
    assert erased.status_code == 204, erased.text
    assert caller.http.get(f"/api/v1/jobs/{name}").status_code == 404
    assert httpx.get(f"{server.url}/feeds/{feed.json()['token']}.ics").status_code == 404
    assert pg_conn.execute("SELECT count(*) FROM parse_jobs WHERE uid = %s", (uid,)).fetchone() == (0,)
    # the purge of expired idempotency keys (every tenant's, through schedgen_purge_idempotency)
    pg_conn.execute("INSERT INTO idempotency_keys (tenant, key_hash, content_sha256, namespace, job_name, created_at)"
                    " VALUES ('someone', 'stale', 'c', %s, 'j', now() - interval '3 days')", (ns,))
    server.ctx.last_purge = 0.0
    assert caller.http.get("/api/v1/queue/history").status_code == 200
    assert pg_conn.execute("SELECT count(*) FROM idempotency_keys WHERE key_hash = 'stale'").fetchone() == (0,)
