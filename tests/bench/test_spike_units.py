"""The pure parts of bench/spike.py (bench/spike_lib.py): distinct PDFs that parse the same,
percentiles, the burst summary, backlog over time, the apiserver write counter."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from spike_lib import (  # noqa: E402
    Track,
    backlog,
    cgroup_usage_seconds,
    completed_between,
    conntrack_stats,
    deep_window,
    delta,
    distinct_pdf,
    distinct_pdfs,
    minio_requests,
    percentile,
    sha256,
    summarize,
    value_at,
    write_requests,
)

from schedgen.runner.parsing import parse_pdf  # noqa: E402

UP = ROOT.parent / "shared" / "fixtures" / "up"
FIXTURES = ["UP_MOD_XLS.pdf", "UP_TST_PDF.pdf", "UP_EXAM_SS.pdf"]


def test_distinct_pdfs_have_distinct_sha256_and_parse_the_same(tmp_path):
    sources = [(UP / name).read_bytes() for name in FIXTURES]
    pdfs = distinct_pdfs(sources, 7, "run1")
    assert len({sha256(p) for p in pdfs}) == 7
    assert not {sha256(p) for p in pdfs} & {sha256(s) for s in sources}
    assert len({sha256(p) for p in distinct_pdfs(sources, 7, "run2")} | {sha256(p) for p in pdfs}) == 14
    for i, data in enumerate(pdfs):
        original, copy = tmp_path / f"o{i}.pdf", tmp_path / f"c{i}.pdf"
        original.write_bytes(sources[i % 3])
        copy.write_bytes(data)
        expected = parse_pdf(original).to_json()
        assert parse_pdf(copy).to_json() == expected
        assert expected["events"], FIXTURES[i % 3]


def test_distinct_pdf_refuses_a_truncated_pdf_and_a_bad_tag():
    data = (UP / FIXTURES[0]).read_bytes()
    cut = data[: data.rindex(b"%%EOF")]
    with pytest.raises(ValueError, match="EOF"):
        distinct_pdf(cut + b"x" * 2000, "t")
    with pytest.raises(ValueError, match="tag"):
        distinct_pdf(data, "new\nline")


def test_percentile_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 5.0
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile(values, 1.5)


def test_summary_latency_drain_and_failures():
    tracks = [Track("a", "t1", 100.0, 101.0, 104.0, "Succeeded"),
              Track("b", "t2", 100.5, 102.0, 106.5, "Succeeded"),
              Track("c", "t1", 101.0, None, 103.0, "Failed", "InvalidPDF/TooLarge"),
              Track("d", "t2", 101.0, 103.0, 110.0, "Succeeded"),
              Track("e", "t2", 101.0, 103.0, 109.0, "Failed", "InvalidPDF/TooLarge"),
              Track("f", "t2", 101.0, 103.0, 109.0, "Cancelled")]
    s = summarize(tracks)
    assert (s.count, s.succeeded, s.failed) == (6, 3, {"Failed (InvalidPDF/TooLarge)": 2, "Cancelled": 1})
    assert s.drain_seconds == pytest.approx(10.0)  # 100.0 -> 110.0
    assert s.drain95_seconds == pytest.approx(10.0)  # nearest rank of 4: the last
    many = [Track(str(i), "t", 0.0, None, float(i + 1), "Succeeded") for i in range(100)]
    assert summarize(many).drain95_seconds == pytest.approx(95.0)  # finals at 1..100 s
    assert s.pdfs_per_second == pytest.approx(0.3)  # succeeded only
    assert (s.latency_p50, s.latency_max) == (pytest.approx(6.0), pytest.approx(9.0))  # 4, 6, 9
    with pytest.raises(ValueError):
        summarize([])


def test_backlog_counts_waiting_running_completed():
    tracks = [Track("a", "t", 0.0, 1.0, 3.0, "Succeeded"),
              Track("b", "t", 0.0, 2.5, 4.0, "Succeeded"),
              Track("c", "t", 1.5, None, 2.0, "Failed")]  # never seen Running: waits until final
    b = backlog(tracks, step=1.0)
    assert b["t"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert b["waiting"] == [2, 1, 1, 0, 0]
    assert b["running"] == [0, 1, 1, 1, 0]
    assert b["completed"] == [0, 0, 1, 2, 3]
    assert all(w + r + c <= 3 for w, r, c in zip(b["waiting"], b["running"], b["completed"]))


def test_deep_window_runs_from_the_last_upload_until_the_backlog_drops_below_depth():
    # 6 uploads sent at 0..2.5 s, final at 3, 4, 5, 6, 7 s and one never
    tracks = [Track(str(i), "t", i * 0.5, None, 3.0 + i, "Succeeded") for i in range(5)]
    tracks.append(Track("x", "t", 2.5))
    assert deep_window(tracks, 3) == (2.5, 6.0)  # after 6 s: 7 s and "x" left, 2 < 3
    assert deep_window(tracks, 1) is None  # "x" never finished: the backlog never went below 1
    assert deep_window(tracks, 6) == (2.5, 3.0)  # the first completion took it below 6
    assert deep_window(tracks, 7) is None  # never that deep
    assert deep_window(tracks, 0) is None
    assert completed_between(tracks, 2.5, 6.0) == 4  # 3, 4, 5, 6 s
    assert completed_between(tracks, 3.0, 6.0) == 3  # the start is open


def test_value_at_interpolates_a_sampled_counter():
    samples = [(10.0, 100.0), (11.0, 102.0), (13.0, 110.0)]
    assert value_at(samples, 10.5) == pytest.approx(101.0)
    assert value_at(samples, 12.0) == pytest.approx(106.0)
    assert value_at(samples, 9.0) == 100.0 and value_at(samples, 20.0) == 110.0
    with pytest.raises(ValueError):
        value_at([], 1.0)


METRICS = """# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="POST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="status",verb="PATCH",version="v1"} 11
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 1000
apiserver_request_total{code="0",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="",verb="DELETE",version="v1"} 2
apiserver_request_total{code="409",component="apiserver",dry_run="",group="batch",resource="jobs",scope="resource",subresource="",verb="POST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="APPLY",version="v1"} 4
"""


def test_write_requests_by_resource_and_delta():
    w = write_requests(METRICS)
    assert w == {"pods": 7.0, "pods/status": 11.0, "jobs": 3.0, "deployments": 4.0}
    later = dict(w, pods=10.0)
    assert delta(later, w) == {"pods": 3.0}


def test_cgroup_usage_of_a_missing_cgroup_is_an_error():
    with pytest.raises(FileNotFoundError):
        cgroup_usage_seconds("/schedgen-spike-test/no-such-cgroup")


MINIO = """# HELP minio_api_requests_ttfb_seconds_distribution Distribution of time to first byte
minio_api_requests_ttfb_seconds_distribution{le="1.000",name="PutObject",server="127.0.0.1:1",type="s3"} 7
minio_api_requests_ttfb_seconds_distribution{le="10.000",name="PutObject",server="127.0.0.1:1",type="s3"} 9
minio_api_requests_ttfb_seconds_distribution{le="+Inf",name="PutObject",server="127.0.0.1:1",type="s3"} 10
minio_api_requests_ttfb_seconds_distribution{le="+Inf",name="GetObject",server="127.0.0.1:1",type="s3"} 50
minio_api_requests_canceled_total{server="127.0.0.1:1",type="s3"} 2
minio_api_requests_errors_total{server="127.0.0.1:1",type="s3"} 1
minio_api_requests_4xx_errors_total{server="127.0.0.1:1",type="s3"} 3
minio_api_requests_total{name="PutObject",server="127.0.0.1:1",type="s3"} 10
"""


def test_minio_put_latency_and_failures():
    assert minio_requests(MINIO) == {"put": 10.0, "put_over_1s": 3.0, "put_over_10s": 1.0, "canceled": 2.0,
                                     "errors": 4.0}
    assert minio_requests("") == {"put": 0.0, "put_over_1s": 0.0, "put_over_10s": 0.0, "canceled": 0.0,
                                  "errors": 0.0}


CONNTRACK = """entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000005  00000001 00000000 00000000 0000000a 00000000 00000000 00000000 00000000 00000002 00000003 00000000 00000000  00000000 00000000 00000000 00000000
00000005  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000010 00000000 00000001 00000000  00000000 00000000 00000000 00000000
"""


def test_conntrack_counters_summed_over_cpus_from_hex():
    assert conntrack_stats(CONNTRACK) == {"insert_failed": 18, "drop": 3, "early_drop": 1, "invalid": 12,
                                          "clashres": 1}
    assert conntrack_stats("") == {}
