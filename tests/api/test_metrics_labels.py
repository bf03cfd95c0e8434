"""The API's request metrics: the `method` label is clamped to a fixed set, so a client
sending made-up methods cannot create new series."""

from __future__ import annotations

import re

import pytest

from schedgen.api import metrics


def test_method_label_is_a_fixed_set():
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        assert metrics.method_label(method) == method
    for method in ("get", "FOOBAR", "PROPFIND", "X" * 1000, ""):
        assert metrics.method_label(method) == "other"


@pytest.mark.cluster  # the `client` fixture's API talks to the local control plane
def test_made_up_methods_share_one_series(client):
    from prometheus_client import generate_latest

    for i in range(20):
        client.request(f"MADEUP{i}", "/healthz")
    text = generate_latest().decode()  # what the metrics listener serves (this process's registry)
    methods = set(re.findall(r'^schedgen_api_requests_total\{[^}]*method="([^"]*)"', text, re.M))
    assert "other" in methods
    assert methods <= {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"}, methods
    assert "MADEUP" not in text
    others = re.findall(r'^schedgen_api_requests_total\{[^}]*method="other"[^}]*\} (\S+)', text, re.M)
    assert sum(float(v) for v in others) >= 20
