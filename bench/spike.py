"""Spike: a burst of real-PDF uploads through the API, batch mode off and on, side by side.

    .venv/bin/python bench/spike.py [--count 1000] [--modes off,on] [--tenants 5] [--single 10]

The stack (bench/spike_stack.py) is this project's, started by pid on this machine:
Postgres, MinIO, the local control plane (etcd, kube-apiserver, controller-manager,
scheduler, kube-proxy) with one real node (containerd + kubelet; runner pods are
containers of the project's runner image), the operator and the API as subprocesses, one
API key per tenant. For each mode (the operator's ConfigMap: off = `batchSize: "1"`, on =
`--batch-size`; `batchThreshold` the same in both) the SAME `--count` PDFs (the three
fixtures of ../shared/fixtures/up, each copy with a unique comment after %%EOF: distinct
sha256, so distinct S3 objects and ParseJobs, same parse result) are uploaded at once by
`--concurrency` clients round-robin over the tenants' keys, then the namespace is drained
and emptied; then `--single` uploads one at a time. Reported per mode:

* completed PDFs/s and drain time: first upload sent -> last ParseJob seen final;
* upload -> Succeeded p50/p95: POST sent -> the ParseJob seen Succeeded by a watch;
* CPU-seconds per PDF of the whole stack over the burst (first upload -> drained + 3 s).
  How: the node's cgroup (cgroupfs driver, /schedgen/<cluster>/<node>) holds the kubelet,
  containerd, its shims, runc and (under kubepods/) every pod; cgroup v1 cpuacct.usage (v2
  cpu.stat usage_usec) is cumulative and charged to every ancestor as it is used, so the
  runners that exited and the pod cgroups already removed are still in it. The other
  processes (control plane, operator, API, Postgres, MinIO) are the pids this run started:
  psutil user+system of each and its live descendants plus the CPU of the children they
  reaped (children_user/system; Postgres backends). The benchmark process itself (upload
  clients, watch) and everything else on the machine are left out;
* parse-only CPU per PDF: the same PDFs parsed in this process by
  schedgen.runner.parsing.parse_pdf (CPU time), the floor a mode could reach;
* pods and Jobs created in the namespace during the burst;
* API writes per ParseJob: kube-apiserver's own apiserver_request_total with a write verb
  (POST, PUT, PATCH, DELETE, APPLY), all clients, delta over the burst window;
* single uploads: upload -> Succeeded p50 with nothing else queued;
* diagnostics: runner pods that exited non-zero (their Job retried them; log tail shown),
  the last pods to finish, MinIO's own PutObject time-to-first-byte (>1 s, >10 s) and
  canceled/error counts (a runner's S3 timeout with no slow PUT at MinIO never reached it).

Writes docs/img/spike.png (backlog and completions over time, one panel per mode) and,
with --json, the figures as JSON. The machine's 2 cores are shared: figures vary run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plots  # noqa: E402
import spike_stack  # noqa: E402  (puts hack/, tests/support on sys.path)
from spike_lib import (  # noqa: E402
    Track,
    backlog,
    completed_between,
    conntrack_stats,
    deep_window,
    delta,
    distinct_pdfs,
    minio_requests,
    percentile,
    summarize,
    value_at,
    write_requests,
)

ROOT = spike_stack.ROOT
FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
PDFS = ("UP_MOD_XLS.pdf", "UP_TST_PDF.pdf", "UP_EXAM_SS.pdf")


def _seconds(at: float | None, since: float) -> str:
    return "-" if at is None else f"{at - since:.2f} s"


def parse_only(pdfs: list[bytes]) -> tuple[float, dict[str, int]]:
    """CPU seconds per PDF to parse each in-process; and the kinds found (each must parse)."""
    from schedgen.runner.parsing import parse_pdf

    kinds: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="spike-parse-") as tmp:
        paths = []
        for i, data in enumerate(pdfs):
            paths.append(Path(tmp) / f"{i}.pdf")
            paths[-1].write_bytes(data)
        parse_pdf(paths[0])  # warm: imports and caches are not what a runner pays per PDF
        started = time.process_time()
        for p in paths:
            kind = parse_pdf(p).kind.value
            kinds[kind] = kinds.get(kind, 0) + 1
        return (time.process_time() - started) / len(paths), kinds


async def upload_all(url: str, keys: dict[str, str], pdfs: list[bytes], concurrency: int) -> list[Track]:
    import httpx

    tenants = sorted(keys)
    tracks: list[Track] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as http:
        async def one(i: int, data: bytes) -> None:
            tenant = tenants[i % len(tenants)]
            async with sem:
                t0 = time.time()
                r = await http.post("/api/v1/uploads", headers={"X-API-Key": keys[tenant]},
                                    files={"file": (f"spike-{i}.pdf", data, "application/pdf")})
                if r.status_code != 202:
                    raise RuntimeError(f"upload {i}: HTTP {r.status_code} {r.text[:300]}")
                tracks.append(Track(r.json()["id"], tenant, t0))
        await asyncio.gather(*(one(i, d) for i, d in enumerate(pdfs)))
    return tracks


def wait_final(stack, tracks: list[Track], timeout: float, label: str) -> None:
    """Until every upload is seen final by the watcher; fills running/done/phase."""
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        pending = 0
        for t in tracks:
            if t.done is None:
                s = stack.watcher.get(t.name)
                if s and s.done is not None:
                    t.running, t.done, t.phase, t.reason = s.running, s.done, s.phase, s.reason
                else:
                    pending += 1
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label}: {pending} uploads not final after {timeout:.0f}s")
        if not stack.operator.running:
            raise RuntimeError(f"the operator exited:\n{stack.operator.log_tail(30)}")
        if time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"  {label}: {len(tracks) - pending}/{len(tracks)} final", flush=True)
        time.sleep(0.2)


def idle_cpu(stack, seconds: float = 10.0) -> float:
    """The stack's CPU-s per second with nothing to do (leases, status loops, watches)."""
    meter = stack.cpu_meter()
    before, t0 = sum(meter.read().values()), time.monotonic()
    time.sleep(seconds)
    return (sum(meter.read().values()) - before) / (time.monotonic() - t0)


def run_mode(stack, mode: str, pdfs: list[bytes], parse_cpu: float, idle: float, args) -> dict:
    batch_size = 1 if mode == "off" else args.batch_size
    stack.set_runtime(batchSize=batch_size, batchThreshold=args.batch_threshold)
    time.sleep(3)  # the operator reads its ConfigMap each tick
    meter = stack.cpu_meter()
    writes0, cpu0, t0 = write_requests(stack.apiserver_metrics()), meter.read(), time.time()
    s3_0, ct0 = minio_requests(stack.minio_metrics()), conntrack_stats(stack.conntrack())
    print(f"[{mode}] uploading {len(pdfs)} PDFs ({args.concurrency} at a time, {args.tenants} tenants) ...",
          flush=True)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=meter.sample, args=(stop, samples), daemon=True)
    sampler.start()
    tracks = asyncio.run(upload_all(stack.api.url, stack.keys, pdfs, args.concurrency))
    uploaded = time.time() - t0
    wait_final(stack, tracks, args.timeout, f"[{mode}] burst")
    time.sleep(3)  # trailing writes: records, events, the last pods' status
    stop.set()
    sampler.join()
    deep = deep_window(tracks, args.deep)
    deep_pdfs = completed_between(tracks, *deep) if deep else 0
    deep_cpu = (value_at(samples, deep[1]) - value_at(samples, deep[0])) if deep else float("nan")
    cpu1, writes1 = meter.read(), write_requests(stack.apiserver_metrics())
    window = time.time() - t0
    s3 = delta(minio_requests(stack.minio_metrics()), s3_0)
    ct = {k: v - ct0.get(k, 0) for k, v in conntrack_stats(stack.conntrack()).items()}
    pods, jobs, batch_jobs = stack.pods_since(t0)
    timeline = stack.pod_timeline(t0)
    for row in timeline[-3:]:
        print(f"  [{mode}] last pods to finish (s since the first upload): {row}", flush=True)
    slow_batch = max((r for r in timeline if r["batch"] and r["finished"] is not None),
                     key=lambda r: r["finished"] - r["started"], default=None)
    if slow_batch:
        print(f"  [{mode}] slowest batch pod {slow_batch['pod']}: {slow_batch['finished'] - slow_batch['started']:.0f} s "
              f"running; log saved in the state dir (--keep)", flush=True)
        stack.pod_log(slow_batch["pod"])
    single_starts = sorted(round(r["created"], 1) for r in timeline if not r["batch"] and r["created"] is not None)
    if batch_size > 1:
        print(f"  [{mode}] single (non-batch) pods created at (s since the first upload): {single_starts}", flush=True)
    failed_pods = [r for r in timeline if r["exit"] not in (0, None)]
    for r in failed_pods[:3]:
        tail = stack.pod_log(r["pod"]).strip().splitlines()[-2:]
        print(f"  [{mode}] pod {r['pod']} exited {r['exit']} after {r['finished'] - r['started']:.0f} s: {tail}",
              flush=True)
    s = summarize(tracks)
    cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    writes = delta(writes1, writes0)
    total_cpu = sum(cpu.values())
    print(f"[{mode}] drained in {s.drain_seconds:.1f}s (uploads took {uploaded:.1f}s); resetting ...", flush=True)
    stack.reset()
    singles: list[float] = []
    for i in range(args.single):
        [t] = asyncio.run(upload_all(stack.api.url, stack.keys, [pdfs[i % len(pdfs)] + f"% single {i}\n".encode()],
                                     1))
        wait_final(stack, [t], 120, f"[{mode}] single {i}")
        if t.phase == "Succeeded":
            singles.append(t.done - t.uploaded)
        single_pods = stack.pod_timeline(t.uploaded)
        print(f"  [{mode}] single {i}: {t.phase}, upload -> Running {_seconds(t.running, t.uploaded)}, "
              f"-> {t.phase} {_seconds(t.done, t.uploaded)}; its pod (s since upload): "
              f"{ {k: single_pods[-1][k] for k in ('created', 'started', 'finished')} if single_pods else None}", flush=True)
    if args.single:
        stack.reset()
    return {
        "mode": mode, "batchSize": batch_size, "batchThreshold": args.batch_threshold,
        "pdfs": s.count, "succeeded": s.succeeded, "failed": s.failed,
        "drain_s": round(s.drain_seconds, 2), "drain95_s": round(s.drain95_seconds, 2), "pdfs_per_s": round(s.pdfs_per_second, 3),
        "upload_to_succeeded_p50_s": round(s.latency_p50, 2), "upload_to_succeeded_p95_s": round(s.latency_p95, 2),
        "upload_to_succeeded_max_s": round(s.latency_max, 2),
        "stack_cpu_s_per_pdf": round(total_cpu / s.count, 3),
        "deep_backlog": {"depth": args.deep, "window_s": round(deep[1] - deep[0], 1) if deep else None,
                         "end_s": round(deep[1] - min(t.uploaded for t in tracks), 1) if deep else None,
                         "pdfs": deep_pdfs, "cpu_s": round(deep_cpu, 1) if deep else None,
                         "stack_cpu_s_per_pdf": round(deep_cpu / deep_pdfs, 3) if deep_pdfs else None},
        "parse_only_cpu_s_per_pdf": round(parse_cpu, 4),
        "idle_cpu_s_per_s": round(idle, 3), "window_s": round(window, 1),
        "stack_cpu_s_per_pdf_idle_subtracted": round((total_cpu - idle * window) / s.count, 3),
        "x_parse_only": round(total_cpu / s.count / parse_cpu, 1) if parse_cpu else None,
        "cpu_s_by_component": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
        "pods_created": pods, "jobs_created": jobs, "batch_jobs": batch_jobs, "pods_failed": len(failed_pods),
        "single_pods_created_s": single_starts,
        "conntrack": ct,
        "minio": {k: int(s3.get(k, 0)) for k in ("put", "put_over_1s", "put_over_10s", "canceled", "errors")},
        "api_writes_per_parsejob": round(sum(writes.values()) / s.count, 2),
        "api_writes_by_resource": {k: int(v) for k, v in sorted(writes.items(), key=lambda kv: -kv[1])[:8]},
        "single_uploads": len(singles),
        "single_upload_to_succeeded_p50_s": round(percentile(singles, 0.5), 2) if singles else None,
        "single_upload_to_succeeded_max_s": round(max(singles), 2) if singles else None,
        "backlog": backlog(tracks, step=1.0), "pods": timeline,
    }


ROWS = [("PDFs (succeeded)", lambda r: f"{r['pdfs']} ({r['succeeded']})"),
        ("batchSize / batchThreshold", lambda r: f"{r['batchSize']} / {r['batchThreshold']}"),
        ("drain time (95 % final)", lambda r: f"{r['drain_s']:.1f} s ({r['drain95_s']:.1f} s)"),
        ("completed PDFs/s", lambda r: f"{r['pdfs_per_s']:.2f}"),
        ("upload -> Succeeded p50 / p95", lambda r: f"{r['upload_to_succeeded_p50_s']:.1f} / "
                                                    f"{r['upload_to_succeeded_p95_s']:.1f} s"),
        ("stack CPU-s per PDF", lambda r: f"{r['stack_cpu_s_per_pdf']:.3f}"),
        ("  at a deep backlog (window, PDFs)", lambda r: "-" if not r["deep_backlog"]["stack_cpu_s_per_pdf"] else
         f"{r['deep_backlog']['stack_cpu_s_per_pdf']:.3f} ({r['deep_backlog']['window_s']:.0f} s, "
         f"{r['deep_backlog']['pdfs']})"),
        ("  idle stack subtracted", lambda r: f"{r['stack_cpu_s_per_pdf_idle_subtracted']:.3f} "
                                            f"(idle {r['idle_cpu_s_per_s']:.2f} CPU-s/s)"),
        ("parse-only CPU-s per PDF", lambda r: f"{r['parse_only_cpu_s_per_pdf']:.4f}"),
        ("stack / parse-only", lambda r: f"{r['x_parse_only']}x"),
        ("pods / Jobs (batch Jobs) created", lambda r: f"{r['pods_created']} / {r['jobs_created']} "
                                                      f"({r['batch_jobs']})"),
        ("runner pods that failed (retried)", lambda r: f"{r['pods_failed']}"),
        ("MinIO PUTs (>1 s, >10 s TTFB)", lambda r: f"{r['minio']['put']} ({r['minio']['put_over_1s']}, "
                                                  f"{r['minio']['put_over_10s']})"),
        ("MinIO canceled / errors", lambda r: f"{r['minio']['canceled']} / {r['minio']['errors']}"),
        ("conntrack drop/insert_failed/invalid", lambda r: "/".join(str(r["conntrack"].get(k, "-"))
                                                                    for k in ("drop", "insert_failed", "invalid"))),
        ("API writes per ParseJob", lambda r: f"{r['api_writes_per_parsejob']:.2f}"),
        ("single upload -> Succeeded p50", lambda r: "-" if r["single_upload_to_succeeded_p50_s"] is None
         else f"{r['single_upload_to_succeeded_p50_s']:.2f} s (n={r['single_uploads']})")]


def table(results: list[dict]) -> str:
    width = max(len(name) for name, _ in ROWS) + 2
    head = "".ljust(width) + "".join(f"batch {r['mode']}".ljust(28) for r in results)
    lines = [head, "-" * len(head)]
    lines += [name.ljust(width) + "".join(fmt(r).ljust(28) for r in results) for name, fmt in ROWS]
    return "\n".join(lines)


def plot(path: Path, results: list[dict], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.2 * len(results), 4.2), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], results):
        b = r["backlog"]
        ax.plot(b["t"], b["waiting"], label="waiting", color="tab:orange")
        ax.plot(b["t"], b["running"], label="running", color="tab:blue")
        ax.plot(b["t"], b["completed"], label="completed (cumulative)", color="tab:green")
        d = r["deep_backlog"]
        if d["window_s"]:
            end = d["end_s"]
            ax.axvspan(end - d["window_s"], end, color="grey", alpha=0.12,
                       label=f"deep backlog: {d['stack_cpu_s_per_pdf']:.3f} CPU-s/PDF")
        ax.set_title(f"batch {r['mode']} (batchSize {r['batchSize']}): {r['pdfs_per_s']:.2f} PDFs/s, "
                     f"{r['stack_cpu_s_per_pdf']:.2f} CPU-s/PDF", fontsize=9)
        ax.set_xlabel("seconds since the first upload")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("ParseJobs")
    return plots.save(fig, path, title, 10)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def main() -> int:
    from schedgen.operator.config import RuntimeConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000, help="uploads in the burst")
    ap.add_argument("--modes", default="off,on", help="comma-separated: off, on (the same burst in each)")
    ap.add_argument("--tenants", type=int, default=5, help="tenants, each with its own API key")
    ap.add_argument("--single", type=int, default=10, help="sequential single uploads per mode (0: none)")
    ap.add_argument("--concurrency", type=int, default=8, help="uploads in flight during the burst")
    ap.add_argument("--max-concurrent", type=int, default=20, help="operator maxConcurrent (ParseJobs)")
    ap.add_argument("--max-per-tenant", type=int, default=20, help="operator maxPerTenant (ParseJobs)")
    ap.add_argument("--deep", type=int, default=100,
                    help="a deep backlog: at least this many uploads not yet final (CPU per PDF measured "
                         "from the last upload until fewer are left)")
    ap.add_argument("--admissions-per-second", type=float, default=50.0)
    ap.add_argument("--batch-size", type=int, default=RuntimeConfig().batch_size,
                    help="batchSize with batch mode on (default: the operator's)")
    ap.add_argument("--batch-threshold", type=int, default=RuntimeConfig().batch_threshold,
                    help="batchThreshold, both modes (default: the operator's)")
    ap.add_argument("--cpu-request", default="100m", help="runner pods' CPU request")
    ap.add_argument("--node-cpu", default="4", help="the node's declared CPU (the machine has 2 cores)")
    ap.add_argument("--timeout", type=float, default=None, help="drain timeout per mode (default 60 + 3 s/PDF)")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "spike.png")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the state dir (logs)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"off", "on"}:
        ap.error("--modes: a comma-separated list of off, on")
    if not 1 <= args.count <= 100_000 or not 1 <= args.tenants <= 100 or args.batch_size < 1:
        ap.error("--count 1..100000, --tenants 1..100, --batch-size >= 1")
    args.timeout = args.timeout or 60 + 3 * args.count

    sources = [(FIXTURES / name).read_bytes() for name in PDFS]
    pdfs = distinct_pdfs(sources, args.count, uuid.uuid4().hex[:8])
    parse_cpu, kinds = parse_only(pdfs)
    print(f"parse-only: {parse_cpu * 1000:.1f} ms CPU per PDF over {len(pdfs)} PDFs {kinds}", flush=True)
    tenants = [f"spike-{i}" for i in range(args.tenants)]
    stack = spike_stack.Stack(spike_stack.make_base(), tenants, args)
    results = []
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # `finally` stops the stack (`kill` left it running)
    try:
        stack.start()
        warm = asyncio.run(upload_all(stack.api.url, stack.keys, [sources[0] + b"% warm-up\n"], 1))
        wait_final(stack, warm, 180, "warm-up")
        stack.reset()
        idle = idle_cpu(stack)
        print(f"idle stack: {idle:.3f} CPU-s per second", flush=True)
        for mode in modes:
            # fresh bytes per mode: same documents, new content-addressed keys and names
            batch = [p + f"% mode {mode}\n".encode() for p in pdfs]
            results.append(run_mode(stack, mode, batch, parse_cpu, idle, args))
            print(json.dumps({k: v for k, v in results[-1].items() if k not in ("backlog", "pods", "single_pods_created_s")}), flush=True)
    finally:
        if not results:
            print("--- operator log ---\n" + (stack.operator.log_tail(30) if hasattr(stack, "operator") else ""))
        stack.stop(keep=args.keep or not results)
    print()
    print(f"spike: {args.count} uploads, {args.tenants} tenants, maxConcurrent {args.max_concurrent}, "
          f"maxPerTenant {args.max_per_tenant}, runner CPU request {args.cpu_request} (this machine: 2 cores, shared)")
    print(table(results))
    for r in results:
        print(f"CPU-s by component, batch {r['mode']}: {r['cpu_s_by_component']}")
        print(f"API writes by resource, batch {r['mode']}: {r['api_writes_by_resource']}")
    by_mode = {r["mode"]: r for r in results}
    if {"off", "on"} <= set(by_mode):
        off, on = by_mode["off"], by_mode["on"]
        deep_off, deep_on = off["deep_backlog"]["stack_cpu_s_per_pdf"], on["deep_backlog"]["stack_cpu_s_per_pdf"]
        print(f"batch on vs off: {off['stack_cpu_s_per_pdf'] / on['stack_cpu_s_per_pdf']:.2f}x more PDFs per "
              f"CPU-second over the whole burst, "
              + (f"{deep_off / deep_on:.2f}x at a deep backlog (>= {args.deep} not yet final), "
                 if deep_off and deep_on else "no deep-backlog window in both modes, ")
              + f"drain {off['drain_s'] / on['drain_s']:.2f}x faster")
    print("plot:", plot(args.plot, results, f"Spike: {args.count} real-PDF uploads through the API, "
                                           f"{args.tenants} tenants, maxConcurrent {args.max_concurrent}\n"
                                           f"(one real node; this machine's 2 cores, shared)"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = [r["mode"] for r in results if r["succeeded"] != r["pdfs"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
