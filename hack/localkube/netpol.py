"""NetworkPolicy enforcement for the real nodes: kube-network-policies (sigs.k8s.io), one per node.

`kube-network-policies <https://github.com/kubernetes-sigs/kube-network-policies>`_ v0.8.0 is the
NetworkPolicy implementation SIG Network tests Kubernetes with: the first packet of every new
connection goes to user space through an NFQUEUE, where it is judged against the NetworkPolicies
(the source pod's egress rules, then the destination pod's ingress rules) and accepted or
dropped; later packets of an accepted connection pass by conntrack. It is built once with
``go install`` from the Go module proxy into ``~/.cache/schedgen/kube-network-policies-v0.8.0/bin``
(``hack/cluster build`` builds it, :meth:`LocalCluster.start` too if it is missing).

How it runs here (one process per real node, recorded in ``state.json`` as
``kube-network-policies-<node>`` and stopped with kube-proxy):

* in the cluster's network namespace, where the bridge ``sgbr0`` routes every pod's traffic;
  ``--hostname-override=<node>``, ``--nfqueue-id=100+<node index>``, its metrics on
  ``<node ip>:9080``, ``--netfilter-bug-1766-fix=false`` (a kernel >= 6.12 has the fix; that
  workaround is nftables rules anyway), fail closed (``--fail-open=false``, the default);
* as the ServiceAccount ``kube-system/kube-network-policies`` with upstream's ClusterRole
  (list/watch pods, namespaces, networkpolicies). The program only knows in-cluster
  configuration (``rest.InClusterConfig``: ``KUBERNETES_SERVICE_HOST/PORT`` and a token and CA at
  ``/var/run/secrets/kubernetes.io/serviceaccount/``), so it runs in a private mount namespace
  whose ``/run`` is a tmpfs of its own with ``<state-dir>/kube-network-policies/serviceaccount``
  bound there (a TokenRequest token, reissued at each start). Nothing on the host changes; its
  NRI client finds no runtime socket in that ``/run`` and gives up (NRI would only make new
  pods' IPs known before the apiserver has them; containerd 1.6 has no NRI v0.9 anyway).

**The dataplane hook is ours, in iptables.** kube-network-policies v0.8.0 has no mode switch:
it writes an nftables table whose rules end in the ``queue`` statement, and this kernel has no
nftables ``queue`` expression (the whole transaction is refused; it logs "syncing nftables rules"
with "no such file or directory" and retries). The kernel's NFQUEUE works through iptables
(``xt_NFQUEUE``), so :func:`hook` installs in the namespace's ``mangle`` table (POSTROUTING: after
kube-proxy's DNAT, before the MASQUERADE, as upstream's chain sits) the same decisions upstream's
table makes, except its set of policy-selected pod IPs::

    -A POSTROUTING -j SCHEDGEN-NETPOL
    -A SCHEDGEN-NETPOL -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
    -A SCHEDGEN-NETPOL -m owner --uid-owner 0 -j RETURN        # the node's own root traffic (probes)
    -A SCHEDGEN-NETPOL -s 10.244.<j>.0/24 -j NFQUEUE --queue-num 100+<j>   # per node j
    -A SCHEDGEN-NETPOL -d 10.244.<j>.0/24 -j NFQUEUE --queue-num 100+<j>

So every new connection from or to a pod of node ``j`` is judged by node ``j``'s enforcer (a pod
to pod connection across nodes by one of the two: each knows every pod and policy, and judges
both the egress and the ingress side); a pod no policy selects is accepted. No
``--queue-bypass``: while a node's enforcer is not running, new connections of its pods are
dropped, never let through unjudged. The rules go in only once the enforcer has bound its queue
(``/proc/<pid>/net/netfilter/nfnetlink_queue``), before the node's kubelet starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .gotool import GoTool, log_stderr
from . import network

VERSION = "v0.8.0"
PACKAGE = "sigs.k8s.io/kube-network-policies/cmd"  # the main package (cmd/main.go): `go install` names it "cmd"
BINARY_NAME = "kube-network-policies"
QUEUE_BASE = 100
METRICS_PORT = 9080
CHAIN = "SCHEDGEN-NETPOL"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "kube-network-policies"
TOKEN_SECONDS = 365 * 24 * 3600
SA_MOUNT = "/run/secrets/kubernetes.io/serviceaccount"  # /var/run is /run
# upstream's install.yaml ClusterRole (no AdminNetworkPolicy: no nodes, no CRDs)
RULES = [
    {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
]


_log = log_stderr


# ------------------------------------------------------------------------------------- build
TOOL = GoTool("kube-network-policies", PACKAGE, VERSION, BINARY_NAME, minutes=3.5)  # most of it client-go
bin_dir, binary, is_built, build = TOOL.bin_dir, TOOL.binary, TOOL.is_built, TOOL.build


# ------------------------------------------------------------------------------------- per node
def process_key(node: str) -> str:
    return f"{BINARY_NAME}-{node}"


def queue_id(index: int) -> int:
    return QUEUE_BASE + index


def pod_range(index: int) -> str:
    """The /24 node ``index`` gives its pods' addresses from (network.Plan.node_pod_range)."""
    start = network.Plan.node_pod_range(index)["rangeStart"]
    return start.rsplit(".", 1)[0] + ".0/24"


def state_dir(cluster) -> Path:
    return cluster.state_dir / BINARY_NAME


def _api(cluster, path: str, body: dict, ok=(200, 201, 409)) -> dict:
    code, out = cluster._get(path, method="POST", body=body, timeout=10)
    if code not in ok:
        raise RuntimeError(f"POST {path}: {code} {out[:300]!r}")
    return json.loads(out) if out else {}


def ensure_identity(cluster) -> Path:
    """ServiceAccount, ClusterRole and binding (upstream's install.yaml), and a fresh token for it in
    ``<state>/kube-network-policies/serviceaccount/{token,ca.crt}``; returns that directory."""
    name = SERVICE_ACCOUNT
    _api(cluster, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}})
    _api(cluster, "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
          "rules": RULES})
    _api(cluster, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
          "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
          "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]})
    token = _api(cluster, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name}/token",
                 {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": TOKEN_SECONDS}}, ok=(200, 201))["status"]["token"]
    sa = state_dir(cluster) / "serviceaccount"
    sa.mkdir(parents=True, exist_ok=True)
    os.chmod(sa.parent, 0o700)
    for fname, data in (("token", token), ("ca.crt", (cluster.pki / "ca.crt").read_text()),
                        ("namespace", NAMESPACE)):
        tmp = sa / f".{fname}.tmp"
        tmp.write_text(data)
        tmp.chmod(0o600)
        tmp.replace(sa / fname)
    return sa


def argv(cluster, node: str, index: int, node_ip: str, sa_dir: Path) -> list[str]:
    """nsenter into the cluster's network namespace, a private mount namespace with a /run of its
    own holding the ServiceAccount files where in-cluster configuration looks, then the enforcer."""
    script = ("mount -t tmpfs -o mode=0755,size=1m schedgen-netpol /run && "
              f"mkdir -p {SA_MOUNT} && mount --bind \"$1\" {SA_MOUNT} && shift && exec \"$@\"")
    return [*network.ns_exec(cluster.net_plan), "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, BINARY_NAME, str(sa_dir),
            str(binary()), f"--hostname-override={node}", f"--nfqueue-id={queue_id(index)}",
            f"--metrics-bind-address={node_ip}:{METRICS_PORT}", "--fail-open=false",
            "--netfilter-bug-1766-fix=false", "--v=0"]


def env(cluster) -> dict:
    """Only the apiserver's address for in-cluster configuration; no proxy settings."""
    out = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out.update({"KUBERNETES_SERVICE_HOST": cluster.host_address,
                "KUBERNETES_SERVICE_PORT": str(cluster.state["ports"]["apiserver"])})
    return out


def start(cluster, node: str, index: int, node_ip: str) -> int:
    """Start node ``node``'s enforcer (kept if it runs); returns its pid. :func:`wait_bound` and
    :func:`hook` finish the job."""
    key = process_key(node)
    if cluster.process_alive(key):
        return cluster.processes[key]["pid"]
    if not binary().exists():
        build(log=cluster.log)
    sa = ensure_identity(cluster)
    return cluster.start_process(key, argv(cluster, node, index, node_ip, sa), env=env(cluster))


def bound_queues(pid: int) -> set[int]:
    """The NFQUEUE numbers bound in the network namespace of process ``pid``."""
    try:
        text = Path(f"/proc/{pid}/net/netfilter/nfnetlink_queue").read_text()
    except OSError:
        return set()
    return {int(line.split()[0]) for line in text.splitlines() if line.split()}


def wait_bound(cluster, node: str, index: int, timeout: float = 60.0) -> float:
    """Wait until node ``node``'s enforcer has synced its informers and bound its queue."""
    key, t0 = process_key(node), time.monotonic()
    pid = cluster.processes[key]["pid"]
    cluster.wait_until(f"{key} to bind NFQUEUE {queue_id(index)}", lambda: queue_id(index) in bound_queues(pid),
                       timeout, watch=(key,))
    return time.monotonic() - t0


def _ipt(plan: network.Plan, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([*network.ns_exec(plan), *args], capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def hook_rules(index: int) -> list[list[str]]:
    q = str(queue_id(index))
    return [["-s", pod_range(index), "-j", "NFQUEUE", "--queue-num", q],
            ["-d", pod_range(index), "-j", "NFQUEUE", "--queue-num", q]]


def hook(plan: network.Plan, index: int) -> None:
    """Send the first packet of each new connection from or to node ``index``'s pods to its
    enforcer's queue (the chain is made on first use; rules already there are kept)."""
    if _ipt(plan, "iptables", "-w", "-t", "mangle", "-S", CHAIN, check=False).returncode != 0:
        _ipt(plan, "iptables-restore", "-w", "--noflush", input="\n".join([
            "*mangle", f":{CHAIN} - [0:0]",
            f"-A POSTROUTING -j {CHAIN}",
            f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
            # upstream's "meta skuid 0 accept": the node's own processes (kubelet probes)
            f"-A {CHAIN} -m owner --uid-owner 0 -j RETURN",
            "COMMIT", ""]))
    for rule in hook_rules(index):
        if _ipt(plan, "iptables", "-w", "-t", "mangle", "-C", CHAIN, *rule, check=False).returncode != 0:
            _ipt(plan, "iptables", "-w", "-t", "mangle", "-A", CHAIN, *rule)


def rules(plan: network.Plan) -> str:
    """The hook chain as ``iptables -S`` prints it (for tests and ``status``)."""
    return _ipt(plan, "iptables", "-w", "-t", "mangle", "-S", CHAIN, check=False).stdout
