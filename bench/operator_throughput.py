"""Operator throughput on the local control plane (hack/localkube), runner pods on simulated nodes.

    .venv/bin/python bench/operator_throughput.py [--count 1000] [--max-concurrent 50] [--kwok-nodes 4]

Starts a local control plane (its own state dir), Postgres and MinIO (hack/devservices),
KWOK with `--kwok-nodes` simulated nodes (hack/localkube/kwok.py) and the operator
(`python -m schedgen.operator`, standalone) with its runner pods placed on those nodes
(SCHEDGEN_NODE_SELECTOR / SCHEDGEN_RUNNER_TOLERATIONS). **Runner pods run on simulated KWOK
nodes, and the parse is done by the executor** (hack/localkube/executor.py, in this process):
for each runner pod it GETs the real PDF through the pod's presigned URL (the three UP
fixtures, in turn), parses it with schedgen's parser (once per distinct PDF: the executor
caches parses by content), PUTs the result object and ends the pod with the runner's exit
code and summary -- so the figures are the operator's, the control plane's and Postgres'
(real events are recorded), without container start-up or a parse per pod. Writes
docs/img/operator_throughput.png (--plot): the latency distributions and
created/admitted/completed per second over time. Submits N ParseJobs and prints:

* ParseJobs/s completed (first creation to last completion);
* admission latency once capacity frees, p50/p99: for the k-th admission beyond the
  first `maxConcurrent`, its startedAt minus the completedAt of the (k - maxConcurrent)-th
  completion (the slot it took), from the statuses; plus the operator's own histogram;
* API requests per ParseJob (the operator's `schedgen_operator_api_requests_total`,
  writes = non-GET), including kopf's watches;
* the operator's peak RSS and CPU seconds (psutil);
* what the executor did (pods, members, parses and cache hits, S3 requests).

Targets: p99 admission latency < 1 s, <= 10 API writes per ParseJob, peak RSS < 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from schedgen.parsejob import GROUP, PLURAL, VERSION

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
PDFS = ["UP_MOD_XLS.pdf", "UP_TST_PDF.pdf", "UP_EXAM_SS.pdf"]  # 30, 12 and 5 events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def scrape(port: int) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def histogram_quantile(metrics: dict, name: str, q: float) -> float:
    buckets = sorted((float(dict(lab)["le"]), v) for (n, lab), v in metrics.items() if n == f"{name}_bucket")
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    target = q * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return le
    return float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--max-concurrent", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0, help="admissionsPerSecond")
    ap.add_argument("--kwok-nodes", type=int, default=4, help="simulated nodes (32 CPU, 256Gi, 110 pods each)")
    ap.add_argument("--workers", type=int, default=8, help="executor threads")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the operator's batchSize (1: one pod per ParseJob; default: the operator's)")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    ap.add_argument("--plot", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img" /
                    "operator_throughput.png", help="PNG: latency distribution and throughput over time")
    args = ap.parse_args()

    import psutil
    from kubernetes import client

    import devservices
    from localkube.cluster import LocalCluster
    from localkube.executor import Executor
    from localkube.kwok import RUNNER_PLACEMENT_ENV, Kwok

    base = Path(tempfile.mkdtemp(prefix="schedgen-bench-"))
    base.chmod(0o711)  # Postgres runs as user postgres and must traverse it
    # no real node: runner pods go to the simulated (KWOK) nodes, the executor does their work
    cluster = LocalCluster(state_dir=base / "cluster", session=not args.keep)
    pg = None if args.no_postgres else devservices.PostgresServer(base / "pg")
    s3 = devservices.S3Server(base / "s3")  # the PDFs, and the result objects the executor PUTs
    op_proc = None
    executor = None
    try:
        print("starting the local control plane ...", flush=True)
        s3.start()
        import boto3

        # the root user sets up (the bucket, the PDFs as a kubectl user uploads them, the
        # operator's own IAM user); the operator signs as that user (hack/s3iam.py)
        bucket = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                              aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
        bucket.create_bucket(Bucket="bench")
        s3.create_component_users("bench")
        tenants = ["bench-a", "bench-b", "bench-c"]
        for ns in tenants:  # a ParseJob takes its PDF from its namespace's own prefix (operator/admission.py)
            for pdf in PDFS:
                bucket.put_object(Bucket="bench", Key=f"uploads/namespaces/{ns}/{pdf}",
                                  Body=(FIXTURES / pdf).read_bytes())
        cluster.start()
        kwok = Kwok(cluster, verbosity="WARN").start()
        kwok.add_fake_nodes(args.kwok_nodes, cpu="32", memory="256Gi", pods=110)
        executor = Executor(cluster.api_client(), workers=args.workers).start()
        dsn = ""
        if pg:
            pg.start()
            from schedgen import db
            with db.connect(pg.dsn) as conn:
                db.migrate(conn)
            dsn = pg.dsn
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")
        api = cluster.api_client()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": "schedgen-system"}})
        core.create_namespaced_config_map("schedgen-system", {"metadata": {"name": "schedgen-operator"}, "data": {
            "maxConcurrent": str(args.max_concurrent), "maxPerTenant": str(args.max_concurrent),
            "admissionsPerSecond": str(args.rate), "admissionBurst": str(int(args.rate)),
            "guardMaxUnschedulable": "-1", **({"batchSize": str(args.batch_size)} if args.batch_size else {})}})
        for ns in tenants:
            core.create_namespace({"metadata": {"name": ns}})
            core.create_namespaced_secret(ns, {"metadata": {"name": "schedgen-runner"}, "stringData": {
                "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "SCHEDGEN_DATABASE_URL": dsn or "unused"}})

        metrics_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDGEN_")}
        env.update({"KUBECONFIG": str(cluster.kubeconfig), "SCHEDGEN_STANDALONE": "1",
                    "SCHEDGEN_METRICS_PORT": str(metrics_port), "SCHEDGEN_LIVENESS_PORT": str(free_port()),
                    "SCHEDGEN_DATABASE_URL": dsn, "SCHEDGEN_RUNNER_IMAGE": "localhost/schedgen-runner:kwok",
                    "SCHEDGEN_IMAGE_PULL_POLICY": "Never", **RUNNER_PLACEMENT_ENV,
                    "SCHEDGEN_JOB_TTL_SECONDS": "3600",
                    "SCHEDGEN_S3_ENDPOINT_URL": s3.endpoint_url, "SCHEDGEN_DEFAULT_BUCKET": "bench",
                    **s3.credentials_for("operator")})
        log = open(base / "operator.log", "wb")
        op_proc = subprocess.Popen([PYTHON, "-m", "schedgen.operator"], env=env, stdout=log, stderr=log,
                                   start_new_session=True, cwd=str(ROOT))
        proc = psutil.Process(op_proc.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if scrape(metrics_port).get(("schedgen_operator_active", ())) == 1.0:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("operator did not become active; see " + str(base / "operator.log"))

        peak_rss = [proc.memory_info().rss]
        sampling = threading.Event()

        def sample_rss():
            while not sampling.is_set():
                try:
                    peak_rss[0] = max(peak_rss[0], proc.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.2)

        threading.Thread(target=sample_rss, daemon=True).start()
        before = scrape(metrics_port)
        cpu_before = sum(proc.cpu_times()[:2])

        print(f"submitting {args.count} ParseJobs ...", flush=True)
        t0 = time.time()

        def submit(i: int) -> None:
            ns = tenants[i % len(tenants)]
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob", "metadata": {"name": f"pj-{i:05d}"},
                "spec": {"source": {"s3": {"bucket": "bench", "key": f"uploads/namespaces/{ns}/{PDFS[i % len(PDFS)]}"}}}})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(args.count)))
        t_submitted = time.time()
        print(f"submitted in {t_submitted - t0:.1f}s", flush=True)

        def all_items():
            return [pj for ns in tenants
                    for pj in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]]

        while True:
            items = all_items()
            done = [pj for pj in items if (pj.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
            print(f"  {time.time() - t0:6.1f}s: {len(done)}/{args.count} finished", flush=True)
            if len(done) >= args.count:
                break
            if op_proc.poll() is not None:
                raise RuntimeError("operator died; see " + str(base / "operator.log"))
            time.sleep(2)
        time.sleep(3)  # let events and trailing writes land
        after = scrape(metrics_port)
        cpu_seconds = sum(proc.cpu_times()[:2]) - cpu_before
        sampling.set()

        failed = [pj for pj in items if pj["status"]["phase"] != "Succeeded"]
        created = min(ts(pj["metadata"]["creationTimestamp"]) for pj in items)
        completions = sorted(ts(pj["status"]["completedAt"]) for pj in items)
        starts = sorted(ts(pj["status"]["startedAt"]) for pj in items)
        c = args.max_concurrent
        latencies = [max(0.0, starts[k] - completions[k - c]) for k in range(c, len(starts))]

        def delta(pred) -> float:
            return sum(v - before.get(k, 0.0) for k, v in after.items() if pred(k))

        api_total = delta(lambda k: k[0] == "schedgen_operator_api_requests_total")
        api_writes = delta(lambda k: k[0] == "schedgen_operator_api_requests_total" and dict(k[1])["method"] != "GET")
        by_method = {f"{dict(k[1])['client']}:{dict(k[1])['method']}": v - before.get(k, 0.0)
                     for k, v in after.items() if k[0] == "schedgen_operator_api_requests_total"}
        n = len(items)
        result = {
            "parsejobs": n,
            "failed": len(failed),
            "maxConcurrent": c,
            "parsejobs_per_second": round(n / (completions[-1] - created), 2),
            "admission_latency_p50_s": round(percentile(latencies, 0.5), 3),
            "admission_latency_p99_s": round(percentile(latencies, 0.99), 3),
            "operator_admission_latency_p50_le_s": histogram_quantile(after, "schedgen_admission_latency_seconds", 0.5),
            "operator_admission_latency_p99_le_s": histogram_quantile(after, "schedgen_admission_latency_seconds", 0.99),
            "api_requests_per_parsejob": round(api_total / n, 2),
            "api_writes_per_parsejob": round(api_writes / n, 2),
            "api_requests_by_client_method": {k: int(v) for k, v in sorted(by_method.items())},
            "operator_peak_rss_mib": round(peak_rss[0] / 2**20, 1),
            "operator_cpu_seconds": round(cpu_seconds, 1),
            "nodes": f"{args.kwok_nodes} simulated (KWOK); runner work by the executor",
            "executor": {k: v for k, v in executor.stats().items() if k != "member_errors" or v},
        }
        print(json.dumps(result, indent=2))
        from plots import latency_and_throughput

        created_at = [ts(pj["metadata"]["creationTimestamp"]) for pj in items]
        print("plot:", latency_and_throughput(
            args.plot, f"Operator throughput: {n} ParseJobs, maxConcurrent {c}, KWOK nodes + executor "
                       f"(this machine, shared)",
            {"admission latency (slot freed -> next admitted)": latencies,
             "creation -> completion": [ts(pj["status"]["completedAt"]) - ts(pj["metadata"]["creationTimestamp"])
                                        for pj in items]},
            {"created": [t - created for t in created_at], "admitted": [t - created for t in starts],
             "completed": [t - created for t in completions]}, unit="s"))
        ok = (result["admission_latency_p99_s"] < 1.0 and result["api_writes_per_parsejob"] <= 10
              and result["operator_peak_rss_mib"] < 200 and not failed)
        print("targets met" if ok else "TARGETS MISSED")
        return 0 if ok else 1
    finally:
        if executor is not None:
            executor.stop()
            print("executor:", executor.report())
        if op_proc and op_proc.poll() is None:
            os.killpg(op_proc.pid, signal.SIGTERM)
            try:
                op_proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(op_proc.pid, signal.SIGKILL)
        if args.keep:
            print(f"kept: {base}, KUBECONFIG={cluster.kubeconfig}")
        else:
            cluster.stop()
            if pg:
                pg.stop()
            s3.stop()
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
