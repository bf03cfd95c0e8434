"""The node network of one local cluster: a network namespace of its own on this machine.

Every real-node cluster gets a *slot* ``k`` (1..199) and with it:

* a network namespace ``schedgen-<k>`` that holds the cluster's containerds, kubelets and its
  kube-proxy (so two clusters on one machine -- a test session and the demo -- never see each
  other's iptables rules, bridges or pod addresses);
* a veth pair: ``sg<k>h`` in the host namespace with the **host address** ``10.200.k.1/24`` and
  ``sg<k>n`` inside with ``10.200.k.2/24`` plus one address per node ``10.200.k.(10+j)``
  (the node's InternalIP: kubelet listens there, the apiserver connects to it);
* the bridge ``sgbr0`` inside with the pod gateway ``10.244.0.1/16``; node ``j`` hands out pod
  IPs from ``10.244.j.0/24`` (CNI ``bridge`` + ``host-local``), so pods of all nodes share one
  L2 segment; Services get ClusterIPs from ``10.0.0.0/24`` (kube-proxy, iptables mode, inside);
* inside: ``ip_forward=1``, ``bridge-nf-call-iptables=1``, and a MASQUERADE of pod traffic
  that leaves through ``sg<k>n`` -- towards the host address, the only other address the
  namespace has a route to. There is **no default route** inside, so nothing a pod, containerd
  or kubelet sends can leave this machine; the host's own forwarding setting is not touched.

The apiserver listens on the host address, so the kubelets (inside) and pods (through the
``kubernetes`` Service) reach it; services on the host that pods need (test Postgres, S3) must
listen on the host address (or 0.0.0.0) and see clients from ``10.200.k.2``.
Deleting the namespace removes the veth pair, the bridge and every iptables rule inside.
"""

from __future__ import annotations

import fcntl
import os
import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
RUN_DIR = Path("/run/schedgen")
POD_CIDR = "10.244.0.0/16"
POD_GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
BRIDGE = "sgbr0"
MAX_SLOT = 199
# kubelet sets these machine-wide at start (protectKernelDefaults: false); they are recorded
# when the first cluster of the machine starts and put back when the last one stops
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
SYSCTL_RECORD = RUN_DIR / "sysctl-before-kubelet.json"
MAX_NODES = 200


class NetworkError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p


@dataclass(frozen=True)
class Plan:
    slot: int

    @property
    def netns(self) -> str:
        return f"schedgen-{self.slot}"

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)

    @property
    def host_if(self) -> str:
        return f"sg{self.slot}h"

    @property
    def ns_if(self) -> str:
        return f"sg{self.slot}n"

    @property
    def host_network(self) -> str:
        return f"10.200.{self.slot}.0/24"

    @property
    def host_address(self) -> str:
        return f"10.200.{self.slot}.1"

    @property
    def bridge_mac(self) -> str:
        """A locally administered unicast address of the pod bridge, one per slot."""
        return f"02:5c:00:00:{self.slot // 256:02x}:{self.slot % 256:02x}"

    @property
    def ns_address(self) -> str:
        return f"10.200.{self.slot}.2"

    def node_ip(self, index: int) -> str:
        if not 1 <= index <= MAX_NODES:
            raise NetworkError(f"node index {index} out of range 1..{MAX_NODES}")
        return f"10.200.{self.slot}.{10 + index}"

    @staticmethod
    def node_pod_range(index: int) -> dict:
        net = ipaddress.ip_network(POD_CIDR)
        base = int(net.network_address) + index * 256
        return {"subnet": POD_CIDR, "rangeStart": str(ipaddress.ip_address(base + 2)),
                "rangeEnd": str(ipaddress.ip_address(base + 254)), "gateway": POD_GATEWAY}

    def as_dict(self) -> dict:
        return {"slot": self.slot, "netns": self.netns, "host_if": self.host_if, "ns_if": self.ns_if,
                "host_address": self.host_address, "host_network": self.host_network,
                "ns_address": self.ns_address, "pod_cidr": POD_CIDR, "pod_gateway": POD_GATEWAY,
                "service_cidr": SERVICE_CIDR, "bridge": BRIDGE}


def ns_exec(plan: Plan) -> list[str]:
    """argv prefix that runs a command inside the cluster's network namespace (mounts stay shared:
    ``nsenter --net`` only, unlike ``ip netns exec`` which also unshares the mount namespace)."""
    return ["nsenter", f"--net={plan.netns_path}", "--"]


def _owner_file(slot: int) -> Path:
    return RUN_DIR / f"slot-{slot}.json"


def slot_owner(slot: int) -> dict | None:
    try:
        return json.loads(_owner_file(slot).read_text())
    except (OSError, ValueError):
        return None


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_alive(owner: dict) -> bool:
    """Whether the process that set up a slot still runs (then the slot is never reclaimed)."""
    pid = owner.get("pid")
    return bool(pid) and _start_time(pid) is not None and _start_time(pid) == owner.get("pid_start")


def slots_with_owners() -> dict[int, dict | None]:
    return {s: slot_owner(s) for s in used_slots()}


def used_slots() -> set[int]:
    used = set()
    if NETNS_DIR.exists():
        for p in NETNS_DIR.iterdir():
            if p.name.startswith("schedgen-") and p.name[9:].isdigit():
                used.add(int(p.name[9:]))
    if RUN_DIR.exists():
        for p in RUN_DIR.glob("slot-*.json"):
            n = p.stem[5:]
            if n.isdigit():
                used.add(int(n))
    return used


def setup(state_dir: Path, prefer: int | None = None, session: bool = False) -> Plan:
    """Pick a free slot (``prefer`` if free) and create its namespace, veth pair and bridge.

    ``session``: the cluster lives only as long as the calling process (a test session), so once
    that process is gone the cluster may be stopped by anyone (see cluster.reclaim_stale_networks)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "network.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = used_slots()
        if not used and not SYSCTL_RECORD.exists():
            SYSCTL_RECORD.write_text(json.dumps({k: Path("/proc/sys", k).read_text().strip()
                                                 for k in KUBELET_SYSCTLS if Path("/proc/sys", k).exists()}))
        candidates = ([prefer] if prefer else []) + list(range(1, MAX_SLOT + 1))
        slot = next((s for s in candidates if s and s not in used), None)
        if slot is None:
            raise NetworkError(f"no free network slot (1..{MAX_SLOT} all used: {sorted(used)})")
        plan = Plan(slot)
        _owner_file(slot).write_text(json.dumps({"state_dir": str(state_dir), "created": time.time(),
                                                 "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
                                                 "session": session}))
    try:
        _create(plan)
    except BaseException:
        teardown(plan)
        raise
    return plan


def _create(p: Plan) -> None:
    _run("ip", "netns", "add", p.netns)
    ns = ("ip", "-n", p.netns)
    _run("ip", "link", "add", p.host_if, "type", "veth", "peer", "name", p.ns_if, "netns", p.netns)
    _run("ip", "addr", "add", f"{p.host_address}/24", "dev", p.host_if)
    _run("ip", "link", "set", p.host_if, "up")
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "addr", "add", f"{p.ns_address}/24", "dev", p.ns_if)
    _run(*ns, "link", "set", p.ns_if, "up")
    # A fixed address: a bridge whose address was not set takes the lowest of its ports'
    # addresses, so it changed whenever a pod's veth came or went, and running pods' cached
    # gateway address went stale -- their traffic vanished until ARP expired (15 s S3 timeouts
    # in runner pods under pod churn).
    _run(*ns, "link", "add", BRIDGE, "address", p.bridge_mac, "type", "bridge")
    _run(*ns, "addr", "add", f"{POD_GATEWAY}/16", "dev", BRIDGE)
    _run(*ns, "link", "set", BRIDGE, "up")
    inside = ns_exec(p)
    for key, value in (("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1"),
                       ("net.ipv4.conf.all.route_localnet", "0")):
        _run(*inside, "sysctl", "-q", "-w", f"{key}={value}")
    # Pod traffic towards the host address leaves with the namespace's own address, so the host
    # needs no route back into the pod network (and several clusters may use the same ranges).
    rules = "\n".join([
        "*nat",
        ":SCHEDGEN-POSTROUTING - [0:0]",
        "-A POSTROUTING -j SCHEDGEN-POSTROUTING",
        f"-A SCHEDGEN-POSTROUTING -s {POD_CIDR} -o {p.ns_if} -j MASQUERADE",
        "COMMIT",
        "*filter",
        ":SCHEDGEN-FORWARD - [0:0]",
        "-I FORWARD 1 -j SCHEDGEN-FORWARD",
        # only between the bridge and the host link; anything else is not forwarded
        f"-A SCHEDGEN-FORWARD -i {BRIDGE} -o {BRIDGE} -j RETURN",
        f"-A SCHEDGEN-FORWARD -i {BRIDGE} -o {p.ns_if} -d {p.host_network} -j RETURN",
        f"-A SCHEDGEN-FORWARD -i {p.ns_if} -o {BRIDGE} -s {p.host_network} -j RETURN",
        "-A SCHEDGEN-FORWARD -j DROP",
        "COMMIT", ""])
    _run(*inside, "iptables-restore", "--noflush", input=rules)


def add_node_address(p: Plan, index: int) -> str:
    ip = p.node_ip(index)
    have = _run("ip", "-n", p.netns, "-o", "addr", "show", "dev", p.ns_if).stdout
    if f" {ip}/" not in have:
        _run("ip", "-n", p.netns, "addr", "add", f"{ip}/24", "dev", p.ns_if)
    return ip


def teardown(p: Plan) -> None:
    """Delete the namespace (with the veth pair, bridge and its iptables rules) and free the slot."""
    if (NETNS_DIR / p.netns).exists():
        r = _run("ip", "netns", "del", p.netns, check=False)
        if r.returncode != 0 and (NETNS_DIR / p.netns).exists():
            raise NetworkError(f"ip netns del {p.netns}: {r.stderr.strip()}")
    # the host end goes with its peer; remove it explicitly if the namespace was already gone
    if Path(f"/sys/class/net/{p.host_if}").exists():
        _run("ip", "link", "del", p.host_if, check=False)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "network.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _owner_file(p.slot).unlink(missing_ok=True)
        if not used_slots():
            restore_sysctls()


def restore_sysctls() -> dict:
    """Put back the machine-wide settings kubelet changed (call with no cluster running)."""
    try:
        before = json.loads(SYSCTL_RECORD.read_text())
    except (OSError, ValueError):
        return {}
    for key, value in before.items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError:
            pass
    SYSCTL_RECORD.unlink(missing_ok=True)
    return before


def exists(p: Plan) -> bool:
    return (NETNS_DIR / p.netns).exists()
