"""Rate limits over real HTTP (no cluster; api_harness.py): quotas per key and per tenant
after authentication, a separate budget per client address for failed authentication,
IPv6 clients grouped by /64. Every request here comes from 127.0.0.1 (behind an ingress
without trusted proxies, every client does)."""

from __future__ import annotations

import httpx
import pytest

from schedgen.api import gate

HISTORY = "/api/v1/queue/history"  # a keyed read that needs Postgres only


def get(server, key: str | None = None, **headers) -> httpx.Response:
    if key:
        headers["X-API-Key"] = key
    return httpx.get(server.url + HISTORY, headers=headers, timeout=10)


def post_upload(server, key: str) -> httpx.Response:
    """An upload class request (415: not multipart), counted like any upload."""
    return httpx.post(server.url + "/api/v1/uploads", content=b"x", headers={"X-API-Key": key}, timeout=10)


def assert_limited(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "RateLimited"
    assert 1 <= int(r.headers["retry-after"]) <= 60 and r.headers["ratelimit-limit"] == str(limit)


@pytest.mark.usefixtures("one_rate_window")
def test_failed_authentication_does_not_spend_a_valid_keys_budget(serve_api, make_key):
    server = serve_api({"SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE": "3"}, reads_per_minute=5)
    bad = [get(server), get(server, "sgk_made-up"), get(server, "sgk_" + "A" * 43)]
    assert [r.status_code for r in bad] == [401, 401, 401]
    for r in (get(server, "sgk_" + "B" * 43), get(server)):  # the address's failure budget is spent
        assert_limited(r, 3)
    key = make_key("rl-valid")
    codes = [get(server, key).status_code for _ in range(5)]
    assert codes == [200] * 5  # the key's own budget, untouched by the failures
    assert_limited(get(server, key), 5)
    assert get(server).status_code == 429  # and the key's use gave the failures nothing back


@pytest.mark.usefixtures("one_rate_window")
def test_each_key_has_its_own_quota_from_one_address(serve_api, make_key):
    server = serve_api(uploads_per_minute=2, reads_per_minute=3)
    a, b = make_key("rl-a"), make_key("rl-b")
    assert [post_upload(server, a).status_code for _ in range(2)] == [415, 415]
    assert_limited(post_upload(server, a), 2)
    assert [post_upload(server, b).status_code for _ in range(2)] == [415, 415]  # not a's budget
    reads = [get(server, a) for _ in range(4)]  # reads have a budget of their own
    assert [r.status_code for r in reads] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in reads] == ["2", "1", "0", "0"]


@pytest.mark.usefixtures("one_rate_window")
def test_a_tenant_quota_spans_its_keys(serve_api, make_key):
    server = serve_api({"SCHEDGEN_API_TENANT_READS_PER_MINUTE": "3"})
    one, two, other = make_key("rl-tenant"), make_key("rl-tenant"), make_key("rl-other")
    assert [get(server, k).status_code for k in (one, two, one)] == [200, 200, 200]
    assert_limited(get(server, two), 3)
    assert get(server, other).status_code == 200


@pytest.mark.usefixtures("one_rate_window")
def test_ipv6_clients_count_per_64_and_ipv4_per_address(serve_api):
    server = serve_api({"SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE": "2"}, trusted_proxies="127.0.0.1/32")

    def from_(address: str) -> int:
        return get(server, **{"X-Forwarded-For": address}).status_code

    assert [from_("2001:db8:1:2::1"), from_("2001:db8:1:2::2")] == [401, 401]
    assert from_("2001:db8:1:2:ffff:ffff:ffff:9") == 429  # another address of the same /64
    assert from_("2001:db8:1:3::1") == 401  # the next /64
    assert [from_("192.0.2.1"), from_("192.0.2.1"), from_("192.0.2.2")] == [401, 401, 401]
    assert from_("192.0.2.1") == 429


@pytest.mark.parametrize("address, bucket", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"),
    ("2001:DB8:AA:BB::9", "2001:db8:aa:bb::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client on a dual-stack socket
    ("fe80::1%eth0", "fe80::/64"),
    ("testclient", "testclient"),  # not an address: as is
])
def test_client_bucket(address, bucket):
    assert gate.client_bucket(address) == bucket
