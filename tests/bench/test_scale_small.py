"""A small semester start (bench/scale.py): 1,500 uploads through the API from 12 tenants,
runner pods on 5 KWOK nodes with the executor, the operator with its caps -- no ParseJob lost
or ended twice, rows and events agree with the statuses, the caps never exceeded, tenants
that wait never starved.

Fairness: in every minute, every tenant that waited the whole minute got slot time in
it (the minute's lowest slot-seconds > 0): no tenant starves behind deeper ones. Before
turns counted ParseJobs and batches were capped at a fair share (2026-12-07), tenants with
14 to 16 uploads waiting got none for a whole minute while the deepest held 4 slots.
Jain's index per minute (the full run's goal: >= 0.95) is reported, not asserted: during
the burst's first minutes the tenants' priority mixes differ (high and normal are served
first, by design) and it was 0.55 to 0.71 there, 0.91 to 0.995 after (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_semester_start_1500_parsejobs_no_loss_caps_fairness(tmp_path):
    out = tmp_path / "scale"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    # Admissions capped at 6/s (admissionsPerSecond), below the ~11 uploads/s the API takes
    # here, so the deeper tenants wait through minutes 1 and 2 whatever the machine's speed.
    # Uncapped, the operator kept up with the uploads (8.8 to 10.5 admissions/s) and one CI
    # run had no minute in which two tenants waited throughout: no index to judge.
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "scale.py"), "--system", "schedgen",
                             "--count", "1500", "--tenants", "12", "--nodes", "5", "--max-concurrent", "30",
                             "--run-seconds", "3", "--rate", "6", "--arrival-tau", "30", "--arrival-window", "120",
                             "--deadline", "1500", "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=2400)
    finally:
        if proc.poll() is None:  # interrupted or timed out: SIGTERM makes it stop its stack
            proc.terminate()
            proc.communicate(timeout=120)
    print(stdout[-6000:], stderr[-4000:])
    report = json.loads((out / "report.json").read_text())
    s = report["systems"]["schedgen"]
    c = s["consistency"]
    assert c["parsejobs"] == 1500 and c["uploads_failed"] == 0, c
    assert c["lost"] == 0 and c["duplicated"] == 0 and c["events_mismatch"] == 0, c
    assert c["phases"] == {"Succeeded": 1500}, c
    assert c["k8s_events_per_parsejob"] == {"1": 1500}, c  # one Event per ParseJob
    assert not s["caps_exact"]["exceeded"], s["caps_exact"]
    sampled = s["caps_sampled"]
    assert sampled["samples"] > 0 and sampled["samples_over_maxConcurrent"] == 0, sampled
    assert sampled["samples_over_maxPerTenant"] == 0, sampled
    fair = s["fairness"]
    assert fair["minutes_with_index"] >= 2, fair
    starved = [m for m in fair["minutes"] if m["jain"] is not None and not m["min_slot_s"] > 0]
    assert not starved, starved
    assert (out / "scale.png").stat().st_size > 10_000
    assert proc.returncode == 0
