"""Cluster autoscaling, measured: a burst of uploads from zero runner nodes, Karpenter (its KWOK
cloud provider: simulated nodes, a real autoscaler) growing the runner pool and consolidating it
away afterwards.

    PYTHONPATH=src .venv/bin/python bench/autoscale.py [--count 2000] [--tenants 5]
        [--registration-delay 30] [--cpu-limit 64] [--member-seconds 2] [--out docs/autoscale]

What runs (all on this machine, started and stopped by pid):

* Postgres and MinIO (hack/devservices), the control plane of hack/localkube (no real node:
  every runner pod runs on a node Karpenter makes);
* Karpenter v1.15.0 with its KWOK provider (hack/localkube/karpenter.py) and KWOK itself, which
  runs the Nodes Karpenter creates; a KWOKNodeClass with ``--registration-delay`` (the
  instance's boot time) and a NodePool ``runners`` of c-4x-amd64-linux on-demand instances (4
  CPU, 8 GiB), label and taint ``schedgen.io/pool=runners``, CPU limit ``--cpu-limit``,
  ``consolidationPolicy: WhenEmptyOrUnderutilized``, ``consolidateAfter`` ``--consolidate-after``;
* the executor (hack/localkube/executor.py) doing the runner's work for the pods on those nodes:
  GET the PDF from MinIO by its presigned URL, parse it (schedgen's parser, cached per content),
  hold ``--member-seconds`` (a parse's time on a real node), PUT the result object, end the pod
  with the runner's exit code and summary;
* the operator (``python -m schedgen.operator``, this checkout) with the runner placement the
  chart's ``runner.nodeSelector`` / ``runner.tolerations`` set (SCHEDGEN_NODE_SELECTOR /
  SCHEDGEN_RUNNER_TOLERATIONS: the pool), a CPU request of one core per runner, its
  pending-runner budget at the chart's defaults (10 % of the waiting, 10 to 100).

The burst: ``--count`` uploads -- what an upload through the API makes: the PDF in S3 under the
tenant's prefix and a ParseJob -- spread over ``--tenants`` tenant namespaces (the three UP
fixtures in turn), created by 16 threads as fast as the API server takes them.

What it reports (JSON ``<out>/report.json``, PNG ``<png>``; definitions in
bench/autoscale_lib.py): time to the first NodeClaim and to the first node Ready, peak nodes,
node-seconds used (from each NodeClaim's launch to its Node gone: what a cloud bills) against
the ideal (the runner pods' requested CPU-seconds over a node's allocatable CPU), drain time
(first ParseJob created to the last final), the time from the drain to the last node gone
(consolidation), the most runner pods ever waiting for a node, and that every ParseJob ended
Succeeded exactly once with its Postgres row agreeing. Every figure comes from simulated (KWOK)
nodes with a real Karpenter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "src", ROOT / "hack", ROOT / "tests" / "support", ROOT / "tests", ROOT / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from autoscale_lib import FINAL, Recorder, figures, plot  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]
POOL = "runners"


def log(msg: str) -> None:
    print(f"[autoscale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--tenants", type=int, default=5)
    ap.add_argument("--registration-delay", type=int, default=30, help="s: the KWOKNodeClass's nodeRegistrationDelay")
    ap.add_argument("--cpu-limit", type=int, default=64, help="the NodePool's CPU limit (c-4x nodes: 4 CPU each)")
    ap.add_argument("--consolidate-after", default="30s")
    ap.add_argument("--member-seconds", type=float, default=2.0, help="each parse takes this long on a node")
    ap.add_argument("--max-concurrent", type=int, default=500)
    ap.add_argument("--max-per-tenant", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--batch-max-size", type=int, default=10)
    ap.add_argument("--executor-workers", type=int, default=96)
    ap.add_argument("--deadline", type=float, default=1800, help="s: give up waiting for the drain after this")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "autoscale")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "autoscale.png")
    ap.add_argument("--keep", action="store_true", help="keep the state dir")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args)
    return 0 if report["ok"] else 1


def run(args) -> dict:
    import devservices
    from conftest import S3, TEST_BUCKET
    from kubernetes import client
    from localkube.cluster import LocalCluster
    from localkube.executor import Executor
    from localkube.karpenter import NODEPOOL_LABEL, RUNNER_PLACEMENT_ENV, Karpenter, node_class, node_pool
    from localkube.kwok import FAKE_SELECTOR
    from operator_e2e import CONFIGMAP, OPERATOR_NS, Cluster, OperatorProcess, operator_env
    from schedgen import db

    base = Path(tempfile.mkdtemp(prefix="schedgen-autoscale-"))
    os.chmod(base, 0o711)
    pg = devservices.PostgresServer(base / "pg")
    s3srv = devservices.S3Server(base / "s3")
    cluster = LocalCluster(state_dir=base / "kube", session=True)
    karpenter = executor = operator = recorder = None
    try:
        pg.start()
        with db.connect(pg.dsn) as conn:
            db.migrate(conn)
        s3srv.start()
        s3 = S3(s3srv)
        s3.client.create_bucket(Bucket=TEST_BUCKET)
        s3srv.create_component_users(TEST_BUCKET)
        log("starting the control plane ...")
        cluster.start()
        api = cluster.api_client()
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io",
                        "crd/clusterkopfpeerings.kopf.dev")
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": OPERATOR_NS}})
        core.create_namespaced_config_map(OPERATOR_NS, {"metadata": {"name": CONFIGMAP}, "data": {}})
        c = Cluster(cluster, api, pg, s3, "localhost/schedgen-runner:kwok")
        karpenter = Karpenter(cluster).start()
        pool = node_pool(POOL, cpu_limit=args.cpu_limit, consolidate_after=args.consolidate_after)
        nclass = node_class(POOL, registration_delay=f"{args.registration_delay}s")
        karpenter.apply(nclass, pool)
        executor = Executor(_api_client(cluster, pool=args.executor_workers + 8), workers=args.executor_workers,
                            node_selector=f"{FAKE_SELECTOR},{NODEPOOL_LABEL}={POOL}",
                            member_seconds=args.member_seconds).start()
        runtime = dict(maxConcurrent=args.max_concurrent, maxPerTenant=args.max_per_tenant, admissionsPerSecond=100,
                       admissionBurst=100, batchThreshold=4, batchSize=args.batch_size,
                       batchMaxSize=args.batch_max_size, queuePositionIntervalSeconds=10, retryBackoffSeconds=1,
                       # keep every Succeeded ParseJob until it is checked (the default keeps 1,000)
                       retentionSucceededCount=args.count * 2)
        c.set_runtime(**runtime)
        env = operator_env(c, **RUNNER_PLACEMENT_ENV, SCHEDGEN_CPU_REQUEST="1", SCHEDGEN_CPU_LIMIT="1",
                           SCHEDGEN_MEMORY_REQUEST="256Mi", SCHEDGEN_MEMORY_LIMIT="512Mi",
                           PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                      if p))
        operator = OperatorProcess(cluster, env, base / "operator.log").start()

        namespaces = [c.tenant_namespace(f"tenant{i}") for i in range(args.tenants)]
        keys = {}
        for ns in namespaces:  # each tenant's uploads, under its own prefix (as the API puts them)
            for name, _, _ in REAL:
                keys[(ns, name)] = s3.put(FIXTURES / name, key=f"uploads/namespaces/{ns}/{name}")
        jobs = [(namespaces[i % len(namespaces)], f"up-{i:05d}", REAL[i % len(REAL)][0]) for i in range(args.count)]
        log(f"the pool is empty: {len(karpenter.nodes(POOL))} nodes; burst of {args.count} uploads from "
            f"{args.tenants} tenants")
        recorder = Recorder(c.api, POOL).start()
        load_at_start = os.getloadavg()
        t0 = time.time()

        def submit(job):
            ns, name, fixture = job
            for attempt in range(5):
                try:
                    return c.submit(ns, name, keys[(ns, fixture)])
                except client.rest.ApiException as exc:
                    if exc.status == 409 or attempt == 4:
                        raise
                    time.sleep(0.5 * (attempt + 1))

        with ThreadPoolExecutor(16) as threads:
            created = list(threads.map(submit, jobs))
        sent = time.time()
        uids = {pj["metadata"]["uid"] for pj in created}
        log(f"{len(created)} ParseJobs created in {sent - t0:.1f} s; waiting for the drain ...")
        last_log = 0.0
        while True:
            with recorder._lock:
                finals = sum(1 for u in uids if recorder.parsejobs.get(u, {}).get("phase") in FINAL)
            if finals == len(uids):
                break
            if time.time() - t0 > args.deadline:
                raise SystemExit(f"not drained after {args.deadline:.0f} s: {finals}/{len(uids)} final")
            if time.time() - last_log > 15:
                s = recorder.sample()
                log(f"+{time.time() - t0:4.0f}s final {finals}/{len(uids)}, waiting {s.waiting}, running "
                    f"{s.running}; NodeClaims {s.claims}, nodes {s.nodes} ({s.ready} Ready); runner pods waiting "
                    f"for a node {s.pods_pending}")
                last_log = time.time()
            time.sleep(1)
        drained = time.time()
        log(f"drained in {drained - t0:.0f} s; waiting for consolidation to empty the pool ...")
        while karpenter.nodes(POOL) or karpenter.nodeclaims(POOL):
            if time.time() - drained > 900:
                raise SystemExit("the pool was not consolidated away within 15 min of the drain")
            time.sleep(2)
        time.sleep(2)  # the recorder's last events
        end = time.time()
        recorder.stop()

        # ---------------------------------------------------------------- exactly once
        items = [pj for ns in namespaces for pj in c.parsejobs(ns)]
        by_uid = {pj["metadata"]["uid"]: pj for pj in items}
        phases: dict[str, int] = {}
        attempts: dict[str, int] = {}
        for u in uids:  # as the watch saw each ParseJob last (the statuses, for those still listed)
            status = by_uid[u]["status"] if u in by_uid else {}
            phase = status.get("phase") or recorder.parsejobs[u]["phase"]
            phases[phase] = phases.get(phase, 0) + 1
            n = str(status.get("attempts") or recorder.parsejobs[u]["attempts"])
            attempts[n] = attempts.get(n, 0) + 1
        succeeded_transitions = {u: [t[1] for t in recorder.parsejobs[u]["transitions"]].count("Succeeded")
                                 for u in uids}
        requeues = {}
        for u in uids:
            for t in recorder.parsejobs[u]["transitions"]:
                if t[1] == "Queued" and t[2] not in (None, "Queued"):
                    requeues[t[2]] = requeues.get(t[2], 0) + 1
        kind_of = {name: (kind, events) for name, kind, events in REAL}
        fixture_of = {pj["metadata"]["uid"]: job[2] for pj, job in zip(created, jobs)}
        rows_disagree = 0
        for u in uids:  # every row, also of a ParseJob the retention might have removed
            kind, events = kind_of[fixture_of[u]]
            seq = max(t[0] for t in recorder.parsejobs[u]["transitions"])
            if c.row(u) != ("Succeeded", seq, 1, kind, events, None):
                rows_disagree += 1

        # ---------------------------------------------------------------- figures
        nodes, pods = recorder.node_lives(), recorder.pod_lives()
        node_cpu = max((n.cpu for n in nodes), default=0.0)
        fig = figures(t0, [recorder.parsejobs[u]["final"] for u in uids], phases.get("Succeeded", 0), nodes, pods,
                      end, node_cpu=node_cpu)
        peak_pending = max((s.pods_pending for s in recorder.samples), default=0)
        peak_claims = max((s.claims for s in recorder.samples), default=0)
        consistency = {"parsejobs": len(uids), "listed_at_the_end": len(items), "phases": phases, "attempts": attempts,
                       "succeeded_transitions_not_one": sum(1 for v in succeeded_transitions.values() if v != 1),
                       "requeues": requeues, "postgres_rows_disagree": rows_disagree}
        ok = (len(uids) == args.count and phases == {"Succeeded": args.count} and rows_disagree == 0
              and consistency["succeeded_transitions_not_one"] == 0 and fig.scale_down is not None)
        report = {
            "what": "a burst of uploads from zero runner nodes; simulated (KWOK) nodes with a real Karpenter",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "commit": _commit(),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
            "settings": {"count": args.count, "tenants": args.tenants, "registration_delay_s": args.registration_delay,
                         "cpu_limit": args.cpu_limit, "consolidate_after": args.consolidate_after,
                         "member_seconds": args.member_seconds, "runner_cpu_request": 1, "runtime": runtime,
                         "instance": "c-4x-amd64-linux on-demand (KWOK provider)", "node_allocatable_cpu": node_cpu,
                         "karpenter": "v1.15.0 (sigs.k8s.io/karpenter/kwok)",
                         "pending_runner_budget": "10 % of the waiting, 10 to 100 (chart defaults)"},
            "figures": {
                "time_to_first_nodeclaim_s": _r(fig.first_claim), "time_to_first_node_ready_s": _r(fig.first_node),
                "peak_nodes": fig.peak_nodes, "peak_nodeclaims": peak_claims,
                "node_seconds_used": _r(fig.node_seconds), "node_seconds_from_registration": _r(
                    fig.node_seconds_registered),
                "ideal_node_seconds": _r(fig.ideal_node_seconds), "efficiency": _r(fig.efficiency, 3),
                "drain_s": _r(fig.drain), "uploads_created_in_s": _r(sent - t0),
                "last_node_gone_after_drain_s": _r(fig.scale_down), "runner_pods": fig.pods,
                "peak_runner_pods_waiting_for_a_node": peak_pending, "nodes_launched": len(nodes)},
            "consistency": consistency,
            "executor": executor.stats(),
            "nodes": [vars(n) for n in nodes],
            "samples": [vars(s) for s in recorder.samples],
            "ok": ok,
        }
        for line in fig.lines():
            log(line)
        log(f"peak runner pods waiting for a node: {peak_pending}; consistency {consistency}")
        args.png.parent.mkdir(parents=True, exist_ok=True)
        marks = {"last upload created": sent, "drained": drained}
        if fig.first_node is not None:
            marks["first node Ready"] = t0 + fig.first_node
        plot(args.png, recorder.samples, t0,
             f"{args.count} uploads from zero runner nodes: Karpenter v1.15.0 on simulated (KWOK) nodes, "
             f"c-4x (4 CPU), registration delay {args.registration_delay} s, CPU limit {args.cpu_limit}\n"
             f"first node Ready {_s(fig.first_node)}, peak {fig.peak_nodes} nodes, drained {_s(fig.drain)}, "
             f"node-seconds {fig.node_seconds:.0f} (ideal {fig.ideal_node_seconds:.0f}), "
             f"pool empty {_s(fig.scale_down)} after the drain",
             marks=marks, cpu_limit_nodes=args.cpu_limit / 4)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")  # before the clean-up
        log(f"report: {args.out / 'report.json'}; plot: {args.png}")
        return report
    finally:
        if recorder is not None:
            recorder.stop()
        if operator is not None:
            try:
                c.cleanup(timeout=120)
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup: {exc}")
            operator.stop()
        if karpenter is not None:
            try:
                if karpenter.running:
                    karpenter.delete_node_pools(wait=120)
            except Exception as exc:  # noqa: BLE001
                log(f"deleting the node pools: {exc}")
            karpenter.stop()
        if executor is not None:
            executor.stop()
        for thing in (cluster, s3srv, pg):
            try:
                thing.stop()
            except Exception as exc:  # noqa: BLE001
                log(f"stopping {type(thing).__name__}: {exc}")
        if args.keep:
            log(f"state dir kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _api_client(cluster, pool: int):
    """An admin ApiClient with a connection pool for `pool` threads (the executor's)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


def _s(value) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def _r(value, digits: int = 1):
    return None if value is None else round(value, digits)


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
