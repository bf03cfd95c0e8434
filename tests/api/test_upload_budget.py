"""The bytes of uploads in flight are capped per process, so concurrent uploads cannot fill
the pod's /tmp (an emptyDir with a sizeLimit: the kubelet evicts the pod past it). Real
concurrent multipart uploads over raw sockets (no cluster; api_harness.py)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
from api_harness import SlowUpload, multipart
from api_testlib import FIXTURES

PDF = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()


def spool_files(folder: Path) -> list[str]:
    """Files of this process open in `folder` (spooled uploads are unlinked at once, so
    only the process's open descriptors show them)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def in_flight(server) -> int:
    """Bytes the server's upload budget holds now."""
    return getattr(getattr(server.ctx, "uploads", None), "used", 0)


def wait_until(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_concurrent_uploads_beyond_the_byte_budget_get_503(serve_api, make_key, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where the API's spooled uploads go
    size = len(multipart(PDF)[1])
    server = serve_api({"SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT": str(3 * size + size // 2)},
                       max_upload_bytes=2 * size, spool_memory_bytes=1024)
    key = make_key("budget")
    held = [SlowUpload(server.port, key, PDF + f"\n% {i}\n".encode()) for i in range(3)]
    for upload in held:
        upload.send_first_half()
    wait_until(lambda: in_flight(server) >= 3 * size and len(spool_files(spool)) == 3)
    assert len(spool_files(spool)) == 3  # each on disk by now (1 KiB in memory)
    content_type, body = multipart(PDF + b"\n% refused\n")
    refused = httpx.post(server.url + "/api/v1/uploads", content=body, timeout=10,
                         headers={"X-API-Key": key, "Content-Type": content_type})
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "UploadCapacityExceeded" and refused.headers["retry-after"] == "5"
    assert len(spool_files(spool)) == 3  # nothing of the refused upload was written
    outcomes = [upload.finish() for upload in held]
    assert [status for status, _ in outcomes] == [202, 202, 202], outcomes
    assert wait_until(lambda: in_flight(server) == 0 and not spool_files(spool))  # all released, nothing left
    again = httpx.post(server.url + "/api/v1/uploads", content=body, timeout=10,
                       headers={"X-API-Key": key, "Content-Type": content_type})
    assert again.status_code == 202, again.text
    assert len(server.jobs.objects) == 4


def test_an_upload_of_unknown_length_reserves_the_maximum(serve_api, make_key):
    """Without Content-Length the size is known only at the end: the budget counts the
    largest upload allowed, so a budget of one maximum admits one such upload at a time."""
    server = serve_api({"SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT": str(1024 * 1024)},
                       max_upload_bytes=1024 * 1024)
    key = make_key("budget")
    content_type, body = multipart(PDF)

    def chunks():
        yield body[:100]
        refused = httpx.post(server.url + "/api/v1/uploads", timeout=10,
                             headers={"X-API-Key": key, "Content-Type": content_type},
                             content=iter([body]))
        assert refused.status_code == 503 and refused.json()["code"] == "UploadCapacityExceeded"
        yield body[100:]

    r = httpx.post(server.url + "/api/v1/uploads", content=chunks(), timeout=20,
                   headers={"X-API-Key": key, "Content-Type": content_type})
    assert r.status_code == 202, r.text
