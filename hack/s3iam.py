"""Least-privilege S3 identities: each component's IAM policy, and a small client of
MinIO's admin API that creates the users and policies (hack/devservices.py uses it).

    policies(bucket)          # {"api": {...}, "operator": {...}}: the IAM policy documents
                              # docs/deploy.md shows (tests/security/test_s3_policies.py
                              # checks that the doc's copies are these)
    MinioAdmin(endpoint, root_access_key, root_secret_key)
        .put_policy(name, document) / .put_user(access_key, secret_key) / .attach(policy, user)

Why a client of our own: the admin API is three HTTP calls signed with SigV4 (botocore,
already installed); one body (add-user) is encrypted with the caller's secret key in
madmin's format (PBKDF2-SHA256 + AES-256-GCM in sio's stream framing, `cryptography`,
also installed). That needs no `mc` binary (another Go build of minutes, another cache)
and no new package: it works offline wherever the tests run.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

# --- the policies -------------------------------------------------------------------------

UPLOADS = "uploads/"           # PDFs: the API's own under uploads/sha256/, kubectl users' under
API_UPLOADS = "uploads/sha256/"  # uploads/namespaces/<ns>/ (api/services/uploads.source_key)
RESULTS = "results/"           # runner result objects, results/<namespace>/<uid>.json


def policies(bucket: str, results_bucket: str | None = None) -> dict[str, dict]:
    """The IAM policy of each component, for the uploads bucket and the results bucket
    (`s3.resultsBucket`; default the same bucket). What each needs, from the code:

    - api: PutObject of its uploads (uploads.py); GetObject of them, for HeadObject (the
      erasure checks an upload's age before it deletes it: erasure.pdf_unused); DeleteObject
      of its uploads and of result objects (erasure); HeadBucket of the bucket (/readyz).
    - operator: GetObject of uploads (it presigns the runner's GET; a presigned URL
      carries the signer's rights, no more); PutObject of result objects (it presigns the
      runner's PUT), GetObject (reads them), DeleteObject (a retry, a deleted ParseJob),
      ListBucket with the prefix results/ (batch members, result_store.present).
    """
    rb = results_bucket or bucket

    def arn(b: str, key: str = "") -> str:
        return f"arn:aws:s3:::{b}" + (f"/{key}" if key else "")

    return {
        "api": {"Version": "2012-10-17", "Statement": [
            {"Sid": "StoreAndEraseUploads", "Effect": "Allow",
             "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
             "Resource": [arn(bucket, API_UPLOADS + "*")]},
            {"Sid": "EraseResults", "Effect": "Allow", "Action": ["s3:DeleteObject"],
             "Resource": [arn(rb, RESULTS + "*")]},
            {"Sid": "Readiness", "Effect": "Allow", "Action": ["s3:HeadBucket"],
             "Resource": [arn(bucket)]},
        ]},
        "operator": {"Version": "2012-10-17", "Statement": [
            {"Sid": "PresignSourceReads", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": [arn(bucket, UPLOADS + "*")]},
            {"Sid": "ResultObjects", "Effect": "Allow",
             "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
             "Resource": [arn(rb, RESULTS + "*")]},
            {"Sid": "ListResults", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [arn(rb)], "Condition": {"StringLike": {"s3:prefix": [RESULTS + "*"]}}},
        ]},
    }


# --- madmin's encrypted request bodies ------------------------------------------------------

_PBKDF2_AES_GCM = 0x02   # madmin-go encrypt.go: the algorithm id DecryptData accepts
_PBKDF2_ROUNDS = 8192
_SIO_BUF = 1 << 14       # sio-go BufSize: plaintext per sealed fragment


def encrypt(password: str, data: bytes) -> bytes:
    """madmin.EncryptData as MinIO's DecryptData reads it:
    salt(32) | algorithm id(1) | nonce(8) | sio stream (AES-256-GCM fragments of 16 KiB;
    fragment i sealed with nonce || le32(i+1) and associated data flag || tag(nonce || le32(0)),
    flag 0x80 on the last)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    salt, nonce = os.urandom(32), os.urandom(8)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, _PBKDF2_ROUNDS).derive(password.encode())
    aead = AESGCM(key)
    tag = aead.encrypt(nonce + struct.pack("<I", 0), b"", None)  # binds the stream's associated data (none)
    chunks = [data[i:i + _SIO_BUF] for i in range(0, len(data), _SIO_BUF)] or [b""]
    out = [salt, bytes([_PBKDF2_AES_GCM]), nonce]
    for seq, chunk in enumerate(chunks, start=1):
        flag = b"\x80" if seq == len(chunks) else b"\x00"
        out.append(aead.encrypt(nonce + struct.pack("<I", seq), chunk, flag + tag))
    return b"".join(out)


def decrypt(password: str, blob: bytes) -> bytes:
    """The inverse of `encrypt` (for its tests; MinIO answers some calls encrypted too)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    salt, algorithm, nonce, body = blob[:32], blob[32], blob[33:41], blob[41:]
    if algorithm != _PBKDF2_AES_GCM:
        raise ValueError(f"unsupported algorithm id {algorithm}")
    aead = AESGCM(PBKDF2HMAC(hashes.SHA256(), 32, salt, _PBKDF2_ROUNDS).derive(password.encode()))
    tag = aead.encrypt(nonce + struct.pack("<I", 0), b"", None)
    size = _SIO_BUF + 16
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(aead.decrypt(nonce + struct.pack("<I", seq), chunk,
                                 (b"\x80" if seq == len(chunks) else b"\x00") + tag)
                    for seq, chunk in enumerate(chunks, start=1))


# --- the admin API ----------------------------------------------------------------------------


class AdminError(RuntimeError):
    def __init__(self, status: int, body: str):
        super().__init__(f"MinIO admin API answered {status}: {body[:300]}")
        self.status = status


class MinioAdmin:
    """The few admin calls the tests and the demo need, as MinIO's root user."""

    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str = "us-east-1"):
        self.endpoint_url = endpoint_url.rstrip("/")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region

    def _call(self, method: str, path: str, query: dict[str, str], body: bytes = b"",
              timeout: float = 30) -> bytes:
        """One signed admin request; retried while the server answers 503 (its IAM
        subsystem still starting, just after `minio server` came up)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._once(method, path, query, body)
            except AdminError as exc:
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _once(self, method: str, path: str, query: dict[str, str], body: bytes) -> bytes:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"{self.endpoint_url}/minio/admin/v3/{path}?{urllib.parse.urlencode(query)}"
        request = AWSRequest(method=method, url=url, data=body,
                             headers={"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest()})
        S3SigV4Auth(Credentials(self.access_key, self.secret_key), "s3", self.region).add_auth(request)
        prepared = request.prepare()
        http = urllib.request.Request(prepared.url, data=body or None, method=method,
                                      headers=dict(prepared.headers.items()))
        try:
            with urllib.request.urlopen(http, timeout=30) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            raise AdminError(exc.code, exc.read().decode(errors="replace")) from None

    def put_policy(self, name: str, document: dict) -> None:
        """Create or replace the canned policy `name`."""
        self._call("PUT", "add-canned-policy", {"name": name}, json.dumps(document).encode())

    def put_user(self, access_key: str, secret_key: str) -> None:
        """Create the user, or set its secret key (enabled either way)."""
        body = json.dumps({"secretKey": secret_key, "status": "enabled"}).encode()
        self._call("PUT", "add-user", {"accessKey": access_key}, encrypt(self.secret_key, body))

    def attach(self, policy: str, user: str) -> None:
        """Make `policy` the user's only policy."""
        self._call("PUT", "set-user-or-group-policy",
                   {"policyName": policy, "userOrGroup": user, "isGroup": "false"})

    def remove_user(self, access_key: str) -> None:
        self._call("DELETE", "remove-user", {"accessKey": access_key})

    def user_policy(self, access_key: str) -> str:
        """The policies attached to the user, comma-separated (MinIO's `policyName`)."""
        from_server = json.loads(self._call("GET", "user-info", {"accessKey": access_key}))
        return from_server.get("policyName", "")
