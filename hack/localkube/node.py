"""One real node of a local cluster: its own containerd and kubelet v1.37.2.

Per node ``<name>`` (index ``j``, see network.py for the addresses):

* containerd (Debian's, runc, CRI) with its own root ``<state>/nodes/<name>/containerd``,
  state and socket ``/run/schedgen/<cluster>/<name>/`` (pod network namespaces are mounted
  under that state dir too), CNI config ``<state>/nodes/<name>/cni`` (``bridge`` on the
  cluster's ``sgbr0`` + ``host-local`` from ``10.244.j.0/24`` with a default route to the
  bridge gateway), ``restrict_oom_score_adj`` (this sandbox lacks CAP_SYS_RESOURCE) and the
  sandbox image ``localhost/schedgen-pause:3.10``. An HTTP(S) proxy of ``127.0.0.1:9`` (nothing
  listens there) makes any image pull fail at once, and the namespace has no route off the
  machine anyway: images come only from archives imported with ``ctr images import``;
* kubelet with its own root dir, pod log dir, client certificate ``system:node:<name>``
  (group ``system:nodes``; the Node authorizer and NodeRestriction apply), a serving
  certificate for its InternalIP signed by the cluster CA, webhook authn/authz, cgroupfs
  driver with cgroup root ``/schedgen/<cluster>/<name>``, and allocatable cpu/memory/pods
  cut down to the requested size with ``kubeReserved``;
* both processes run inside the cluster's network namespace and in the cgroup
  ``/schedgen/<cluster>/<name>/node`` (so their shims and everything else they start can be
  found and killed when the cluster stops).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from . import hostfs, network
from .images import PAUSE_REF

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"
NO_PROXY_TRAP = "http://127.0.0.1:9"
K8S_NS = "k8s.io"


def registry_hosts_dir(state_dir: Path) -> Path:
    """containerd's ``config_path`` of every node of the cluster in ``state_dir``."""
    return Path(state_dir) / "registry-hosts"

_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "": 1}


def parse_bytes(q: str | int) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(q))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"bad memory quantity {q!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])


def parse_millicpu(q: str | int | float) -> int:
    s = str(q).strip()
    return int(s[:-1]) if s.endswith("m") else int(round(float(s) * 1000))


def machine_memory() -> int:
    """MemTotal in bytes (what cAdvisor reports as the node's memory capacity)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def machine_cpus() -> int:
    return os.cpu_count() or 1


EVICTION_MEMORY = 100 * 2**20  # evictionHard memory.available (kubelet default)


def reservation(cpu: str, memory: str) -> tuple[dict, list[str]]:
    """kubeReserved that turns the machine's capacity into the requested allocatable (a node can
    only be made smaller than the machine: larger requests are capped, with a warning)."""
    warnings = []
    cap_m, want_m = machine_cpus() * 1000, parse_millicpu(cpu)
    if want_m > cap_m:
        warnings.append(f"cpu {cpu} exceeds the machine's {cap_m // 1000} CPUs; allocatable is {cap_m}m")
    cap_b, want_b = machine_memory(), parse_bytes(memory)
    if want_b + EVICTION_MEMORY > cap_b:
        warnings.append(f"memory {memory} exceeds the machine's memory; allocatable is capped")
    res = {"cpu": f"{max(0, cap_m - want_m)}m",
           "memory": str(max(0, cap_b - want_b - EVICTION_MEMORY))}
    return res, warnings


class RealNode:
    """Paths, configs and helper commands of one node; processes are spawned by the cluster."""

    def __init__(self, cluster, name: str, index: int):
        self.cluster = cluster
        self.name = name
        self.index = index
        self.plan: network.Plan = cluster.net_plan
        self.dir = cluster.state_dir / "nodes" / name
        self.run = network.RUN_DIR / cluster.cluster_id / name
        self.ip = self.plan.node_ip(index)

    # ------------------------------------------------------------------ paths
    @property
    def sock(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cgroup_root(self) -> str:
        return f"/schedgen/{self.cluster.cluster_id}/{self.name}"

    @property
    def system_cgroup(self) -> str:
        return f"{self.cgroup_root}/node"

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.state_dir / f"node-{self.name}.kubeconfig"

    # ------------------------------------------------------------------ configs
    def prepare(self, cpu: str, memory: str, pods: int) -> list[str]:
        """Write certs, kubeconfig, containerd/CNI/kubelet configs and cgroups; returns warnings."""
        from .certs import node_certs
        for d in (self.dir, self.run, self.dir / "cni", self.dir / "kubelet", self.dir / "pod-logs",
                  registry_hosts_dir(self.cluster.state_dir)):
            d.mkdir(parents=True, exist_ok=True)
        pki = self.cluster.pki
        node_certs(pki, self.name, self.ip)
        self.cluster._write_kubeconfig(self.kubeconfig, f"node-{self.name}", f"system:node:{self.name}")
        (self.dir / "containerd.toml").write_text(self._containerd_toml())
        (self.dir / "cni" / "10-schedgen.conflist").write_text(json.dumps(self._cni_conf(), indent=2))
        reserved, warnings = reservation(cpu, memory)
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(reserved, pods), sort_keys=False))
        hostfs.cgroup_ensure(self.cgroup_root)
        hostfs.cgroup_ensure(self.system_cgroup)
        return warnings

    def _containerd_toml(self) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{self.dir / 'containerd'}"
state = "{self.run / 'state'}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.sock}"

[ttrpc]
  address = "{self.run / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.dir / 'containerd' / 'opt'}"

[{cri}]
  sandbox_image = "{PAUSE_REF}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_unprivileged_ports = false
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  max_container_log_line_size = 16384

  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false

    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{self.run / 'runc'}"
        SystemdCgroup = false

  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.dir / 'cni'}"
    max_conf_num = 1

  # registries: one <host:port>/hosts.toml each (registry.py writes the local registry's,
  # with the cluster CA); read at every pull, so a registry started later needs no restart
  [{cri}.registry]
    config_path = "{registry_hosts_dir(self.cluster.state_dir)}"
"""

    def _cni_conf(self) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": "schedgen",
            "plugins": [{
                "type": "bridge",
                "bridge": network.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[network.Plan.node_pod_range(self.index)]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(self.dir / "ipam"),
                },
            }],
        }

    def _kubelet_config(self, reserved: dict, pods: int) -> dict:
        pki = self.cluster.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": self.ip,
            "healthzPort": 10248,
            "tlsCertFile": str(pki / f"kubelet-{self.name}-serving.crt"),
            "tlsPrivateKeyFile": str(pki / f"kubelet-{self.name}-serving.key"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "imageServiceEndpoint": f"unix://{self.sock}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "failCgroupV1": False,
            "failSwapOn": False,
            "enforceNodeAllocatable": ["pods"],
            "kubeReserved": reserved,
            "evictionHard": {"memory.available": f"{EVICTION_MEMORY // 2**20}Mi", "nodefs.available": "1%",
                             "nodefs.inodesFree": "1%", "imagefs.available": "1%"},
            # images come only from imported archives: never garbage-collect them
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # The nodes hold imported images (never pulled, no credentials) and the same builds
            # pulled from the test registry with a login: one image ID. Under the default policy
            # (NeverVerifyPreloadedImages) a pod without that login may then not use the imported
            # copy, and with pullPolicy Never it fails ErrImageNeverPull. Pulls by a ref not on
            # the node still need their Secret (tests/cluster/test_registry.py).
            "imagePullCredentialsVerificationPolicy": "NeverVerify",
            "maxPods": int(pods),
            "podLogsDir": str(self.dir / "pod-logs"),
            "resolvConf": "",  # pods get no nameserver: there is none to reach from here
            "clusterDomain": "cluster.local",
            "oomScoreAdj": 0,  # a negative one needs CAP_SYS_RESOURCE
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "10s",
            "nodeStatusReportFrequency": "1m",
            "syncFrequency": "30s",
            "protectKernelDefaults": False,
            "localStorageCapacityIsolation": True,
            "containerLogMaxSize": "10Mi",
            "shutdownGracePeriod": "0s",
            "logging": {"format": "text"},
        }

    # ------------------------------------------------------------------ processes
    def containerd_argv(self) -> list[str]:
        return [*network.ns_exec(self.plan), CONTAINERD, f"--config={self.dir / 'containerd.toml'}",
                "--log-level=warn"]

    def containerd_env(self) -> dict:
        """No pull leaves this machine (a dead proxy for everything), except from the cluster's
        local registry on the host address (registry.py)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update({"HTTP_PROXY": NO_PROXY_TRAP, "HTTPS_PROXY": NO_PROXY_TRAP,
                    "http_proxy": NO_PROXY_TRAP, "https_proxy": NO_PROXY_TRAP,
                    "NO_PROXY": self.plan.host_address, "no_proxy": self.plan.host_address})
        return env

    def kubelet_argv(self, labels: dict | None = None) -> list[str]:
        argv = [*network.ns_exec(self.plan), self.cluster.bin("kubelet"),
                f"--config={self.dir / 'kubelet.yaml'}", f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}", f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
                f"--hostname-override={self.name}", f"--node-ip={self.ip}", "--v=1"]
        if labels:
            argv.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()))
        return argv

    def ctr(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([CTR, f"--address={self.sock}", f"--namespace={K8S_NS}", *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} on node {self.name}: {p.stderr.strip() or p.stdout.strip()}")
        return p

    def import_image(self, archive: str | os.PathLike) -> str:
        return self.ctr("images", "import", str(archive)).stdout

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()

    # ------------------------------------------------------------------ cleanup
    def kill_pods(self) -> int:
        """SIGKILL every container process of this node (its kubepods cgroup tree)."""
        return hostfs.cgroup_kill(f"{self.cgroup_root}/kubepods", timeout=10)
