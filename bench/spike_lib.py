"""The measuring parts of bench/spike.py: distinct PDFs, percentiles and the burst summary,
backlog over time, the apiserver's write counter, and stack CPU (cgroups + process trees).

Pure functions first (unit-tested in tests/bench/test_spike_units.py), then the readers of
/sys/fs/cgroup and /proc, which only make sense next to a running stack.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})
CPUACCT = Path("/sys/fs/cgroup/cpuacct")
UNIFIED = Path("/sys/fs/cgroup/unified")


# ---------------------------------------------------------------- inputs
def distinct_pdf(source: bytes, tag: str) -> bytes:
    """`source` with a PDF comment after its last %%EOF: other bytes (another sha256, another
    content-addressed S3 key), the same document (readers ignore bytes after %%EOF)."""
    if b"%%EOF" not in source[-1024:]:
        raise ValueError("not a complete PDF: no %%EOF in its last KiB")
    if not tag.isascii() or not tag.isprintable() or len(tag) > 200:
        raise ValueError("tag must be at most 200 printable ASCII characters")
    return source + f"\n% schedgen-spike {tag}\n".encode()


def distinct_pdfs(sources: list[bytes], count: int, run_tag: str) -> list[bytes]:
    """`count` PDFs cycling over `sources`, each with distinct bytes (run_tag + index)."""
    return [distinct_pdf(sources[i % len(sources)], f"{run_tag}-{i}") for i in range(count)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- statistics
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank on the sorted values (same as the other benchmarks); nan when empty."""
    if not values:
        return float("nan")
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class Track:
    """One upload as the benchmark saw it (seconds on this machine's clock)."""

    name: str
    tenant: str
    uploaded: float  # just before the POST was sent
    running: float | None = None  # first seen Running (watch)
    done: float | None = None  # first seen in a final phase (watch)
    phase: str | None = None
    reason: str | None = None  # status.error's reason/code when it did not succeed


@dataclass
class BurstSummary:
    count: int
    succeeded: int
    drain_seconds: float
    pdfs_per_second: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    drain95_seconds: float = float("nan")  # first upload -> 95 % of the uploads final: the tail aside
    failed: dict[str, int] = field(default_factory=dict)


def summarize(tracks: list[Track]) -> BurstSummary:
    """Upload -> Succeeded percentiles, and the drain: first upload sent -> last job final."""
    if not tracks:
        raise ValueError("no uploads to summarize")
    ok = [t for t in tracks if t.phase == "Succeeded" and t.done is not None]
    failed: dict[str, int] = {}
    for t in tracks:
        if t.phase != "Succeeded":
            why = f"{t.phase} ({t.reason})" if t.reason else str(t.phase)
            failed[why] = failed.get(why, 0) + 1
    start = min(t.uploaded for t in tracks)
    ends = [t.done for t in tracks if t.done is not None]
    drain = (max(ends) - start) if ends else float("nan")
    latencies = [t.done - t.uploaded for t in ok]
    return BurstSummary(
        count=len(tracks), succeeded=len(ok), drain_seconds=drain,
        pdfs_per_second=len(ok) / drain if drain and drain > 0 else float("nan"),
        latency_p50=percentile(latencies, 0.5), latency_p95=percentile(latencies, 0.95),
        latency_max=max(latencies, default=float("nan")),
        drain95_seconds=percentile([e - start for e in ends], 0.95) if ends else float("nan"), failed=failed)


def backlog(tracks: list[Track], step: float = 1.0) -> dict[str, list[float]]:
    """Waiting / running / completed counts every `step` s from the first upload: an upload
    waits until seen Running (or final, when Running was never seen), runs until final."""
    if not tracks:
        return {"t": [], "waiting": [], "running": [], "completed": []}
    start = min(t.uploaded for t in tracks)
    end = max(max(t.done or t.uploaded, t.uploaded) for t in tracks)
    steps = int(math.ceil((end - start) / step)) + 1
    out: dict[str, list[float]] = {"t": [], "waiting": [], "running": [], "completed": []}
    for i in range(steps):
        now = start + i * step
        waiting = running = completed = 0
        for t in tracks:
            if t.uploaded > now:
                continue
            began = t.running if t.running is not None else t.done
            if t.done is not None and t.done <= now:
                completed += 1
            elif began is not None and began <= now:
                running += 1
            else:
                waiting += 1
        out["t"].append(i * step)
        out["waiting"].append(waiting)
        out["running"].append(running)
        out["completed"].append(completed)
    return out


def deep_window(tracks: list[Track], depth: int) -> tuple[float, float] | None:
    """(start, end) of the deep-backlog phase: from the last upload sent to the last
    moment at least `depth` uploads were not yet final (the completion that took the
    backlog below `depth`). None when the backlog never stayed that deep past the uploads."""
    start = max(t.uploaded for t in tracks)
    done = sorted(t.done for t in tracks if t.done is not None)
    if not 1 <= depth <= len(tracks) or len(tracks) - depth >= len(done):
        return None
    end = done[len(tracks) - depth]  # after it, depth - 1 are left
    return (start, end) if end > start else None


def completed_between(tracks: list[Track], start: float, end: float) -> int:
    return sum(1 for t in tracks if t.done is not None and start < t.done <= end)


def value_at(samples: list[tuple[float, float]], at: float) -> float:
    """A cumulative counter sampled as (time, value), linearly interpolated at `at`."""
    if not samples:
        raise ValueError("no samples")
    if at <= samples[0][0]:
        return samples[0][1]
    for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
        if t0 <= at <= t1:
            return v0 + (v1 - v0) * ((at - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return samples[-1][1]


# ---------------------------------------------------------------- apiserver metrics
def write_requests(metrics_text: str) -> dict[str, float]:
    """apiserver_request_total with a write verb, summed by resource (all clients, all codes)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name != "apiserver_request":
            continue
        for s in fam.samples:
            if s.name != "apiserver_request_total" or s.labels.get("verb", "").upper() not in WRITE_VERBS:
                continue
            res = s.labels.get("resource", "") + (f"/{s.labels['subresource']}" if s.labels.get("subresource") else "")
            out[res] = out.get(res, 0.0) + s.value
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def minio_requests(metrics_text: str) -> dict[str, float]:
    """From MinIO's /minio/metrics/v3/api/requests: PutObject count and how many took over
    1 s / 10 s to the first byte (cumulative histogram), and canceled/error totals. Tells a
    slow MinIO from requests that never reached it (a client timeout with no slow PUT)."""
    import re

    out = {"put": 0.0, "put_over_1s": 0.0, "put_over_10s": 0.0, "canceled": 0.0, "errors": 0.0}
    buckets: dict[str, float] = {}
    line_re = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')
    for line in metrics_text.splitlines():
        m = line_re.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))
        if name == "minio_api_requests_ttfb_seconds_distribution" and labels.get("name") == "PutObject":
            buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
        elif name == "minio_api_requests_canceled_total":
            out["canceled"] += value
        elif name.startswith("minio_api_requests_") and name.endswith("errors_total"):
            out["errors"] += value
    total = buckets.get("+Inf", 0.0)
    out["put"] = total
    out["put_over_1s"] = total - buckets.get("1.000", total)
    out["put_over_10s"] = total - buckets.get("10.000", total)
    return out


def conntrack_stats(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack (one hex row per CPU) summed: the counters that show
    dropped or clashing connections (insert_failed, drop, early_drop, invalid, clashres)."""
    lines = [line.split() for line in text.strip().splitlines()]
    if not lines:
        return {}
    head, rows = lines[0], lines[1:]
    wanted = ("insert_failed", "drop", "early_drop", "invalid", "clashres")
    return {k: sum(int(r[head.index(k)], 16) for r in rows) for k in wanted if k in head}


# ---------------------------------------------------------------- CPU of the stack
def cgroup_usage_seconds(rel: str) -> float:
    """Cumulative CPU of cgroup `rel` and all its descendants, exited or removed ones
    included (v1 cpuacct charges every ancestor as it goes; v2 cpu.stat likewise)."""
    v1 = CPUACCT / rel.strip("/") / "cpuacct.usage"
    if v1.exists():
        return int(v1.read_text()) / 1e9
    v2 = UNIFIED / rel.strip("/") / "cpu.stat"
    if not v2.exists():
        v2 = Path("/sys/fs/cgroup") / rel.strip("/") / "cpu.stat"
    for line in v2.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    raise FileNotFoundError(f"no CPU accounting for cgroup {rel}")


def in_cgroup(pid: int, rel: str) -> bool:
    """Whether process `pid` sits in cgroup `rel` or below (cpuacct, else the v2 line)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return False
    prefix = "/" + rel.strip("/")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpuacct" in controllers.split(",") or controllers == "":
            if path == prefix or path.startswith(prefix + "/"):
                return True
    return False


def tree_seconds(pid: int, skip_cgroup: str | None = None) -> float:
    """CPU of a process and its live descendants, with the children they reaped
    (cpu_times' children_user/system): a parent that reaps its workers (Postgres) keeps
    their time. Processes inside `skip_cgroup` are left out (counted by the cgroup)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        if skip_cgroup and in_cgroup(p.pid, skip_cgroup):
            continue
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class StackCpu:
    """CPU seconds of the stack by component: each node's cgroup (kubelet, containerd, its
    shims, runc and every pod, exited ones included), and the process trees of the control
    plane, operator, API, Postgres and MinIO (pids the benchmark started)."""

    def __init__(self, node_cgroups: dict[str, str], roots: dict[str, int]):
        self.node_cgroups, self.roots = node_cgroups, roots

    def sample(self, stop: "threading.Event", into: list[tuple[float, float]], step: float = 1.0) -> None:
        """(time.time(), total CPU-s) every `step` s until `stop` is set (run in a thread)."""
        while True:
            into.append((time.time(), sum(self.read().values())))
            if stop.wait(step):
                into.append((time.time(), sum(self.read().values())))
                return

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, rel in self.node_cgroups.items():
            pods = f"{rel}/kubepods"
            out[f"{name}: pods"] = cgroup_usage_seconds(pods) if (CPUACCT / pods.strip("/")).exists() else 0.0
            out[f"{name}: kubelet+containerd+shims"] = cgroup_usage_seconds(rel) - out[f"{name}: pods"]
        skip = "/" + "/".join(next(iter(self.node_cgroups.values()), "/x").strip("/").split("/")[:2])
        for name, pid in self.roots.items():
            out[name] = out.get(name, 0.0) + tree_seconds(pid, skip_cgroup=skip)
        return out
