"""`helm test`: the API answers /readyz and takes one upload through to Succeeded.

Run by the chart's test pod (templates/tests/api-test.yaml) with the API image's Python,
standard library only. Environment: TEST_API_HOST/PORT (the API Service), SCHEDGEN_API_KEY
(from the Secret TEST_KEY_SECRET; may be empty), TEST_ANONYMOUS, TEST_PDF, TEST_EXPECT
("<kind> <events>"), TEST_JOB_TIMEOUT_SECONDS. Exit 0: passed; 1: failed, the reason on stderr.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

FINAL = ("Succeeded", "Failed", "Cancelled")
READY_SECONDS = 30  # a replica may be restarting; an API that stays down fails the test


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def base_url() -> str:
    host, port = os.environ["TEST_API_HOST"], os.environ["TEST_API_PORT"]
    if host.startswith("$("):
        fail(f"no API Service address ({host}): the Service must exist before the test pod")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def call(method: str, path: str, *, key: str = "", body: bytes | None = None, content_type: str = "",
         timeout: float = 70) -> tuple[int, bytes]:
    request = urllib.request.Request(base_url() + path, data=body, method=method)
    if key:
        request.add_header("X-API-Key", key)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready() -> None:
    deadline, last = time.monotonic() + READY_SECONDS, ""
    while time.monotonic() < deadline:
        try:
            status, body = call("GET", "/readyz", timeout=5)
            if status == 200:
                print(f"ok: /readyz {json.loads(body)['checks']}", flush=True)
                return
            last = f"{status} {body[:300].decode(errors='replace')}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(2)
    fail(f"GET /readyz did not answer 200 within {READY_SECONDS} s: {last}")


def multipart(pdf: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    with open(pdf, "rb") as fh:
        data = fh.read()
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"helm-test.pdf\"\r\n"
            "Content-Type: application/pdf\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(key: str) -> tuple[int, dict]:
    body, content_type = multipart(os.environ["TEST_PDF"])
    status, answer = call("POST", "/api/v1/uploads", key=key, body=body, content_type=content_type, timeout=30)
    return status, json.loads(answer or b"{}")


def follow(job_id: str, key: str) -> dict:
    deadline = time.monotonic() + int(os.environ.get("TEST_JOB_TIMEOUT_SECONDS", "180"))
    while True:
        wait = max(1, min(55, int(deadline - time.monotonic())))
        status, body = call("GET", f"/api/v1/jobs/{job_id}?wait={wait}", key=key)
        job = json.loads(body or b"{}")
        if status != 200:
            fail(f"GET /api/v1/jobs/{job_id}: {status} {job}")
        if job.get("phase") in FINAL or time.monotonic() >= deadline:
            return job


def erase(job_id: str, key: str) -> None:
    for _ in range(10):
        status, body = call("DELETE", f"/api/v1/jobs/{job_id}", key=key)
        if status in (204, 404):
            print(f"ok: job {job_id} erased", flush=True)
            return
        time.sleep(3)
    fail(f"DELETE /api/v1/jobs/{job_id}: {status} {body[:300]!r}")


def upload_and_follow(key: str) -> None:
    status, made = upload(key)
    if status != 202:
        fail(f"POST /api/v1/uploads: {status} {made}")
    print(f"ok: upload accepted, job {made['id']} (tenant {made['tenant']})", flush=True)
    job = follow(made["id"], key)
    erase(made["id"], key)
    kind, events = os.environ.get("TEST_EXPECT", "lecture 3").split()
    result = job.get("result") or {}
    if job.get("phase") != "Succeeded" or result.get("kind") != kind or result.get("events") != int(events):
        fail(f"job {made['id']} ended {job.get('phase')} (expected Succeeded, {events} {kind} events): {job}")
    print(f"ok: job {made['id']} Succeeded: {events} {kind} events", flush=True)


def keyless_upload_refused() -> None:
    status, answer = upload("")
    if status != 401:
        fail(f"POST /api/v1/uploads without a key: {status} {answer} (expected 401)")
    print(f"ok: an upload without a key is refused (401 {answer.get('code')})", flush=True)
    print(f"NOT TESTED: an upload (no API key in Secret {os.environ.get('TEST_KEY_SECRET')}; "
          "NOTES.txt shows how to make one)", flush=True)


def main() -> None:
    wait_ready()
    key = os.environ.get("SCHEDGEN_API_KEY", "").strip()
    if key or os.environ.get("TEST_ANONYMOUS") == "true":
        upload_and_follow(key)
    else:
        keyless_upload_refused()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
