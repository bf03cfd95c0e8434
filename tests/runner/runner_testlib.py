"""Queries the runner tests use to look at what was written."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"


def event_rows(conn, uid: str) -> list[tuple]:
    return conn.execute(
        "SELECT ordinal, module, activity, group_name, day, date, start_time, end_time,"
        " venues, campus, details FROM events WHERE job_uid = %s ORDER BY ordinal",
        (uid,),
    ).fetchall()


def job_row(conn, uid: str) -> dict | None:
    cur = conn.execute("SELECT * FROM parse_jobs WHERE uid = %s", (uid,))
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row)) if row else None


# --- presigned URLs, as the operator hands them to the runner -----------------------
# Signed by the operator's own S3 user (tests/conftest.py, hack/s3iam.py): a presigned URL
# carries its signer's rights, so these are the URLs a runner really gets.


def get_url(s3, key: str, expires: int = 300) -> str:
    return s3.client_for("operator").generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": key}, ExpiresIn=expires)


def put_url(s3, key: str, expires: int = 300) -> str:
    return s3.client_for("operator").generate_presigned_url(
        "put_object", Params={"Bucket": s3.bucket, "Key": key, "ContentType": "application/json"},
        ExpiresIn=expires)


def result_key(uid: str) -> str:
    return f"results/tenant-a/{uid}.json"


def read_result(s3, uid: str) -> dict | None:
    import json

    try:
        obj = s3.client.get_object(Bucket=s3.bucket, Key=result_key(uid))
    except s3.client.exceptions.NoSuchKey:
        return None
    return json.loads(obj["Body"].read())
