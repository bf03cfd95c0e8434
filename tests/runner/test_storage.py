"""runner.storage against the real S3 server process, through presigned URLs only."""

from __future__ import annotations

import pytest

from runner_testlib import get_url, put_url
from schedgen.errors import SourceNotFound, StorageUnavailable, TooLarge
from schedgen.runner import storage


def test_download_streams_to_file(s3, tmp_path):
    data = b"%PDF-1.4\n" + bytes(range(256)) * 9000  # > 2 chunks
    key = s3.put(data)
    dest = tmp_path / "out.pdf"
    assert storage.download(get_url(s3, key), dest, max_bytes=len(data)) == len(data)
    assert dest.read_bytes() == data


def test_oversized_object_is_refused_by_its_length(s3, tmp_path):
    key = s3.put(b"x" * 2048)
    with pytest.raises(TooLarge, match="2048 bytes; the limit is 2047"):
        storage.download(get_url(s3, key), tmp_path / "out.pdf", max_bytes=2047)
    assert not (tmp_path / "out.pdf").exists()


def test_missing_object(s3, tmp_path):
    with pytest.raises(SourceNotFound, match="HTTP 404"):
        storage.download(get_url(s3, "uploads/no/such.pdf"), tmp_path / "out.pdf", max_bytes=100)


def test_url_for_another_key_is_refused(s3, tmp_path):
    url = get_url(s3, s3.put(b"%PDF-1.4 a")).replace("/uploads/", "/uploads/x")
    with pytest.raises(SourceNotFound, match="HTTP 403") as info:
        storage.download(url, tmp_path / "out.pdf", max_bytes=100)
    assert "Signature" not in str(info.value)


def test_upload_puts_the_object_for_its_key_only(s3):
    storage.upload(put_url(s3, "results/t/one.json"), b'{"a": 1}')
    assert s3.client.get_object(Bucket=s3.bucket, Key="results/t/one.json")["Body"].read() == b'{"a": 1}'
    with pytest.raises(StorageUnavailable, match="HTTP 403"):
        storage.upload(put_url(s3, "results/t/one.json").replace("one.json", "two.json"), b"{}")


def test_unreachable_endpoint(closed_port, tmp_path):
    with pytest.raises(StorageUnavailable) as info:
        storage.download(f"http://127.0.0.1:{closed_port}/b/k.pdf?X-Amz-Signature=secret", tmp_path / "out.pdf",
                         max_bytes=100)
    assert info.value.exit_code == 1 and "secret" not in str(info.value)
