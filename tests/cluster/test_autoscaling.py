"""Cluster autoscaling, real: Karpenter grows and shrinks the runner pool as the backlog moves, and
nothing is lost when it takes a node away.

Karpenter v1.15.0 with its KWOK cloud provider (hack/localkube/karpenter.py) runs against the
session's local control plane; its nodes are simulated (KWOK, hack/localkube/kwok.py) and the
executor (hack/localkube/executor.py) does the runner pods' work there, each member taking
``member_seconds`` (a parse that takes time). The operator (``python -m schedgen.operator``, this
checkout's code) puts its runner pods on the NodePool's nodes only (label and taint
``schedgen.io/pool=runners``), with a CPU request of one core.

* a burst of 300 ParseJobs from zero runner nodes: Karpenter launches nodes (after the
  KWOKNodeClass's registration delay, a cloud's boot time), the pods bind as they turn Ready, every
  ParseJob ends Succeeded exactly once (the status and the Postgres row agree, one attempt each:
  consolidation never stopped a working runner), the CPU limit bounds the pool (within what
  Karpenter's lagging view of a registering pool lets through), and consolidation removes every
  node afterwards;
* a node taken away under a running batch -- its NodeClaim deleted (Karpenter's forced
  termination: the do-not-disrupt pod is deleted when the NodePool's terminationGracePeriod runs
  out), or the node drained (the eviction API): the member in hand and the members not reached go
  back to the queue without counting an attempt (``Disrupted``, ``BatchEnded``), and every
  ParseJob still ends Succeeded exactly once.

5 to 7 minutes in all on the 2-core machine under load (the cluster's start, the registration
delays, the runs and consolidation).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client
from localkube.executor import Executor
from localkube.karpenter import (
    API_GROUP,
    API_VERSION,
    NODEPOOL_LABEL,
    POOL_KEY,
    POOL_VALUE,
    RUNNER_PLACEMENT_ENV,
    Karpenter,
    node_class,
    node_pool,
)
from localkube.kwok import FAKE_SELECTOR
from localkube.testing import wait_for
from operator_e2e import CONFIGMAP, OPERATOR_NS, ROOT, Cluster, OperatorProcess, operator_env

sys.path.insert(0, str(ROOT / "bench"))
from autoscale_lib import FINAL, Recorder, figures  # noqa: E402

pytestmark = pytest.mark.cluster

POOL = POOL_VALUE
REGISTRATION_DELAY_SECONDS = 20  # the instance's boot time (a cloud's: about 20 to 60 s)
CONSOLIDATE_AFTER = "10s"
TERMINATION_GRACE = "20s"  # a deleted node waits this long for its do-not-disrupt pods
CPU_LIMIT = 16  # four c-4x nodes
NODE_CPU = 4
FIXTURES = ROOT.parent / "shared" / "fixtures" / "up"
REAL = [("UP_MOD_XLS.pdf", "lecture", 30), ("UP_TST_PDF.pdf", "test", 12), ("UP_EXAM_SS.pdf", "exam", 5)]


class Stack:
    def __init__(self, cluster, c: Cluster, karpenter: Karpenter, executor: Executor, operator: OperatorProcess,
                 keys: list[str]):
        self.cluster, self.c, self.karpenter, self.executor, self.operator = cluster, c, karpenter, executor, operator
        self.keys = keys  # the fixtures' S3 keys, as REAL

    def pool_nodes(self) -> list[dict]:
        return self.karpenter.nodes(POOL)

    def pool_claims(self) -> list[dict]:
        return self.karpenter.nodeclaims(POOL)

    def wait_pool_empty(self, timeout: float) -> float:
        t0 = time.monotonic()
        wait_for(lambda: not self.pool_nodes() and not self.pool_claims(), timeout, interval=1,
                 what=f"the pool's nodes to be consolidated away (left: {[n['name'] for n in self.pool_nodes()]})")
        return time.monotonic() - t0

    def submit(self, ns: str, count: int, prefix: str = "pj") -> list[dict]:
        """`count` ParseJobs of the three fixtures in turn, created by 8 threads."""
        def one(i: int) -> dict:
            return self.c.submit(ns, f"{prefix}-{i:03d}", self.keys[i % len(self.keys)])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))


@pytest.fixture(scope="module")
def stack(local_cluster, k8s_api_client, postgres, s3, tmp_path_factory):
    """Karpenter with a runner NodePool, the executor on its nodes, the operator placing runners
    there; everything stopped (and the pool's nodes gone) at the end."""
    for args in (("apply", "-f", str(ROOT / "crds")),
                 ("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io",
                  "crd/clusterkopfpeerings.kopf.dev")):
        done = local_cluster.kubectl(*args, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    core = client.CoreV1Api(k8s_api_client)
    for create in (lambda: core.create_namespace({"metadata": {"name": OPERATOR_NS}}),
                   lambda: core.create_namespaced_config_map(OPERATOR_NS, {"metadata": {"name": CONFIGMAP},
                                                                           "data": {}})):
        try:
            create()
        except client.rest.ApiException as exc:
            if exc.status != 409:
                raise
    keys = [s3.put(FIXTURES / name, key=f"uploads/autoscale/{name}") for name, _, _ in REAL]
    # runner pods run on simulated nodes: no image is pulled or imported
    c = Cluster(local_cluster, k8s_api_client, postgres, s3, "localhost/schedgen-runner:kwok")
    karpenter = Karpenter(local_cluster)
    executor = operator = None
    log_dir = tmp_path_factory.mktemp("autoscaling")
    try:
        karpenter.start()
        karpenter.apply(node_class(POOL, registration_delay=f"{REGISTRATION_DELAY_SECONDS}s"),
                        node_pool(POOL, cpu_limit=CPU_LIMIT, consolidate_after=CONSOLIDATE_AFTER,
                                  termination_grace_period=TERMINATION_GRACE))
        executor = Executor(local_cluster.api_client(), workers=48,
                            node_selector=f"{FAKE_SELECTOR},{NODEPOOL_LABEL}={POOL}").start()
        c.set_runtime(maxConcurrent=100, maxPerTenant=50, admissionsPerSecond=50, admissionBurst=50,
                      queuePositionIntervalSeconds=5, retryBackoffSeconds=1)
        env = operator_env(c, **RUNNER_PLACEMENT_ENV, SCHEDGEN_CPU_REQUEST="1", SCHEDGEN_CPU_LIMIT="1",
                           SCHEDGEN_MEMORY_REQUEST="256Mi", SCHEDGEN_MEMORY_LIMIT="512Mi",
                           # this checkout's operator, whichever venv runs it
                           PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                      if p))
        operator = OperatorProcess(local_cluster, env, log_dir / "operator.log").start()
        yield Stack(local_cluster, c, karpenter, executor, operator, keys)
    finally:
        try:
            if operator is not None and operator.running:
                c.cleanup()  # the ParseJobs' finalizers need the operator
        finally:
            if operator is not None:
                operator.stop()
                print(f"--- operator log {operator.log_path} ---\n{operator.log_tail(30)}")
            try:
                if karpenter.running:
                    karpenter.delete_node_pools(wait=180)
            finally:
                karpenter.stop()
                karpenter.close()
                if executor is not None:
                    executor.stop()
                    print(f"executor: {executor.report()}")
                print(f"Karpenter log: {karpenter.log_path}")


def _all_final(recorder: Recorder, uids: set[str]) -> bool:
    with recorder._lock:
        return all(recorder.parsejobs.get(uid, {}).get("phase") in FINAL for uid in uids)


def _rows_agree(c: Cluster, pj: dict, kind: str, events: int) -> bool:
    status = pj["status"]
    return c.row(pj["metadata"]["uid"]) == ("Succeeded", status["transitionSeq"], 1, kind, events, None)


def test_a_burst_scales_the_pool_up_from_zero_and_consolidation_takes_it_down(stack):
    c, karpenter = stack.c, stack.karpenter
    assert not stack.pool_nodes() and not stack.pool_claims(), "the runner pool must start empty"
    stack.executor.member_seconds = 0.5
    c.set_runtime(maxConcurrent=100, maxPerTenant=50, batchThreshold=4, batchSize=5, batchMaxSize=10)
    namespaces = [c.tenant_namespace(f"burst{i}") for i in range(3)]
    recorder = Recorder(c.api, POOL).start()
    try:
        t0 = time.time()
        created = [pj for ns in namespaces for pj in stack.submit(ns, 100)]
        uids = {pj["metadata"]["uid"] for pj in created}
        wait_for(lambda: _all_final(recorder, uids), 420, interval=1, what="the burst's 300 ParseJobs to end")
        drained = time.time()
        # ... then consolidation: the pool empties (its nodes were all underused, then empty)
        stack.wait_pool_empty(180)
        time.sleep(1.5)  # the recorder's last events
    finally:
        recorder.stop()

    items = [pj for ns in namespaces for pj in c.parsejobs(ns)]
    assert len(items) == 300
    not_ok = {pj["metadata"]["name"]: pj.get("status") for pj in items if pj["status"].get("phase") != "Succeeded"}
    assert not not_ok, not_ok
    # exactly once: one counted run each, one Running and one Succeeded transition, never requeued
    # (consolidation never took a working runner's node: karpenter.sh/do-not-disrupt)
    for pj in items:
        rec = recorder.parsejobs[pj["metadata"]["uid"]]
        assert pj["status"]["attempts"] == 1, pj["status"]
        assert [t[1] for t in rec["transitions"]].count("Succeeded") == 1, rec["transitions"]
        assert not _requeues(rec["transitions"]), rec["transitions"]
    # Postgres agrees: phase, transitionSeq, one attempt, kind and events
    left = {pj["metadata"]["uid"]: (pj, _fixture_key(stack, pj)) for pj in items}

    def rows_agree() -> bool:
        for uid, (pj, want) in list(left.items()):
            if _rows_agree(c, pj, *want):
                del left[uid]
        return not left

    wait_for(rows_agree, 60, interval=1, what="the Postgres rows to agree with the statuses")

    nodes, pods = recorder.node_lives(), recorder.pod_lives(on_pool=False)
    fig = figures(t0, [recorder.parsejobs[u]["final"] for u in uids], 300, nodes, recorder.pod_lives(), time.time(),
                  node_cpu=NODE_CPU)
    print("\n".join(fig.lines()))
    assert len(nodes) >= 2 and fig.peak_nodes >= 2, fig  # scaled out, not just one node
    # the NodePool's CPU limit bounds the pool: the nodes not leaving (a node Karpenter marked for
    # disruption, taint karpenter.sh/disrupted, no longer counts while its replacement comes).
    # Karpenter checks the limit against its view of the pool when it launches, which lags while
    # nodes register: it has launched one node past the limit (5 c-4x under 16 CPU) in some runs;
    # a margin of two nodes for that
    limit_nodes = CPU_LIMIT // NODE_CPU
    assert fig.peak_active_nodes <= limit_nodes + 2, fig
    assert max(s.active for s in recorder.samples) <= limit_nodes + 2
    # a node registers after the KWOKNodeClass's delay, and only then do pods bind there
    for n in nodes:
        assert n.claimed is not None and n.created - n.claimed >= REGISTRATION_DELAY_SECONDS - 1, n
    assert fig.first_node is not None and fig.first_node >= REGISTRATION_DELAY_SECONDS, fig
    # every runner pod ran on a node of the pool (label and taint: nothing else goes there)
    placed = [p for p in pods if p.node]
    assert placed and {p.node for p in placed} <= {n.name for n in nodes}, {p.node for p in placed}
    assert all(p.cpu == 1.0 for p in placed)
    # and it all went away: every node gone after the drain, by consolidation
    assert all(n.gone is not None for n in nodes)
    assert fig.scale_down is not None and fig.scale_down > 0, fig
    print(f"drained in {drained - t0:.0f} s; {len(placed)} runner pods; executor {stack.executor.report()}")


def _requeues(transitions: list[tuple]) -> list[str]:
    """The reasons a ParseJob went back to the queue (its first Queued is "Queued")."""
    return [t[2] for t in transitions if t[1] == "Queued" and t[2] not in (None, "Queued")]


def _fixture_key(stack: Stack, pj: dict) -> tuple[str, int]:
    """(kind, events) of the fixture a ParseJob parses (its key is a copy named after it)."""
    name = pj["spec"]["source"]["s3"]["key"].rsplit("/", 1)[-1]
    return next((kind, events) for fixture, kind, events in REAL if fixture == name)


# ------------------------------------------------------------------ a node taken away mid-batch
def _batch_pod(stack: Stack, ns: str) -> client.V1Pod | None:
    pods = [p for p in stack.c.core.list_namespaced_pod(ns, label_selector="schedgen.io/batch=true").items
            if p.status.phase == "Running" and p.spec.node_name and not p.metadata.deletion_timestamp]
    return pods[0] if len(pods) == 1 else None


def _claim_of(stack: Stack, node: str) -> str:
    claims = [cl["metadata"]["name"] for cl in stack.pool_claims() if (cl.get("status") or {}).get("nodeName") == node]
    assert len(claims) == 1, claims
    return claims[0]


@pytest.mark.parametrize("how", ["nodeclaim-deleted", "node-drained"])
def test_a_node_taken_away_under_a_running_batch_loses_nothing(stack, how):
    c = stack.c
    stack.executor.member_seconds = 2.0  # slow: the node goes while the batch is mid-way
    members = 8
    ns = c.tenant_namespace(how.split("-")[0])
    recorder = Recorder(c.api, POOL).start()
    try:
        # one batch of 8: hold admissions until all 8 wait, then admit them together
        c.set_runtime(maxConcurrent=0, maxPerTenant=16, batchThreshold=2, batchSize=members,
                      batchMaxSize=members)
        created = stack.submit(ns, members, prefix=how.split("-")[0])
        uids = {pj["metadata"]["uid"] for pj in created}
        wait_for(lambda: uids <= set(recorder.parsejobs), 30, what="the ParseJobs to be seen")
        # the operator has them all (its published queue), so they start as one batch
        wait_for(lambda: _waiting_in_queue(c) == members, 90, interval=0.5,
                 what=f"the operator's queue to hold the {members} ParseJobs")
        c.set_runtime(maxConcurrent=16)
        pod = wait_for(lambda: _batch_pod(stack, ns), 120, interval=0.5,
                       what="the batch pod Running on a node of the pool (after the registration delay)")
        node = pod.spec.node_name
        assert node in {n["name"] for n in stack.pool_nodes()}

        def succeeded() -> set[str]:
            with recorder._lock:
                return {u for u in uids if recorder.parsejobs[u]["phase"] == "Succeeded"}

        done_before = wait_for(lambda: (lambda s: s if len(s) >= 2 else None)(succeeded()), 60, interval=0.2,
                               what="two members parsed")
        if how == "nodeclaim-deleted":
            # Karpenter's forced termination: taint, drain; the do-not-disrupt runner pod is deleted
            # when the NodePool's terminationGracePeriod would run out, then the node goes
            claim = _claim_of(stack, node)
            done = stack.cluster.kubectl("delete", "nodeclaim", claim, "--wait=false")
            assert done.returncode == 0, done.stderr
            wait_for(lambda: node not in {n["name"] for n in stack.pool_nodes()}, 120, interval=1,
                     what=f"node {node} gone")
        else:
            # a node drain: cordon, then the eviction API for each pod (DisruptionTarget)
            done = stack.cluster.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force",
                                         "--timeout=90s", check=False, timeout=120)
            assert done.returncode == 0, done.stderr + done.stdout
        wait_for(lambda: _all_final(recorder, uids), 240, interval=1, what="every member to end")
        time.sleep(1)
    finally:
        recorder.stop()

    items = {pj["metadata"]["uid"]: pj for pj in c.parsejobs(ns)}
    transitions = {u: recorder.parsejobs[u]["transitions"] for u in uids}
    report = {items[u]["metadata"]["name"]: transitions[u] for u in uids}
    print(f"{how}: node {node}; parsed before: {len(done_before)}; transitions (seq, phase, reason, attempts): "
          f"{report}; executor {stack.executor.report()}")
    # every ParseJob ends Succeeded exactly once
    for u in uids:
        assert items[u]["status"]["phase"] == "Succeeded", (items[u]["metadata"]["name"], items[u]["status"])
        assert [t[1] for t in transitions[u]].count("Succeeded") == 1, report
    requeued = {u: _requeues(transitions[u]) for u in uids}
    # the members parsed before the node went (and any that finished while it was going): one run
    for u in done_before:
        assert not requeued[u] and items[u]["status"]["attempts"] == 1, report
    # the batch was stopped mid-way: the unfinished members went back to the queue without
    # counting an attempt -- the one in hand Disrupted (its pod stopped by the node's going:
    # evicted (DisruptionTarget) or deleted by Karpenter's forced termination), the ones not
    # reached BatchEnded -- and ran again
    unfinished = {u for u in uids if requeued[u]}
    assert unfinished and not unfinished & done_before, report
    assert all([t[1] for t in transitions[u]].count("Running") == 1 for u in uids - unfinished), report
    reasons = sorted(r for u in unfinished for r in requeued[u])
    assert set(reasons) <= {"Disrupted", "BatchEnded"}, report
    assert all(items[u]["status"]["attempts"] == 1 for u in uids), report
    # Postgres agrees: one counted attempt each, the requeue recorded with its reason
    for u in uids:
        kind, events = _fixture_key(stack, items[u])
        wait_for(lambda: _rows_agree(c, items[u], kind, events), 60, interval=1,
                 what=f"the row of {items[u]['metadata']['name']}")
        rows = _transition_rows(c, u)
        assert [p for _, p, _ in rows].count("Succeeded") == 1, rows
        assert {r for _, p, r in rows if p == "Queued" and r not in (None, "Queued")} == set(requeued[u]), \
            (rows, requeued[u])


def _waiting_in_queue(c: Cluster) -> int | None:
    import json

    summary = c.queue_summary().get("summary")
    return json.loads(summary).get("waiting") if summary else None


def _transition_rows(c: Cluster, uid: str) -> list[tuple[int, str, str | None]]:
    import psycopg

    with psycopg.connect(c.postgres.dsn, autocommit=True) as conn:
        return conn.execute("SELECT seq, phase, reason FROM parse_job_transitions WHERE job_uid = %s ORDER BY seq",
                            (uid,)).fetchall()
