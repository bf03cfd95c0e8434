"""The pure parts of bench/autoscale.py (bench/autoscale_lib.py): the figures of a burst on an
autoscaled pool (time to first node, peak nodes, node-seconds against the ideal, drain) and what
the Recorder keeps of the watch events it is given."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from autoscale_lib import (  # noqa: E402
    NodeLife,
    PodLife,
    Recorder,
    cpu,
    epoch,
    figures,
    ideal_node_seconds,
    node_is_leaving,
    node_is_ready,
    node_seconds,
    peak_concurrent,
    plot,
    pod_life,
)

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_epoch_and_cpu_quantities():
    assert epoch("2027-01-15T08:00:00Z") == T
    assert epoch("2027-01-15T08:00:01.250000Z") == T + 1.25
    assert epoch(None) is None and epoch("") is None
    assert cpu("4") == 4.0 and cpu("250m") == 0.25 and cpu("1.5") == 1.5 and cpu(None) == 0.0


def test_peak_concurrent_counts_overlaps_and_open_intervals():
    assert peak_concurrent([]) == 0
    assert peak_concurrent([(0, 10), (5, 15), (12, 20)]) == 2
    assert peak_concurrent([(0, 10), (10, 20)]) == 1  # one ends as the other starts
    assert peak_concurrent([(0, None), (1, None), (2, 3)], end=5) == 3
    assert peak_concurrent([(0, None), (1, 2)]) == 2  # open, no end: counted from its start


def test_node_seconds_from_launch_or_registration_and_the_ideal():
    nodes = [NodeLife("a", claimed=0, created=20, ready=21, gone=120, cpu=4),
             NodeLife("b", claimed=30, created=50, ready=51, gone=None, cpu=4)]
    assert node_seconds(nodes, end=150) == 120 + 120
    assert node_seconds(nodes, end=150, registered=True) == 100 + 100
    pods = [PodLife("p1", node="a", cpu=1, started=25, finished=65),  # 40 CPU-s
            PodLife("p2", node="a", cpu=1, started=25, finished=105),  # 80
            PodLife("p3", node="b", cpu=0.5, started=60, finished=100),  # 20
            PodLife("p4", node="b", cpu=1, started=60, finished=None)]  # never ended: not counted
    assert ideal_node_seconds(pods, node_cpu=4) == pytest.approx(140 / 4)
    assert math.isnan(ideal_node_seconds(pods, node_cpu=0))


def test_figures_of_a_burst():
    nodes = [NodeLife("a", claimed=T + 2, created=T + 32, ready=T + 33, gone=T + 140, cpu=4),
             NodeLife("b", claimed=T + 2, created=T + 32, ready=T + 34, gone=T + 150, cpu=4),
             NodeLife("c", claimed=T + 40, created=T + 70, ready=T + 71, gone=T + 150, cpu=4)]
    pods = [PodLife(f"p{i}", node="a", cpu=1, started=T + 35, finished=T + 95) for i in range(6)]
    finals = [T + 60, T + 100, T + 110]
    fig = figures(T, finals, 3, nodes, pods, end=T + 200)
    assert fig.first_claim == 2 and fig.first_node == 33
    assert fig.peak_nodes == 3 and fig.node_cpu == 4
    assert fig.node_seconds == 138 + 148 + 110
    assert fig.node_seconds_registered == 108 + 118 + 80
    assert fig.ideal_node_seconds == 6 * 60 / 4
    assert fig.efficiency == pytest.approx(90 / 396)
    assert fig.drain == 110 and fig.scale_down == 40
    lines = "\n".join(fig.lines())
    assert "peak nodes: 3 (4 CPU each; 3 not leaving)" in lines and "efficiency 23%" in lines
    assert fig.peak_active_nodes == 3
    # a node marked for disruption (taint karpenter.sh/disrupted) while its replacement comes:
    # both exist, only the replacement counts towards the NodePool's limits
    moving = [NodeLife("a", created=T, leaving=T + 50, gone=T + 80), NodeLife("b", created=T + 60, gone=None)]
    moved = figures(T, finals, 3, moving, pods, end=T + 200)
    assert (moved.peak_nodes, moved.peak_active_nodes) == (2, 1)
    # a ParseJob that never ended: no drain time; a node still there: no scale-down time
    unfinished = figures(T, [T + 60, None], 1, nodes[:1] + [NodeLife("d", claimed=T, created=T + 30)], pods, T + 200)
    assert unfinished.drain is None and unfinished.scale_down is None


def test_node_readiness_and_pod_lives_from_objects():
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"taints": []}}
    assert node_is_ready(ready)
    for key in ("node.kubernetes.io/not-ready", "karpenter.sh/unregistered"):
        assert not node_is_ready({**ready, "spec": {"taints": [{"key": key, "effect": "NoSchedule"}]}})
    assert node_is_ready({**ready, "spec": {"taints": [{"key": "schedgen.io/pool", "effect": "NoSchedule"}]}})
    assert not node_is_leaving(ready)
    assert node_is_leaving({**ready, "spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}})
    assert node_is_leaving({**ready, "metadata": {"deletionTimestamp": "2027-01-15T08:00:00Z"}})
    pod = {"metadata": {"name": "p", "creationTimestamp": "2027-01-15T08:00:00Z"},
           "spec": {"nodeName": "n", "containers": [{"resources": {"requests": {"cpu": "1"}}}]},
           "status": {"containerStatuses": [{"state": {"terminated": {
               "startedAt": "2027-01-15T08:00:05Z", "finishedAt": "2027-01-15T08:00:25Z"}}}]}}
    life = pod_life(pod)
    assert (life.node, life.cpu, life.created, life.started, life.finished) == ("n", 1.0, T, T + 5, T + 25)


def test_the_recorder_keeps_lives_transitions_and_samples(tmp_path):
    now = [T + 50]
    rec = Recorder(api_client=None, pool="runners", clock=lambda: now[0])
    claim = {"metadata": {"name": "runners-abc", "creationTimestamp": "2027-01-15T08:00:02Z"}, "status": {}}
    rec._on_claim("ADDED", claim)
    node = {"metadata": {"name": "kwok-runners-abc-x-1", "creationTimestamp": "2027-01-15T08:00:22Z",
                         "labels": {"kubernetes.io/hostname": "runners-abc"}},
            "spec": {"taints": [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]},
            "status": {"allocatable": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    rec._on_node("ADDED", node)
    assert rec.nodes["kwok-runners-abc-x-1"].claimed == T + 2 and rec.nodes["kwok-runners-abc-x-1"].ready is None
    now[0] = T + 53
    rec._on_node("MODIFIED", {**node, "spec": {"taints": []}})
    assert rec.nodes["kwok-runners-abc-x-1"].ready == T + 53 and rec.nodes["kwok-runners-abc-x-1"].cpu == 4
    rec._on_claim("MODIFIED", {**claim, "status": {"nodeName": "kwok-runners-abc-x-1"}})
    assert rec.sample().active == 1
    pending = {"metadata": {"name": "p", "uid": "u1"}, "spec": {"containers": []}, "status": {"phase": "Pending"}}
    rec._on_pod("ADDED", pending)
    pj = {"metadata": {"name": "pj", "namespace": "ns", "uid": "j1", "creationTimestamp": "2027-01-15T08:00:00Z"}}
    rec._on_parsejob("ADDED", pj)
    sample = rec.sample()
    assert (sample.waiting, sample.running, sample.final, sample.claims, sample.nodes, sample.ready,
            sample.pods_pending) == (1, 0, 0, 1, 1, 1, 1)
    running = {**pj, "status": {"phase": "Running", "transitionSeq": 2, "attempts": 1,
                                "history": [{"seq": 1, "phase": "Queued", "reason": "Queued"},
                                            {"seq": 2, "phase": "Running", "reason": "Admitted"}]}}
    rec._on_parsejob("MODIFIED", running)
    rec._on_parsejob("MODIFIED", running)  # the same transition seen twice: once
    requeued = {**pj, "status": {"phase": "Queued", "transitionSeq": 3, "attempts": 0,
                                 "history": [{"seq": 2, "phase": "Running", "reason": "Admitted"},
                                             {"seq": 3, "phase": "Queued", "reason": "Disrupted"}]}}
    rec._on_parsejob("MODIFIED", requeued)
    now[0] = T + 90
    rec._on_parsejob("MODIFIED", {**pj, "status": {"phase": "Succeeded", "transitionSeq": 5, "attempts": 1,
                                                    "history": [{"seq": 5, "phase": "Succeeded",
                                                                 "reason": "Completed"}]}})
    assert rec.parsejobs["j1"]["transitions"] == [(2, "Running", "Admitted", 1), (3, "Queued", "Disrupted", 0),
                                                  (5, "Succeeded", "Completed", 1)]
    assert rec.parsejobs["j1"]["final"] == T + 90
    now[0] = T + 110
    rec._on_node("MODIFIED", {**node, "spec": {"taints": [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}]}})
    assert rec.nodes["kwok-runners-abc-x-1"].leaving == T + 110
    assert (rec.sample().nodes, rec.sample().active) == (1, 0)
    now[0] = T + 120
    rec._on_node("DELETED", node)
    rec._on_claim("DELETED", claim)
    (life,) = rec.node_lives()
    assert (life.claimed, life.created, life.ready, life.gone) == (T + 2, T + 22, T + 53, T + 120)
    assert rec.sample().nodes == 0 and rec.sample().final == 1
    rec.samples = [rec.sample()]
    path = plot(tmp_path / "x.png", rec.samples, T, "test", marks={"first node": T + 53}, cpu_limit_nodes=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
