"""The local cluster enforces NetworkPolicy (kube-network-policies on every real node,
hack/localkube/netpol.py), and the chart's runner policy holds on real parts: a runner-labelled
pod on a real node reaches the real MinIO through a presigned URL and the cluster DNS, and
nothing else -- not Postgres, not the API, not the kube-apiserver, not another pod.

localkube has no cluster DNS (pods get no nameserver), so a stand-in for it runs where the
chart's default ``networkPolicy.dns.to`` points: a pod labelled ``k8s-app: kube-dns`` in
kube-system with a TCP listener on port 53 (TCP connects are what is probed; busybox's nc has no
UDP). "DNS only to the cluster DNS" is shown by port 53 of another pod, reachable before the
policy and not after.

Every probe is a TCP connect with busybox ``nc -w 2`` from inside the pod (``kubectl exec``: the
exec itself goes apiserver -> kubelet, not through the pod network), all targets at once. Before
the policy is applied the same pod reaches every target, so what is blocked afterwards is blocked
by the enforcer (the SYN is dropped: nc reports "timed out", not "connection refused"), whose
drop counter moves by at least one per blocked target.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.parse
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from localkube import netpol, network
from localkube.images import BUSYBOX_REF
from localkube.testing import make_namespace, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from chartlib import one, render  # noqa: E402

pytestmark = pytest.mark.cluster

RUNNER_LABELS = {"app.kubernetes.io/managed-by": "schedgen-operator"}
DNS_LABELS = {"k8s-app": "kube-dns"}
CONNECT_SECONDS = 2


def _core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def busybox_pod(name: str, script: str, labels: dict | None = None, ports: tuple[int, ...] = (),
                restricted: bool = False) -> dict:
    container = {"name": "main", "image": BUSYBOX_REF, "imagePullPolicy": "Never", "command": ["sh", "-c", script]}
    if ports:  # Ready once the (first) listener is up; kubelet probes are the node's own root traffic
        container["readinessProbe"] = {"tcpSocket": {"port": ports[0]}, "periodSeconds": 1}
    spec = {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False, "containers": [container]}
    if restricted:  # as the runner runs (restricted Pod Security)
        spec["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                   "seccompProfile": {"type": "RuntimeDefault"}}
        container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def start_pod(api, ns: str, manifest: dict) -> client.V1Pod:
    name = manifest["metadata"]["name"]
    _core(api).create_namespaced_pod(ns, manifest)

    def ready():
        pod = _core(api).read_namespaced_pod(name, ns)
        return pod if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []) else None
    return wait_for(ready, 90, what=f"pod {ns}/{name} Ready")


def listeners(*ports: int) -> str:
    """busybox httpd on each port (any TCP server will do; its files: /etc)."""
    *bg, last = ports
    return "".join(f"httpd -p {p} -h /etc; " for p in bg) + f"exec httpd -f -p {last} -h /etc"


class HostHTTPServer:
    """Stands for the schedgen API: an HTTP server on this machine's address on the cluster network."""

    def __init__(self, host: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"api stand-in\n")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def probe_script(targets: dict[str, tuple[str, int]], http: dict[str, str] | None = None) -> str:
    """Connect to every target at once; one line per target: ``name rc=<nc exit> <nc's stderr>``.
    A plain target: connect and close (``-e true`` runs once connected: rc 0); ``http``: name -> a
    request (a printf format) to send instead, the first line of the answer is printed."""
    lines = []
    for name, (ip, port) in targets.items():
        request = (http or {}).get(name)
        nc = f"timeout -s KILL {CONNECT_SECONDS + 3} nc -w {CONNECT_SECONDS} {ip} {port}"
        # stdin kept open a second: at its end nc half-closes, which a Go server takes for the
        # client going away (MinIO answers 499)
        run = f"(printf '{request}'; sleep 1) | {nc}" if request else f"{nc} -e true"
        lines.append(f"( {run} > /tmp/{name}.out 2> /tmp/{name}.err; "
                     f"echo \"{name} rc=$? $(head -c 200 /tmp/{name}.out | head -n 1 | tr -d '\\r') "
                     f"$(tr '\\n' ' ' < /tmp/{name}.err)\" ) &")
    return "cd /tmp 2>/dev/null; " + " ".join(lines) + " wait"


def probe(cluster, ns: str, pod: str, targets: dict, http: dict | None = None) -> dict[str, str]:
    """{target: line} from ``kubectl exec`` of :func:`probe_script` in the pod (writable /tmp: an emptyDir)."""
    done = cluster.kubectl("-n", ns, "exec", pod, "--", "sh", "-c", probe_script(targets, http), timeout=60)
    out = {}
    for line in done.stdout.splitlines():
        name, _, rest = line.partition(" ")
        out[name] = rest.strip()
    assert set(out) == set(targets), done.stdout + done.stderr
    return out


def connected(line: str) -> bool:
    return line.startswith("rc=0")


def dropped(line: str) -> bool:
    """No answer at all within the connect timeout: the SYN was dropped (not refused: a RST
    would say 'Connection refused' at once)."""
    return not connected(line) and "timed out" in line and "refused" not in line


def enforcer_drops(cluster) -> float:
    """kube_network_policies_packet_count{verdict="drop"} summed over the nodes' enforcers (their
    metrics listen on the node addresses inside the cluster's network namespace)."""
    total = 0.0
    for node in cluster.kubelet_nodes():
        url = f"http://{cluster.node_ip(node)}:{netpol.METRICS_PORT}/metrics"
        text = subprocess.run([*network.ns_exec(cluster.net_plan), sys.executable, "-c",
                               f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"],
                              capture_output=True, text=True, check=True, timeout=30).stdout
        total += sum(float(m.group(1)) for m in re.finditer(
            r'^kube_network_policies_packet_count\{[^}]*verdict="drop"[^}]*\} (\S+)$', text, re.M))
    return total


@pytest.fixture
def dns_stand_in(kube_api):
    """A pod where the chart's default dns.to points (kube-system, k8s-app=kube-dns), with a TCP
    listener on 53: localkube runs no cluster DNS."""
    name = f"dns-stand-in-{uuid.uuid4().hex[:5]}"
    pod = start_pod(kube_api, "kube-system", busybox_pod(name, listeners(53), labels=DNS_LABELS, ports=(53,)))
    yield pod
    _core(kube_api).delete_namespaced_pod(name, "kube-system", grace_period_seconds=0)


def test_the_runner_policy_lets_runner_pods_reach_s3_and_dns_only(kubelet_cluster, kube_api, kube_ns, postgres, s3,
                                                                  dns_stand_in):
    cluster = kubelet_cluster
    host = cluster.host_address
    assert cluster.enforces_network_policy
    assert all(cluster.process_alive(netpol.process_key(node)) for node in cluster.kubelet_nodes())
    s3_endpoint = urllib.parse.urlsplit(s3.server.endpoint_for(host))  # as pods reach the session's MinIO
    s3_port = s3_endpoint.port

    # a real object and the presigned GET a runner would get (signed for the pod-facing endpoint
    # by the operator's own S3 user, whose policy reads uploads/)
    body = f"netpol-{uuid.uuid4().hex}"
    key = s3.put(body.encode(), f"uploads/netpol/{uuid.uuid4().hex}.txt")
    signer = s3.client_for("operator", endpoint_url=s3.server.endpoint_for(host))
    url = urllib.parse.urlsplit(signer.generate_presigned_url("get_object", Params={"Bucket": s3.bucket, "Key": key},
                                                              ExpiresIn=600))
    target = f"{url.path}?{url.query}".replace("%", "%%")  # a printf format: its percent-escapes doubled
    get_object = f"GET {target} HTTP/1.0\\r\\nHost: {url.netloc}\\r\\n\\r\\n"

    api = HostHTTPServer(host)
    with make_namespace(kube_api, "netpol-other") as other_ns:
        try:
            # another pod, in a namespace without policies: listeners on 8080, on the S3 port and on 53
            decoy = start_pod(kube_api, other_ns, busybox_pod("decoy", listeners(8080, s3_port, 53), ports=(8080,)))
            # the runner-labelled pod, restricted like the runner; it listens on 8080 (ingress probe)
            runner = busybox_pod("runner", "mkdir -p /tmp/www && exec httpd -f -p 8080 -h /tmp/www",
                                 labels=RUNNER_LABELS, ports=(8080,), restricted=True)
            runner["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
            runner["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
            runner_pod = start_pod(kube_api, kube_ns, runner)
            kubernetes_svc = _core(kube_api).read_namespaced_service("kubernetes", "default").spec.cluster_ip

            reachable = {"s3": (host, s3_port), "dns": (dns_stand_in.status.pod_ip, 53)}
            blocked = {
                "postgres": (host, postgres.port),
                "api": (host, api.port),
                "apiserver-service": (kubernetes_svc, 443),
                "apiserver-host": (host, cluster.state["ports"]["apiserver"]),
                "pod-any-port": (decoy.status.pod_ip, 8080),
                "pod-on-s3-port": (decoy.status.pod_ip, s3_port),
                "pod-on-dns-port": (decoy.status.pod_ip, 53),
            }
            targets = {**reachable, **blocked}
            http = {"s3": get_object}

            # --- before: no policy selects the pod, so it reaches everything
            before = probe(cluster, kube_ns, "runner", targets, http)
            print("\nbefore the policy:\n" + "\n".join(f"  {k:18} {v}" for k, v in before.items()))
            assert all(connected(line) for line in before.values()), before
            assert "200 OK" in before["s3"], before["s3"]
            ingress = probe(cluster, other_ns, "decoy", {"runner-ingress": (runner_pod.status.pod_ip, 8080)})
            assert connected(ingress["runner-ingress"]), ingress

            # --- the chart's runner policy, rendered for this namespace, S3 pinned to MinIO's address
            values = {"networkPolicy": {"s3": {"ports": [{"port": s3_port, "protocol": "TCP"}],
                                               "to": [{"ipBlock": {"cidr": f"{host}/32"}}]}}}
            policy = one(render(values, namespace=kube_ns), "NetworkPolicy", "schedgen-runner")
            assert policy["spec"]["egress"][0]["to"] == [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": DNS_LABELS}}]
            drops_before = enforcer_drops(cluster)
            client.NetworkingV1Api(kube_api).create_namespaced_network_policy(kube_ns, policy)

            def enforced():
                out = probe(cluster, kube_ns, "runner", targets, http)
                return out if all(dropped(out[k]) for k in blocked) else None
            after = wait_for(enforced, 60, interval=0.5, what="the runner policy to be enforced")
            print("with the policy:\n" + "\n".join(f"  {k:18} {v}" for k, v in after.items()))
            assert connected(after["dns"]), after
            assert connected(after["s3"]) and "200 OK" in after["s3"], after
            # the presigned GET through the pinned egress returns the object itself
            full = cluster.kubectl("-n", kube_ns, "exec", "runner", "--", "sh", "-c",
                                   f"(printf '{get_object}'; sleep 1) | nc -w {CONNECT_SECONDS} {host} {s3_port}"
                                   ).stdout
            assert full.endswith(body), full[-300:]
            # no ingress either; pods the policy does not select are not affected
            ingress = probe(cluster, other_ns, "decoy", {"runner-ingress": (runner_pod.status.pod_ip, 8080),
                                                         "api": (host, api.port), "postgres": (host, postgres.port)})
            assert dropped(ingress["runner-ingress"]), ingress
            assert connected(ingress["api"]) and connected(ingress["postgres"]), ingress
            # it was the enforcer: its drop counter moved (a SYN and its retransmit per blocked target)
            assert enforcer_drops(cluster) - drops_before >= len(blocked) + 1
        finally:
            api.close()


def test_nodes_queue_new_pod_connections_to_their_enforcer(kubelet_cluster):
    """The iptables hook: per real node, new connections from and to its pod range go to its
    enforcer's NFQUEUE (no bypass: fail closed), established ones and the node's own root traffic
    (kubelet probes) do not; each enforcer has bound its queue."""
    cluster = kubelet_cluster
    rules = netpol.rules(cluster.net_plan)
    assert "-A SCHEDGEN-NETPOL -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN" in rules, rules
    assert "-A SCHEDGEN-NETPOL -m owner --uid-owner 0 -j RETURN" in rules, rules
    assert "bypass" not in rules and "--queue-balance" not in rules, rules
    for name in cluster.kubelet_nodes():
        index = cluster.state["nodes"][name]["index"]
        q = netpol.queue_id(index)
        pod_range = f"10.244.{index}.0/24"
        assert f"-A SCHEDGEN-NETPOL -s {pod_range} -j NFQUEUE --queue-num {q}" in rules, rules
        assert f"-A SCHEDGEN-NETPOL -d {pod_range} -j NFQUEUE --queue-num {q}" in rules, rules
        info = cluster.processes[netpol.process_key(name)]
        assert q in netpol.bound_queues(info["pid"])
        assert f"--hostname-override={name}" in info["argv"] and f"--nfqueue-id={q}" in info["argv"]
    state = json.loads((cluster.state_dir / "state.json").read_text())
    assert state["network_policy"] == {"enabled": True, "enforcer": "kube-network-policies", "version": "v0.8.0"}
