"""CLI behind ``hack/cluster``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from . import build as _build
from .cluster import LocalCluster, default_state_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/cluster", description="local Kubernetes control plane")
    ap.add_argument("--state-dir", default=os.environ.get("SCHEDGEN_CLUSTER_DIR") or str(default_state_dir()),
                    help="where certs, etcd data, logs and state.json live (default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse the pinned binaries")
    b.add_argument("--force", action="store_true")
    b.add_argument("-j", "--jobs", type=int, default=2)
    u = sub.add_parser("up", help="start the control plane (and node agents)")
    u.add_argument("--nodes", type=int, default=1, help="node agents to start (node-1..N); 0 for none")
    u.add_argument("--node-cpu", default="2")
    u.add_argument("--node-memory", default="4Gi")
    u.add_argument("--fresh", action="store_true", help="wipe the state dir (etcd data, certs) first")
    u.add_argument("--image-map", help="YAML file merged over the default image map")
    d = sub.add_parser("down", help="stop everything started by 'up' (by pid)")
    d.add_argument("--purge", action="store_true", help="also delete the state dir")
    sub.add_parser("status")
    sub.add_parser("env", help="print 'export KUBECONFIG=...'")
    a = sub.add_parser("add-node", help="register one more node (simulates autoscaling)")
    a.add_argument("name")
    a.add_argument("--cpu", default="2")
    a.add_argument("--memory", default="4Gi")
    a.add_argument("--pods", type=int, default=110)
    k = sub.add_parser("kubectl", help="run kubectl against the cluster")
    k.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)

    if ns.cmd == "build":
        t0 = time.monotonic()
        bdir = _build.build(force=ns.force, jobs=ns.jobs)
        du = sum(f.stat().st_size for f in _build.version_dir().rglob("*") if f.is_file())
        print(f"binaries in {bdir} ({time.monotonic() - t0:.1f}s; cache dir {du / 1e6:.0f} MB)")
        return 0
    cluster = LocalCluster(state_dir=ns.state_dir)
    if ns.cmd == "up":
        t0 = time.monotonic()
        _build.build()
        t_build = time.monotonic() - t0
        if ns.image_map:
            import yaml
            with open(ns.image_map) as f:
                cluster.image_map.update(yaml.safe_load(f) or {})
        cluster.fresh = ns.fresh
        t1 = time.monotonic()
        cluster.start(build=False)
        for i in range(1, ns.nodes + 1):
            cluster.add_node(f"node-{i}", cpu=ns.node_cpu, memory=ns.node_memory)
        print(f"cluster up: control plane ready in {cluster.state['ready_seconds']:.1f}s, "
              f"total {time.monotonic() - t1:.1f}s (+{t_build:.1f}s build check)")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if ns.cmd == "down":
        cluster.stop()
        if ns.purge:
            shutil.rmtree(cluster.state_dir, ignore_errors=True)
        print("cluster down")
        return 0
    if ns.cmd == "status":
        st = cluster.status()
        print(json.dumps(st, indent=2))
        return 0 if st.get("readyz") == 200 else 1
    if ns.cmd == "env":
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    if ns.cmd == "add-node":
        cluster.add_node(ns.name, cpu=ns.cpu, memory=ns.memory, pods=ns.pods)
        return 0
    if ns.cmd == "kubectl":
        args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
        os.execv(cluster.bin("kubectl"), [cluster.bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args])
    return 2


if __name__ == "__main__":
    sys.exit(main())
