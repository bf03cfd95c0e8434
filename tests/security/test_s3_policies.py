"""Least privilege in S3, on the real server (MinIO checks IAM policies as S3 does): the
API and the operator each sign as an IAM user of their own (`schedgen-api`,
`schedgen-operator`, policies in hack/s3iam.py, made by hack/devservices.py through
MinIO's admin API), never as the root user. Each does its own work through its own code
(api/backends/s3.Storage, operator/result_store.ResultStore and presign) and is refused,
403 AccessDenied, everything else. The root user is the tests' setup only; every refusal
below is checked to pass as root, so these tests would fail if a component had root's keys."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import s3iam
from schedgen.parsejob import ParseJob, result_key

ROOT = Path(__file__).resolve().parents[2]


def status(method: str, url: str, data: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def denied(call) -> bool:
    """True when S3 answers 403 (AccessDenied, or no body for a HEAD)."""
    try:
        call()
    except ClientError as exc:
        meta = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        code = exc.response.get("Error", {}).get("Code")
        assert meta == 403 and code in ("AccessDenied", "403"), exc.response
        return True
    return False


def fresh(prefix: str, suffix: str = ".pdf") -> str:
    return f"{prefix}{uuid.uuid4().hex}{suffix}"


# --- who is who -----------------------------------------------------------------------------


def test_each_component_has_a_user_of_its_own_with_only_its_policy(s3):
    root = s3.root_credentials["AWS_ACCESS_KEY_ID"]
    api, operator = s3.credentials_for("api"), s3.credentials_for("operator")
    assert api["AWS_ACCESS_KEY_ID"] == "schedgen-api" and operator["AWS_ACCESS_KEY_ID"] == "schedgen-operator"
    assert root not in (api["AWS_ACCESS_KEY_ID"], operator["AWS_ACCESS_KEY_ID"])
    assert len({s3.server.secret_key, api["AWS_SECRET_ACCESS_KEY"], operator["AWS_SECRET_ACCESS_KEY"]}) == 3
    admin = s3.server.admin()
    assert admin.user_policy("schedgen-api") == "schedgen-api"
    assert admin.user_policy("schedgen-operator") == "schedgen-operator"
    # neither can administer the server (users, policies): the admin API refuses them
    for component in ("api", "operator"):
        keys = s3.credentials_for(component)
        as_it = s3iam.MinioAdmin(s3.endpoint_url, keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"])
        with pytest.raises(s3iam.AdminError) as info:
            as_it.put_policy("sneaky", {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*"]}]})
        assert info.value.status == 403
    assert denied(lambda: s3.client_for("api").create_bucket(Bucket=f"sneaky-{uuid.uuid4().hex[:8]}"))
    assert denied(lambda: s3.client_for("operator").list_buckets())


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api_storage(s3, monkeypatch):
    """The API's own S3 code (api/backends/s3.Storage) with the API's keys in its environment."""
    from schedgen.api.backends.s3 import Storage
    from schedgen.api.config import ApiConfig

    for name, value in s3.credentials_for("api").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return Storage(ApiConfig(s3_endpoint_url=s3.endpoint_url, s3_bucket=s3.bucket))


def test_the_api_stores_checks_and_erases_through_its_own_code(s3, api_storage):
    import io

    key = fresh("uploads/sha256/")
    api_storage.put(key, io.BytesIO(b"%PDF-1.4 upload"), 15, "00" * 32)          # an upload
    assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"%PDF-1.4 upload"
    assert api_storage.modified(key) is not None                               # erasure: the PDF's age
    assert api_storage.modified(fresh("uploads/sha256/")) is None              # a missing one: 404, not 403
    api_storage.ping()                                                         # /readyz (HeadBucket)
    result = result_key("api-ns", str(uuid.uuid4()))
    s3.client.put_object(Bucket=s3.bucket, Key=result, Body=b"{}")             # a runner's result
    api_storage.delete(result)                                                 # erasure
    api_storage.delete(key)
    for gone in (key, result):
        with pytest.raises(ClientError):
            s3.client.head_object(Bucket=s3.bucket, Key=gone)


API_REFUSED = {
    "read a result object": lambda c, b, k: c.get_object(Bucket=b, Key=k["result"]),
    "write a result object": lambda c, b, k: c.put_object(Bucket=b, Key=k["result"], Body=b"{}"),
    "read a kubectl user's upload": lambda c, b, k: c.get_object(Bucket=b, Key=k["kubectl"]),
    "write a kubectl user's upload": lambda c, b, k: c.put_object(Bucket=b, Key=k["kubectl"], Body=b"x"),
    "delete a kubectl user's upload": lambda c, b, k: c.delete_object(Bucket=b, Key=k["kubectl"]),
    "write outside uploads/": lambda c, b, k: c.put_object(Bucket=b, Key=fresh("other/"), Body=b"x"),
    "list the bucket": lambda c, b, k: c.list_objects_v2(Bucket=b),
    "list the results": lambda c, b, k: c.list_objects_v2(Bucket=b, Prefix="results/"),
    "list the uploads": lambda c, b, k: c.list_objects_v2(Bucket=b, Prefix="uploads/"),
    "read another bucket": lambda c, b, k: c.get_object(Bucket=k["other_bucket"], Key=k["other"]),
    "delete another bucket's object": lambda c, b, k: c.delete_object(Bucket=k["other_bucket"], Key=k["other"]),
}

OPERATOR_REFUSED = {
    "write an upload": lambda c, b, k: c.put_object(Bucket=b, Key=fresh("uploads/sha256/"), Body=b"x"),
    "overwrite an upload": lambda c, b, k: c.put_object(Bucket=b, Key=k["upload"], Body=b"x"),
    "delete an upload": lambda c, b, k: c.delete_object(Bucket=b, Key=k["upload"]),
    "delete a kubectl user's upload": lambda c, b, k: c.delete_object(Bucket=b, Key=k["kubectl"]),
    "list the uploads": lambda c, b, k: c.list_objects_v2(Bucket=b, Prefix="uploads/"),
    "list the bucket": lambda c, b, k: c.list_objects_v2(Bucket=b),
    "read outside uploads/ and results/": lambda c, b, k: c.get_object(Bucket=b, Key=k["outside"]),
    "write outside results/": lambda c, b, k: c.put_object(Bucket=b, Key=fresh("other/"), Body=b"x"),
    "read another bucket": lambda c, b, k: c.get_object(Bucket=k["other_bucket"], Key=k["other"]),
    "list another bucket's results": lambda c, b, k: c.list_objects_v2(Bucket=k["other_bucket"], Prefix="results/"),
}


@pytest.fixture
def objects(s3) -> dict[str, str]:
    """One object of each kind, put by the root user (the tests' setup), and a second
    bucket no component's policy names; fresh for each test (root's attempts change them)."""
    keys = {"upload": fresh("uploads/sha256/"), "kubectl": fresh("uploads/namespaces/team-a/"),
            "result": result_key("team-a", str(uuid.uuid4())), "outside": fresh("other/"),
            "other_bucket": f"schedgen-other-{uuid.uuid4().hex[:8]}", "other": fresh("uploads/sha256/")}
    for name in ("upload", "kubectl", "result", "outside"):
        s3.client.put_object(Bucket=s3.bucket, Key=keys[name], Body=b"%PDF-1.4 " + name.encode())
    s3.client.create_bucket(Bucket=keys["other_bucket"])
    s3.client.put_object(Bucket=keys["other_bucket"], Key=keys["other"], Body=b"%PDF-1.4 other")
    return keys


@pytest.mark.parametrize("what", sorted(API_REFUSED))
def test_the_api_is_refused(s3, objects, what):
    attempt = API_REFUSED[what]
    assert denied(lambda: attempt(s3.client_for("api"), s3.bucket, objects)), what
    assert not denied(lambda: attempt(s3.client, s3.bucket, objects))  # root may: the test tells them apart


# --- the operator -------------------------------------------------------------------------------


def operator_store(s3):
    from schedgen.operator.config import OperatorConfig
    from schedgen.operator.result_store import ResultStore

    cfg = OperatorConfig(default_bucket=s3.bucket, s3_endpoint_url=s3.endpoint_url)
    return ResultStore(cfg, s3.client_for("operator"))


def parsejob(s3, key: str) -> ParseJob:
    uid = str(uuid.uuid4())
    return ParseJob.of({"metadata": {"namespace": f"ns-{uid[:6]}", "name": f"pj-{uid[:8]}", "uid": uid},
                        "spec": {"source": {"s3": {"bucket": s3.bucket, "key": key}}, "deadlineSeconds": 60}})


def test_the_operator_presigns_reads_lists_and_deletes_results_through_its_own_code(s3):
    import asyncio

    from schedgen.models import ParseResult, ScheduleKind
    from schedgen.runner.run import result_document

    document = json.dumps(result_document(ParseResult(ScheduleKind.EXAM, [], pages=1, seconds=0.1))).encode()
    store = operator_store(s3)
    for source in (fresh("uploads/sha256/"), fresh("uploads/namespaces/team-a/")):  # the API's, a kubectl user's
        s3.put(b"%PDF-1.4 the upload", key=source)
        pj = parsejob(s3, source)
        urls = store.urls(pj)
        assert status("GET", urls["source"]) == 200                      # the runner reads its PDF
        assert status("PUT", urls["result"], document) == 200             # and writes its result
        assert asyncio.run(store.present(pj.namespace)) == {pj.uid}      # batch members (ListBucket results/)
        assert s3.client.get_object(Bucket=s3.bucket, Key=pj.result_key)["Body"].read() == document
        assert asyncio.run(store.fetch(pj)).kind == ScheduleKind.EXAM    # reads it (GetObject results/)
        asyncio.run(store.discard(pj))                                   # deletes it
        assert asyncio.run(operator_store(s3).present(pj.namespace)) == set()
        assert asyncio.run(store.fetch(pj)) is None                      # missing: NoSuchKey, not AccessDenied


def test_a_url_the_operator_presigns_is_refused_outside_its_policy(s3, objects):
    """A presigned URL carries its signer's rights: the operator's PUT for results/ works,
    its PUT for an upload or a GET outside uploads/ is refused when the runner uses it."""
    signer = s3.client_for("operator")

    def url(method: str, key: str, bucket: str | None = None) -> str:
        params = {"Bucket": bucket or s3.bucket, "Key": key}
        if method == "put_object":
            params["ContentType"] = "application/json"
        return signer.generate_presigned_url(method, Params=params, ExpiresIn=60)

    assert status("PUT", url("put_object", "results/x/" + fresh("", ".json")), b"{}") == 200
    assert status("PUT", url("put_object", "uploads/x.pdf"), b"{}") == 403
    assert status("PUT", url("put_object", objects["upload"]), b"{}") == 403   # not even over an upload
    assert status("PUT", url("put_object", fresh("other/", ".json")), b"{}") == 403
    assert status("GET", url("get_object", objects["upload"])) == 200
    assert status("GET", url("get_object", objects["outside"])) == 403
    assert status("GET", url("get_object", objects["other"], objects["other_bucket"])) == 403
    assert status("DELETE", url("delete_object", objects["upload"])) == 403
    assert s3.client.get_object(Bucket=s3.bucket, Key=objects["upload"])["Body"].read() == b"%PDF-1.4 upload"


@pytest.mark.parametrize("what", sorted(OPERATOR_REFUSED))
def test_the_operator_is_refused(s3, objects, what):
    attempt = OPERATOR_REFUSED[what]
    assert denied(lambda: attempt(s3.client_for("operator"), s3.bucket, objects)), what
    assert not denied(lambda: attempt(s3.client, s3.bucket, objects))  # root may: the test tells them apart


# --- the documented policies are the tested ones ------------------------------------------------


def test_the_policies_in_docs_deploy_md_are_the_tested_ones():
    """docs/deploy.md shows each component's policy for the bucket `schedgen-uploads`; they
    must be exactly what the tests install (hack/s3iam.policies), so a copy works."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    shown = {}
    for component, body in re.findall(r"<!-- s3-policy:(\w+) -->\s*```json\n(.*?)```", text, re.S):
        shown[component] = json.loads(body)
    assert shown == s3iam.policies("schedgen-uploads"), "docs/deploy.md's S3 policies differ from hack/s3iam.py"


def test_admin_bodies_round_trip():
    """madmin's encrypted bodies (MinIO accepts them: the users above exist) over more
    than one 16 KiB fragment too."""
    for size in (0, 10, s3iam._SIO_BUF, s3iam._SIO_BUF + 1, 3 * s3iam._SIO_BUF + 7):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        blob = s3iam.encrypt("the-root-secret", data)
        assert s3iam.decrypt("the-root-secret", blob) == data
        assert len(blob) == 41 + len(data) + 16 * max(1, -(-len(data) // s3iam._SIO_BUF))
    with pytest.raises(Exception):
        s3iam.decrypt("another-secret", s3iam.encrypt("the-root-secret", b"{}"))
