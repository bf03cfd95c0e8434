"""CLI behind ``hack/cluster``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import build as _build
from .cluster import LocalCluster, default_state_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/cluster", description="local Kubernetes control plane")
    ap.add_argument("--state-dir", default=os.environ.get("SCHEDGEN_CLUSTER_DIR") or str(default_state_dir()),
                    help="where certs, etcd data, logs and state.json live (default %(default)s)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or reuse the pinned binaries (Kubernetes, etcd, kwok, "
                       "kube-network-policies, Karpenter's KWOK provider)")
    b.add_argument("--force", action="store_true")
    b.add_argument("-j", "--jobs", type=int, default=2)
    b.add_argument("--no-kwok", action="store_true", help="skip kwok, Karpenter's KWOK provider and the "
                   "registry (the tests and benchmarks use them, the demo does not)")
    u = sub.add_parser("up", help="start the control plane and nodes")
    u.add_argument("--nodes", type=int, default=1, help="real nodes to start (node-1..N); 0 for none")
    u.add_argument("--node-cpu", default="2")
    u.add_argument("--node-memory", default="4Gi")
    u.add_argument("--kwok-nodes", type=int, default=0,
                   help="simulated nodes to add (kwok-node-1..N, tainted: see kwok-nodes)")
    u.add_argument("--fresh", action="store_true", help="wipe the state dir (etcd data, certs) first")
    u.add_argument("--no-network-policy", action="store_true",
                   help="no NetworkPolicy enforcer on the real nodes (kube-network-policies runs by default)")
    u.add_argument("--image", action="append", default=[], metavar="ARCHIVE",
                   help="image archive (docker-archive/OCI tar, or a directory of *.tar) to "
                        "import into every node; repeatable")
    d = sub.add_parser("down", help="stop everything started by 'up' (by pid)")
    d.add_argument("--purge", action="store_true", help="also delete the state dir")
    sub.add_parser("status")
    sub.add_parser("env", help="print 'export KUBECONFIG=...'")
    a = sub.add_parser("add-node", help="register one more node (simulates autoscaling)")
    a.add_argument("name")
    a.add_argument("--cpu", default="2")
    a.add_argument("--memory", default="4Gi")
    a.add_argument("--pods", type=int, default=110)
    a.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    kw = sub.add_parser("kwok-nodes", help="start kwok if need be and add simulated nodes (label and "
                        "NoSchedule taint kwok.x-k8s.io/node=fake)")
    kw.add_argument("count", type=int)
    kw.add_argument("--cpu", default="32")
    kw.add_argument("--memory", default="256Gi")
    kw.add_argument("--pods", type=int, default=110)
    kw.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ex = sub.add_parser("executor", help="run the executor (the runner's work for runner pods on simulated "
                        "nodes) in the foreground until Ctrl-C; prints its counts")
    ex.add_argument("--workers", type=int, default=8)
    im = sub.add_parser("import-image", help="import image archives into every node (and nodes added later)")
    im.add_argument("archives", nargs="+")
    sub.add_parser("test-images", help="build (or reuse) the pause and busybox test image archives; print paths")
    rg = sub.add_parser("registry", help="start (or reuse) the cluster's OCI registry (TLS with the cluster CA, "
                        "a login); print its address and how to push and pull")
    rg.add_argument("--pull-secret", metavar="NAMESPACE/NAME",
                    help="also create this kubernetes.io/dockerconfigjson Secret with the registry's login")
    k = sub.add_parser("kubectl", help="run kubectl against the cluster")
    k.add_argument("args", nargs=argparse.REMAINDER)
    argv = list(sys.argv[1:] if argv is None else argv)
    kubectl_args: list[str] = []
    if "kubectl" in argv:  # everything after it is kubectl's, options included
        i = argv.index("kubectl")
        argv, kubectl_args = argv[:i + 1], argv[i + 1:]
    ns = ap.parse_args(argv)

    if ns.cmd == "build":
        t0 = time.monotonic()
        bdir = _build.build(force=ns.force, jobs=ns.jobs)
        du = sum(f.stat().st_size for f in _build.version_dir().rglob("*") if f.is_file())
        print(f"binaries in {bdir} ({time.monotonic() - t0:.1f}s; cache dir {du / 1e6:.0f} MB)")
        from . import karpenter, kwok, netpol
        if not ns.no_kwok:
            print(f"kwok: {kwok.build(force=ns.force)}")
        print(f"kube-network-policies: {netpol.build(force=ns.force)}")
        if not ns.no_kwok:  # the autoscaler of simulated nodes (docs/autoscaling.md)
            print(f"karpenter (KWOK provider): {karpenter.build(force=ns.force)}")
        if not ns.no_kwok:  # the tests' registry (registry.py); the demo imports its images
            from . import registry
            print(f"registry (CNCF distribution): {registry.build(force=ns.force)}")
        return 0
    if ns.cmd == "test-images":
        from .images import busybox_archive, pause_archive
        print(pause_archive())
        print(busybox_archive())
        return 0
    cluster = LocalCluster(state_dir=ns.state_dir)
    if ns.cmd == "up":
        t0 = time.monotonic()
        _build.build()
        cluster.network_policy = not ns.no_network_policy
        if cluster.network_policy:
            from . import netpol
            netpol.build()
        t_build = time.monotonic() - t0
        cluster.fresh = ns.fresh
        t1 = time.monotonic()
        if cluster.is_running():  # never stopped below: it is not this run's
            print(f"cluster in {cluster.state_dir} is already running (pid "
                  f"{cluster.processes['kube-apiserver']['pid']}); run 'down' first", file=sys.stderr)
            return 1
        try:
            cluster.start(build=False)
            for arg in ns.image:
                p = Path(arg)
                for archive in (sorted(p.glob("*.tar")) if p.is_dir() else [p]):
                    cluster.import_image(archive)
            for i in range(1, ns.nodes + 1):
                cluster.add_node(f"node-{i}", cpu=ns.node_cpu, memory=ns.node_memory)
            if ns.kwok_nodes:
                from .kwok import Kwok
                Kwok(cluster).start().add_fake_nodes(ns.kwok_nodes)
        except Exception as e:
            # a failed 'up' leaves nothing running: not etcd, the apiserver, a containerd, ...
            print(f"cluster up failed: {e}\nstopping what it started (logs in {cluster.logs})",
                  file=sys.stderr, flush=True)
            cluster.stop()
            return 1
        except BaseException:  # Ctrl-C
            cluster.stop()
            raise
        print(f"cluster up: control plane ready in {cluster.state['ready_seconds']:.1f}s, "
              f"total {time.monotonic() - t1:.1f}s (+{t_build:.1f}s build check)")
        print(f"pods reach this machine at {cluster.host_address}")
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
        labels = dict(kv.split("=", 1) for kv in ns.label)
        cluster.add_node(ns.name, cpu=ns.cpu, memory=ns.memory, pods=ns.pods, labels=labels)
        return 0
    if ns.cmd == "kwok-nodes":
        from .kwok import RUNNER_PLACEMENT_ENV, Kwok
        labels = dict(kv.split("=", 1) for kv in ns.label)
        kwok = Kwok(cluster).start()
        names = kwok.add_fake_nodes(ns.count, cpu=ns.cpu, memory=ns.memory, pods=ns.pods, labels=labels)
        print(" ".join(names))
        print("runner pods land there with the operator's " +
              " ".join(f"{k}='{v}'" for k, v in RUNNER_PLACEMENT_ENV.items()))
        return 0
    if ns.cmd == "executor":
        import signal
        import threading
        from .executor import Executor
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        executor = Executor(cluster.api_client(), workers=ns.workers).start()
        print("executor running (Ctrl-C stops it)", flush=True)
        last = ""
        try:
            while not stop.wait(10):
                line = executor.report()
                if line != last:
                    print(line, flush=True)
                    last = line
        finally:
            executor.stop()
            print(executor.report())
        return 0
    if ns.cmd == "import-image":
        for arg in ns.archives:
            p = Path(arg)
            for archive in (sorted(p.glob("*.tar")) if p.is_dir() else [p]):
                for node, out in cluster.import_image(archive).items():
                    print(f"{node}: {out.strip()}")
        return 0
    if ns.cmd == "registry":
        return _registry(cluster, ns.pull_secret)
    if ns.cmd == "kubectl":
        args = kubectl_args[1:] if kubectl_args[:1] == ["--"] else kubectl_args
        os.execv(cluster.bin("kubectl"), [cluster.bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args])
    return 2


def _registry(cluster, pull_secret: str | None) -> int:
    import json as _json

    from .registry import Registry

    reg = Registry(cluster).start()
    if pull_secret:
        namespace, name = pull_secret.split("/", 1)
        path = reg.dir / f"pull-secret-{namespace}-{name}.json"  # the login: root-only, beside the registry's
        path.write_text(_json.dumps(reg.pull_secret(namespace, name)))
        path.chmod(0o600)
        done = cluster.kubectl("apply", "-f", str(path), check=False)
        print((done.stdout + done.stderr).strip())
    user, _ = reg.credentials
    print(f"registry https://{reg.address} (user {user}; CA {reg.ca_file})")
    print(f"push:  hack/images push {reg.address} --authfile {reg.authfile()} --cert-dir {reg.cert_dir}")
    print(f"pull:  image {reg.address}/schedgen-runner@sha256:... with an imagePullSecret "
          f"(hack/cluster registry --pull-secret NAMESPACE/NAME)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
