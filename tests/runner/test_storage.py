"""runner.storage against the real S3 server process (MinIO)."""

from __future__ import annotations

import pytest

from schedgen.errors import SourceNotFound, StorageUnavailable, TooLarge
from schedgen.runner import storage


@pytest.fixture
def client(s3, monkeypatch):
    for name, value in s3.credentials.items():
        monkeypatch.setenv(name, value)
    return storage.make_client(s3.endpoint_url)


def test_download_streams_to_file(s3, client, tmp_path):
    data = b"%PDF-1.4\n" + bytes(range(256)) * 9000  # > 2 chunks
    key = s3.put(data)
    dest = tmp_path / "out.pdf"
    gets = s3.server.requests("GetObject")
    assert storage.download(client, s3.bucket, key, dest, max_bytes=len(data)) == len(data)
    assert dest.read_bytes() == data
    assert s3.server.requests("GetObject") > gets  # what the next test rules out


def test_oversized_object_is_refused_before_download(s3, client, tmp_path):
    key = s3.put(b"x" * 2048)
    gets = s3.server.requests("GetObject")
    with pytest.raises(TooLarge, match="2048 bytes; the limit is 2047"):
        storage.download(client, s3.bucket, key, tmp_path / "out.pdf", max_bytes=2047)
    assert not (tmp_path / "out.pdf").exists()
    assert s3.server.requests("GetObject") == gets


def test_missing_object(s3, client, tmp_path):
    with pytest.raises(SourceNotFound, match="does not exist"):
        storage.download(client, s3.bucket, "no/such.pdf", tmp_path / "out.pdf", max_bytes=100)


def test_unreachable_endpoint(closed_port, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = storage.make_client(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(StorageUnavailable) as info:
        storage.download(client, "b", "k.pdf", tmp_path / "out.pdf", max_bytes=100)
    assert info.value.exit_code == 1
