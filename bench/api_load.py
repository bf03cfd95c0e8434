"""Upload API load test and end-to-end latency on this machine.

    .venv/bin/python bench/api_load.py [--clients 100] [--seconds 60] [--think 3]

Starts its own stack: Postgres and S3 (hack/devservices), the local control plane
(hack/localkube) with simulated KWOK nodes (hack/localkube/kwok.py), the API as a uvicorn
subprocess (`python -m schedgen.api`, a host process: it needs no node) with the rate limits
raised, and the operator (tests/support/operator_e2e) with its runner pods placed on the
simulated nodes. **Runner pods run on simulated KWOK nodes and the parse is done by the
executor** (hack/localkube/executor.py, in this process): it GETs the uploaded PDF through the
pod's presigned URL, parses it with schedgen's parser, PUTs the result object and ends the pod
with the runner's exit code and summary. So the end-to-end figures are the API's, the
operator's and the control plane's, without container start-up (the runner image on a real
node adds that: tests/operator measure it).

1. End to end: uploads the three real PDFs (../shared/fixtures/up) through HTTP and
   prints, per file, the time from sending the upload to the job being Succeeded
   (polling the status endpoint every 100 ms), plus the event counts.
2. Load: the operator is stopped (ParseJobs just queue), then `--clients` asyncio
   clients (a minimal keep-alive HTTP/1.1 client; httpx cost more CPU than the API) each loop for `--seconds`: upload a real PDF (unique bytes, so
   every upload is a real S3 put and a new ParseJob), read its status, wait `--think`
   seconds. Prints p50/p95/p99 upload-acceptance latency (202), status-read latency,
   requests/s and the error rate (anything but 202/200).

Targets: p95 acceptance < 200 ms with zero errors. The load generator, the API,
Postgres, MinIO and the control plane all share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "hack", ROOT / "tests" / "support"):
    sys.path.insert(0, str(p))

import devservices  # noqa: E402
from api_testlib import FIXTURES, REAL, ApiProcess, api_env  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def end_to_end(url: str) -> list[tuple[str, str, int, float]]:
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        async def one(pdf: str):
            data = (FIXTURES / "up" / pdf).read_bytes()
            t0 = time.perf_counter()
            r = await http.post("/api/v1/uploads", files={"file": (pdf, data, "application/pdf")})
            r.raise_for_status()
            status_url = r.json()["statusUrl"]
            while True:
                s = (await http.get(status_url)).json()
                if s["phase"] in ("Succeeded", "Failed", "Cancelled"):
                    return pdf, s["phase"], (s.get("result") or {}).get("events"), time.perf_counter() - t0
                await asyncio.sleep(0.1)
        for pdf, _, _ in REAL:  # one at a time: the latency of a lone upload
            out.append(await one(pdf))
    return out


class RawClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator shares
    the machine with the API, so it must cost little CPU (httpx costs more than the API)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in (headers or {}).items()]
            try:
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and "close" in value.lower():
                        close = True
                data = await self.reader.readexactly(length) if length else b""
                if close:
                    self.close()
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def multipart(pdf: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.pdf\"\r\n"
            f"Content-Type: application/pdf\r\n\r\n").encode() + pdf + f"\r\n--{boundary}--\r\n".encode()


async def load(url: str, clients: int, seconds: float, think: float) -> dict:
    import json
    from urllib.parse import urlsplit

    target = urlsplit(url)
    pdfs = [(FIXTURES / "up" / pdf).read_bytes() for pdf, _, _ in REAL]
    accept: list[float] = []
    reads: list[float] = []
    timeline: dict[str, list[float]] = {"uploads accepted (202)": [], "status reads (200)": []}
    t_zero = time.perf_counter()
    errors: dict[str, int] = {}
    total = 0
    deadline = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal total
        http = RawClient(target.hostname, target.port)
        boundary = uuid.uuid4().hex
        ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                 "X-Forwarded-For": f"10.9.{i // 250}.{i % 250}"}
        await asyncio.sleep(random.random() * max(think, 0.05))  # spread the start
        n = 0
        try:
            while time.perf_counter() < deadline:
                n += 1
                body = multipart(random.choice(pdfs) + f"\n% client {i} upload {n} {boundary}\n".encode(), boundary)
                t0 = time.perf_counter()
                try:
                    code, data = await http.request("POST", "/api/v1/uploads", body, ctype)
                except OSError as exc:
                    code, data = type(exc).__name__, b""
                total += 1
                if code == 202:
                    accept.append(time.perf_counter() - t0)
                    timeline["uploads accepted (202)"].append(time.perf_counter() - t_zero)
                    t1 = time.perf_counter()
                    try:
                        rcode, _ = await http.request("GET", json.loads(data)["statusUrl"], headers=ctype)
                    except OSError as exc:
                        rcode = type(exc).__name__
                    total += 1
                    if rcode == 200:
                        reads.append(time.perf_counter() - t1)
                        timeline["status reads (200)"].append(time.perf_counter() - t_zero)
                    else:
                        errors[f"GET {rcode}"] = errors.get(f"GET {rcode}", 0) + 1
                else:
                    errors[f"POST {code}"] = errors.get(f"POST {code}", 0) + 1
                if think:
                    await asyncio.sleep(think)
        finally:
            http.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t_start
    return {"accept": accept, "reads": reads, "errors": errors, "total": total, "elapsed": elapsed,
            "timeline": timeline}


def _cpu_by_process() -> dict[str, float]:
    """CPU seconds so far by process kind (this machine), for where-did-the-time-go."""
    import psutil

    out: dict[str, float] = {}
    for p in psutil.process_iter(["cmdline", "cpu_times"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            t = p.info["cpu_times"]
            if t is None:
                continue
        except (psutil.Error, TypeError):
            continue
        if "schedgen.api" in cmd:
            kind = "api"
        elif "minio" in cmd:
            kind = "s3(minio)"
        elif "kube-apiserver" in cmd:
            kind = "kube-apiserver"
        elif "etcd" in cmd:
            kind = "etcd"
        elif "postgres" in cmd:
            kind = "postgres"
        elif "api_load.py" in cmd:
            kind = "load generator"
        else:
            kind = "other"
        out[kind] = out.get(kind, 0.0) + t.user + t.system
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--think", type=float, default=3.0, help="seconds each client waits after each upload+read")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--keep", action="store_true", help="leave the state dir (logs) behind")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "api_load.png",
                    help="PNG: latency distribution and throughput over time")
    args = ap.parse_args()

    from localkube.cluster import LocalCluster
    from localkube.executor import Executor
    from localkube.kwok import RUNNER_PLACEMENT_ENV, Kwok
    from operator_e2e import OperatorProcess, operator_env

    base = Path(tempfile.mkdtemp(prefix="schedgen-api-bench-"))
    os.chmod(base, 0o711)  # Postgres runs as `postgres` when we are root: let it traverse
    pg = devservices.PostgresServer(base / "pg")
    s3srv = devservices.S3Server(base / "s3")
    # simulated nodes + the executor: the figures are the API's and the operator's, not container start-up
    cluster = LocalCluster(state_dir=base / "kube", session=not args.keep)
    procs: list = []
    try:
        pg.start()
        s3srv.start()
        from schedgen import db

        with db.connect(pg.dsn) as conn:
            db.migrate(conn)
        import boto3

        bucket = "schedgen-bench"
        boto3.client("s3", endpoint_url=s3srv.endpoint_url, region_name="us-east-1",
                     **{k.lower(): v for k, v in s3srv.root_credentials.items()}).create_bucket(Bucket=bucket)
        s3srv.create_component_users(bucket)  # the API and the operator sign as their own users
        cluster.start()
        for a in (("apply", "-f", str(ROOT / "crds")),
                  ("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")):
            done = cluster.kubectl(*a, check=False)
            assert done.returncode == 0, done.stderr
        from kubernetes import client as k8s

        api_client = cluster.api_client()
        core = k8s.CoreV1Api(api_client)
        for ns in ("bench-e2e", "bench-load", "schedgen-system"):
            core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_config_map("schedgen-system", {"metadata": {"name": "schedgen-operator"}, "data": {
            "maxConcurrent": "10", "maxPerTenant": "10", "admissionsPerSecond": "50", "admissionBurst": "50",
            "guardMaxUnschedulable": "-1"}})

        common = dict(database_url=pg.dsn, s3_endpoint_url=s3srv.endpoint_url, s3_credentials=s3srv.credentials_for("api"),
                      bucket=bucket,
                      kubeconfig=str(cluster.kubeconfig))
        if not args.skip_e2e:
            from types import SimpleNamespace

            Kwok(cluster, verbosity="WARN").start().add_fake_nodes(2)
            executor = Executor(cluster.api_client())
            procs.append(executor)
            executor.start()
            # what operator_env reads of the tests' Cluster: the executor (on this machine) does
            # the runner pods' work, so the presigned URLs are for S3's local address
            shim = SimpleNamespace(cluster=cluster, postgres=pg, pod_s3_endpoint=s3srv.endpoint_url,
                                   runner_image="localhost/schedgen-runner:kwok",
                                   s3=SimpleNamespace(endpoint_url=s3srv.endpoint_url, bucket=bucket,
                                                      credentials_for=s3srv.credentials_for))
            op = OperatorProcess(cluster, operator_env(shim, **RUNNER_PLACEMENT_ENV), base / "operator.log")
            procs.append(op)
            op.start()
            api = ApiProcess(api_env(namespace="bench-e2e", SCHEDGEN_API_ALLOW_ANONYMOUS="true", **common),
                             base / "api-e2e.log").start()
            procs.append(api)
            results = asyncio.run(end_to_end(api.url))
            print("end to end (upload -> Succeeded, one at a time):")
            for pdf, phase, events, seconds in results:
                print(f"  {pdf:16s} {phase:9s} events={events!s:3s} {seconds:6.2f} s")
            api.stop()
            op.stop()
            executor.stop()
            print(f"  (runner pods on simulated KWOK nodes; executor: {executor.report()})")

        # Anonymous requests (tenant `default`): the load measures the upload path, not key lookups.
        api = ApiProcess(api_env(namespace="bench-load", SCHEDGEN_API_ALLOW_ANONYMOUS="true",
                                 SCHEDGEN_API_UPLOADS_PER_MINUTE=1000000,
                                 SCHEDGEN_API_READS_PER_MINUTE=1000000, SCHEDGEN_API_TRUSTED_PROXIES="127.0.0.1/32",
                                 **common), base / "api-load.log").start()
        procs.append(api)
        cpu_before = _cpu_by_process()
        r = asyncio.run(load(api.url, args.clients, args.seconds, args.think))
        cpu_after = _cpu_by_process()
        n_err = sum(r["errors"].values())
        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        print(f"load: {args.clients} clients, {args.seconds:g} s, think {args.think:g} s, operator stopped")
        print(f"  uploads accepted: {len(r['accept'])}  status reads: {len(r['reads'])}  "
              f"requests: {r['total']} in {r['elapsed']:.1f} s = {r['total'] / r['elapsed']:.1f} req/s "
              f"({len(r['accept']) / r['elapsed']:.1f} uploads/s)")
        print(f"  upload acceptance latency: p50 {ms(percentile(r['accept'], .5))}  "
              f"p95 {ms(percentile(r['accept'], .95))}  p99 {ms(percentile(r['accept'], .99))}  "
              f"max {ms(max(r['accept'], default=float('nan')))}")
        print(f"  status read latency:       p50 {ms(percentile(r['reads'], .5))}  "
              f"p95 {ms(percentile(r['reads'], .95))}  p99 {ms(percentile(r['reads'], .99))}")
        print(f"  errors: {n_err} ({100 * n_err / max(1, r['total']):.2f} %) {r['errors'] or ''}")
        used = {k: cpu_after.get(k, 0) - cpu_before.get(k, 0) for k in cpu_after}
        top = sorted(used.items(), key=lambda kv: -kv[1])[:8]
        print("  CPU seconds during the load phase: " + ", ".join(f"{k} {v:.1f}" for k, v in top if v > 0.5))
        from plots import latency_and_throughput

        print("  plot:", latency_and_throughput(
            args.plot, f"API load: {args.clients} clients, {args.seconds:g} s, think {args.think:g} s "
                       f"(operator stopped; this machine, shared)",
            {"upload accepted (202)": r["accept"], "status read (200)": r["reads"]}, r["timeline"]))
        return 0
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        try:
            cluster.stop()
        finally:
            s3srv.stop()
            pg.stop()
            if args.keep:
                print(f"state dir: {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
