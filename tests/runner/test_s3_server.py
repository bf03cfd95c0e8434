"""The S3 server the tests and the demo use checks what a real one checks: signatures,
credentials, and presigned URLs that expire and name exactly one object."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError


def status_of(url: str, method: str = "GET", data: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_unknown_credentials_are_refused(s3):
    stranger = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(ClientError) as info:
        stranger.list_objects_v2(Bucket=s3.bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_secret_is_refused(s3):
    forger = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=s3.server.access_key, aws_secret_access_key="not-the-secret")
    with pytest.raises(ClientError) as info:
        forger.get_object(Bucket=s3.bucket, Key=s3.put(b"%PDF-1.4 secret"))
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_anonymous_requests_are_refused(s3):
    key = s3.put(b"%PDF-1.4 private")
    assert status_of(f"{s3.endpoint_url}/{s3.bucket}/{key}") == 403


def test_presigned_get_reads_its_object_only(s3):
    a, b = s3.put(b"%PDF-1.4 tenant a"), s3.put(b"%PDF-1.4 tenant b")
    url = s3.client.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": a}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"%PDF-1.4 tenant a"
    assert status_of(url.replace(a, b)) == 403  # the signature covers the key
    assert status_of(url, method="DELETE") == 403  # and the method


def test_presigned_put_writes_its_object_only(s3):
    key = f"results/{time.time_ns()}.json"
    url = s3.client.generate_presigned_url("put_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=60)
    assert status_of(url, method="PUT", data=b'{"ok": true}') == 200
    assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b'{"ok": true}'
    assert status_of(url.replace(key, key + "-other"), method="PUT", data=b"{}") == 403


def test_expired_presigned_url_is_refused(s3):
    key = s3.put(b"%PDF-1.4 short-lived")
    url = s3.client.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=1)
    time.sleep(2.5)
    assert status_of(url) == 403
