"""The local demo, deployed the way users deploy schedgen: the Helm chart installed onto a
local Kubernetes cluster with real nodes, and the real UP schedule PDFs uploaded to the API pod.

    hack/demo.sh            # set up, start everything, install/upgrade the chart, upload the PDFs
    hack/demo.sh status     # what is running
    hack/demo.sh down       # stop the cluster and the services (by pid); state stays in .local/demo/

`up` (idempotent; a second run reuses everything and upgrades the release):
  1. builds or reuses the images (hack/images: schedgen-runner, schedgen-operator; the operator
     image also serves the API);
  2. starts Postgres and MinIO (hack/devservices.py, state in .local/demo/services) and the
     cluster (`hack/cluster up`, containerd + kubelet nodes, state in .local/demo/cluster);
  3. imports the images into every node's containerd (pullPolicy Never: nodes never pull);
  4. creates the namespace (Pod Security `restricted`) and the Secrets the chart references:
     a Postgres DSN per role, each login with its own password, and each component's own
     MinIO user (its policy allows its own work only; the root user only sets up), with the
     pod-facing addresses (pods reach this machine at the cluster's host address);
  5. installs the chart with Helm's engine (helm-python-sdk), or upgrades the release when it
     exists, and waits for the operator (2 replicas) and API pods to be Ready;
  6. uploads the three PDFs over HTTP to the API's NodePort, waits for the ParseJobs (runner
     Jobs run as containers on the node) and prints each job's phase and its events.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))

import devservices  # noqa: E402
import images  # noqa: E402
from localkube.cluster import LocalCluster  # noqa: E402

STATE = ROOT / ".local" / "demo"
CLUSTER_DIR = STATE / "cluster"
SERVICES_DIR = STATE / "services"
CHART = ROOT / "charts" / "schedgen"
PDFS = sorted((ROOT.parent / "shared" / "fixtures" / "up").glob("*.pdf"))
RELEASE = "schedgen"
NAMESPACE = "schedgen-system"
BUCKET = "schedgen-uploads"
REGION = "us-east-1"
NODE = "node-1"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
# The API's per-client upload limit for this deployment. The limit is per client address and
# its windows live in Postgres, which the demo keeps between runs; every upload counts, also an
# Idempotency-Key replay (the limit is checked before the upload is read). With the chart's
# default (5 per minute) a second run within a minute (3 more uploads from the same address)
# was refused with 429 RateLimited. The demo is one trusted client uploading 3 PDFs per run, so
# its own release allows 60 per minute; production installs keep the chart's default. Each run
# uses fresh Idempotency-Keys (a retry within the run is replayed, never parsed twice): a fixed
# key would replay the first run's job and fail with 409 IdempotentJobGone once retention has
# deleted that ParseJob. A 429 would still be retried after its Retry-After.
UPLOADS_PER_MINUTE = 60


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cluster_cmd(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "hack" / "cluster"), "--state-dir", str(CLUSTER_DIR), *args],
                          check=True, text=True, capture_output=capture)


def kubectl_apply(cluster: LocalCluster, manifest: dict) -> None:
    subprocess.run([cluster.bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "apply", "-f", "-"],
                   input=json.dumps(manifest), text=True, check=True, capture_output=True)


def image_values(ref: str) -> dict:
    repository, tag = ref.rsplit(":", 1)
    return {"repository": repository, "tag": tag, "pullPolicy": "Never"}


# --- the pieces -----------------------------------------------------------------------


def start_services() -> tuple[devservices.PostgresServer, devservices.S3Server]:
    pg, s3 = devservices.PostgresServer(SERVICES_DIR), devservices.S3Server(SERVICES_DIR)
    if not pg.running:
        pg.start()
    if not s3.running:
        s3.start()
    import boto3

    # MinIO's root user sets up only: the bucket, and each component's own IAM user with
    # its policy (hack/s3iam.py); the chart's pods get those users' keys, never root's.
    root = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=REGION, **{
        k.lower(): v for k, v in s3.root_credentials.items()})
    try:
        root.create_bucket(Bucket=BUCKET)
    except (root.exceptions.BucketAlreadyOwnedByYou, root.exceptions.BucketAlreadyExists):
        pass
    s3.create_component_users(BUCKET)
    return pg, s3


def start_cluster() -> LocalCluster:
    cluster = LocalCluster(state_dir=CLUSTER_DIR)
    if cluster.is_running():
        dead = cluster.dead_processes()
        if NODE in cluster.kubelet_nodes() and not dead:
            say(f"  reusing the running cluster ({CLUSTER_DIR})")
            return cluster
        # e.g. a kubelet that exited: pods would be scheduled to a node nothing runs them on
        say(f"  the cluster runs only in part ({', '.join(dead) or f'no {NODE}'} not running); restarting it")
        cluster_cmd("down")
    cluster_cmd("up", "--nodes", "1")
    return LocalCluster(state_dir=CLUSTER_DIR)


def values_for(refs: dict[str, str], s3_endpoint: str) -> dict:
    # The tag stays <version> while the code changes: the image ID in a pod annotation makes
    # `helm upgrade` roll the pods when a rebuilt image was imported.
    rollout = {"schedgen.io/image-id": images.image_id(refs["operator"])[:19]}
    s3_url = urlsplit(s3_endpoint)
    return {
        "operator": {"image": image_values(refs["operator"]), "replicas": 2, "logFormat": "text",
                     "podAnnotations": rollout},
        "runner": {"image": image_values(refs["runner"])},
        "api": {"image": image_values(refs["operator"]),  # the operator image serves the API
                "podAnnotations": rollout,
                "autoscaling": {"enabled": False}, "replicas": 1,
                "service": {"type": "NodePort", "port": 80},
                "uploadsPerMinute": UPLOADS_PER_MINUTE},
        # one S3 user per component (least privilege): s3_secrets() makes them
        "s3": {"bucket": BUCKET, "endpointUrl": s3_endpoint, "region": REGION,
               "operatorSecret": "schedgen-s3-operator", "apiSecret": "schedgen-s3-api"},
        # one DSN per role (least privilege): pg_secrets() makes them
        "postgres": {"operatorSecret": "schedgen-pg-operator", "apiSecret": "schedgen-pg-api",
                     "migrationSecret": "schedgen-pg-owner"},
        "jobDefaults": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "768Mi"}}},
        "queue": {"guardMaxUnschedulable": -1},
        # the cluster enforces NetworkPolicy: runner pods reach MinIO (its port on this machine's
        # address on the cluster network) and nothing else
        "networkPolicy": {"s3": {"ports": [{"port": s3_url.port, "protocol": "TCP"}],
                                 "to": [{"ipBlock": {"cidr": f"{s3_url.hostname}/32"}}]}},
    }


DEMO_LOGINS = {"operator": "schedgen_demo_operator", "api": "schedgen_demo_api"}


def pg_secrets(pg: devservices.PostgresServer, host: str) -> dict[str, dict[str, str]]:
    """The database admin's part (docs/deploy.md "Postgres"): a login per role with a
    password of its own (kept in the services' state, so a re-run keeps the Secrets valid);
    the Secrets hold the DSNs as pods reach them. The chart's hook Job migrates as the owner."""
    for role, user in DEMO_LOGINS.items():
        pg.create_login(user, in_role=f"schedgen_{role}")
    return {"schedgen-pg-owner": {"SCHEDGEN_DATABASE_URL": pg.dsn_for(pg.database, host=host)},
            **{f"schedgen-pg-{role}": {"SCHEDGEN_DATABASE_URL": pg.dsn_for(pg.database, host=host, user=user)}
               for role, user in DEMO_LOGINS.items()}}


def s3_secrets(s3: devservices.S3Server) -> dict[str, dict[str, str]]:
    """Each component's own S3 user (the runner Jobs need none: presigned URLs)."""
    return {f"schedgen-s3-{component}": s3.credentials_for(component) for component in s3.components}


def helm_upgrade(cfg, chart, release: str, values: dict, *, namespace: str, wait: str | None = None,
                 timeout: int = 300, force_conflicts: bool = True) -> dict:
    """`helm upgrade --force-conflicts`: Helm 4 upgrades with server-side apply, which refuses to
    change a field another field manager owns -- any field changed with kubectl since (e.g.
    `kubectl set image` or `kubectl scale`: "conflict with \"kubectl-set\""). The demo's release
    is the truth for its objects, so it takes such fields back (docs/deploy.md "Upgrade").
    helm-python-sdk's Config.upgrade has no such parameter (its native upgrade options do:
    ``force_conflicts``); while it lacks one, the native call is made with the wrapper's helpers."""
    import inspect

    if "force_conflicts" in inspect.signature(cfg.upgrade).parameters:
        return cfg.upgrade(chart, release, values, namespace=namespace, wait=wait, timeout=timeout,
                           force_conflicts=force_conflicts)
    from helm_python import _native
    from helm_python.config import _loads_obj, _opts

    handle, ref = cfg._chart_args(chart)
    payload = _native.call_string(
        "helm_upgrade", cfg._raw(), cfg._context_arg(None), handle, ref, release, json.dumps(values),
        _opts(namespace=namespace, timeout_seconds=timeout, wait=wait, force_conflicts=force_conflicts or None))
    return _loads_obj(payload)


def install_chart(cluster: LocalCluster, values: dict) -> None:
    import helm_python as helm

    cfg = helm.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE)
    chart = helm.Chart.load(str(CHART))
    try:
        cfg.status(RELEASE)
        exists = True
    except Exception:  # noqa: BLE001 -- no such release
        exists = False
    if exists:
        say(f"upgrading the Helm release {RELEASE} (--force-conflicts; waits for the pods) ...")
        helm_upgrade(cfg, chart, RELEASE, values, namespace=NAMESPACE, wait="watcher", timeout=300)
    else:
        say(f"installing the chart as Helm release {RELEASE} (waits for the pods) ...")
        cfg.install(chart, RELEASE, values, namespace=NAMESPACE, wait="watcher", timeout=300)


def wait_pods(cluster: LocalCluster) -> None:
    from kubernetes import client

    core = client.CoreV1Api(cluster.api_client())

    apps = client.AppsV1Api(cluster.api_client())

    def rolled_out(component: str) -> bool:
        """The Deployment's new pods all Ready and no old pod left (also not terminating)."""
        dep = apps.read_namespaced_deployment(f"{RELEASE}-{component}", NAMESPACE)
        st, want = dep.status, dep.spec.replicas
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/component={component},"
                                                                   f"app.kubernetes.io/instance={RELEASE}").items
        return ((st.observed_generation or 0) >= dep.metadata.generation and st.updated_replicas == want
                and st.ready_replicas == want and (st.replicas or 0) == want and len(pods) == want
                and all(p.metadata.deletion_timestamp is None for p in pods))

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if rolled_out("operator") and rolled_out("api"):
            return
        time.sleep(1)
    raise SystemExit("the operator and API pods did not become Ready; "
                     f"{ROOT}/hack/cluster --state-dir {CLUSTER_DIR} kubectl get pods -n {NAMESPACE}")


def api_url(cluster: LocalCluster) -> str:
    from kubernetes import client

    svc = client.CoreV1Api(cluster.api_client()).read_namespaced_service(f"{RELEASE}-api", NAMESPACE)
    return f"http://{cluster.node_ip(NODE)}:{svc.spec.ports[0].node_port}"


# --- the run --------------------------------------------------------------------------


def up() -> None:
    t0 = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    say("building or reusing the images (hack/images) ...")
    archives = images.save(images.CACHE_DIR / "archives", ["runner", "operator"])
    refs = images.refs(["runner", "operator"])
    say("starting Postgres and the S3 server (MinIO) ...")
    pg, s3 = start_services()
    say("starting the local cluster (control plane + a containerd/kubelet node) ...")
    cluster = start_cluster()
    host = cluster.host_address  # pods reach Postgres and MinIO on this machine here
    say(f"  Postgres {pg.dsn_for(pg.database, host=host).split('@')[-1]}, S3 {s3.endpoint_for(host)} (as pods see them)")
    say("importing the images into the node's containerd ...")
    for archive in archives:
        cluster.import_image(archive)
    kubectl_apply(cluster, {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": NAMESPACE, "labels": RESTRICTED}})
    for name, data in {**pg_secrets(pg, host), **s3_secrets(s3)}.items():
        kubectl_apply(cluster, {"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": data})
    install_chart(cluster, values_for(refs, s3.endpoint_for(host)))
    wait_pods(cluster)
    # a demo from before per-component S3 users left MinIO's root keys in a shared Secret
    subprocess.run([cluster.bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "delete", "secret", "-n", NAMESPACE,
                    "schedgen-s3", "--ignore-not-found"], check=True, capture_output=True)
    api = api_url(cluster)
    (STATE / "api-url").write_text(api)
    say(f"the API pod answers at {api} (NodePort)")
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{api}/readyz", timeout=3).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API at {api} is not ready")
        time.sleep(0.5)
    HEADERS["X-API-Key"] = demo_api_key(api, pg.dsn)
    jobs = upload_all(api)
    show(api, jobs)
    say(f"done in {time.monotonic() - t0:.1f} s; the stack keeps running:")
    kc = cluster.kubeconfig
    print(f"  API:      {api}/docs   (OpenAPI at {api}/openapi.json)")
    print(f"  upload:   curl -H \"X-API-Key: $(cat {STATE / 'api-key'})\" -F file=@some.pdf {api}/api/v1/uploads")
    print(f"  kubectl:  export KUBECONFIG={kc}; kubectl get pj,pods -n {NAMESPACE}")
    print(f"            (or: hack/cluster --state-dir {CLUSTER_DIR} kubectl get pj,pods -n {NAMESPACE})")
    print(f"  logs:     kubectl logs -n {NAMESPACE} deploy/{RELEASE}-operator; kubectl logs -n {NAMESPACE} deploy/{RELEASE}-api")
    print("  stop:     hack/demo.sh down")


# The API requires a key (api.allowAnonymous stays false): the demo makes one for tenant
# `demo` as a key administrator does (`schedgen-api add-key` with the schema owner's login:
# the API's own role may not make keys, migration 0007).
HEADERS: dict[str, str] = {}


def demo_api_key(api: str, owner_dsn: str) -> str:
    """The demo's API key: the one saved by an earlier run while it still works, else a
    new one (`schedgen-api add-key --tenant demo`, as the key administrator)."""
    saved = STATE / "api-key"
    if saved.exists():
        key = saved.read_text().strip()
        if httpx.get(f"{api}/api/v1/queue", headers={"X-API-Key": key}, timeout=10).status_code == 200:
            return key
    say("creating an API key for tenant demo (schedgen-api add-key, as the key administrator) ...")
    done = subprocess.run([sys.executable, "-m", "schedgen.api", "add-key", "--tenant", "demo",
                           "--description", "hack/demo.py"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SCHEDGEN_DATABASE_URL": owner_dsn})
    if done.returncode != 0:
        raise SystemExit(f"could not create an API key: {done.stderr.strip()}")
    key = done.stdout.strip().splitlines()[-1]
    saved.write_text(key + "\n")
    saved.chmod(0o600)
    return key


def upload(api: str, pdf: Path, key: str) -> dict:
    for attempt in range(5):
        try:
            with pdf.open("rb") as fh:
                response = httpx.post(f"{api}/api/v1/uploads", files={"file": (pdf.name, fh, "application/pdf")},
                                      headers={**HEADERS, "Idempotency-Key": key}, timeout=60)
        except httpx.TransportError as exc:  # e.g. a pod replaced by the upgrade; the key makes retries safe
            say(f"  {pdf.name}: {exc!r}; retrying")
            time.sleep(2)
            continue
        if response.status_code == 429 and attempt < 4:
            wait = int(response.headers.get("Retry-After") or 10)
            say(f"  429 RateLimited; retrying in {wait} s")
            time.sleep(wait)
            continue
        if response.status_code != 202:
            raise SystemExit(f"upload of {pdf.name} failed: {response.status_code} {response.text}")
        return response.json()
    raise SystemExit(f"upload of {pdf.name} failed: the API at {api} did not answer")


def upload_all(api: str) -> dict[str, tuple[str, float]]:
    run_id = uuid.uuid4().hex[:8]
    jobs = {}
    for pdf in PDFS:
        started = time.monotonic()
        job = upload(api, pdf, f"demo-{run_id}-{pdf.name}")
        jobs[pdf.name] = (job["id"], started)
        say(f"uploaded {pdf.name}: job {job['id']}")
    say("waiting for the ParseJobs (runner containers on the node) ...")
    deadline = time.monotonic() + 300
    last, done = None, {}
    while time.monotonic() < deadline:
        phases = {}
        for name, (job, started) in jobs.items():
            phases[name] = httpx.get(f"{api}/api/v1/jobs/{job}", headers=HEADERS, timeout=10).json().get("phase")
            if phases[name] in ("Succeeded", "Failed", "Cancelled") and name not in done:
                done[name] = time.monotonic() - started
        line = ", ".join(f"{name}: {phase}" for name, phase in phases.items())
        if line != last:
            say(f"  {line}")
            last = line
        if len(done) == len(jobs):
            for name, seconds in done.items():
                say(f"  {name}: upload -> {phases[name]} in {seconds:.1f} s")
            return jobs
        time.sleep(1)
    raise SystemExit("the ParseJobs did not finish within 300 s")


def show(api: str, jobs: dict[str, tuple[str, float]]) -> None:
    for name, (job, _) in jobs.items():
        status = httpx.get(f"{api}/api/v1/jobs/{job}", headers=HEADERS, timeout=10).json()
        print(f"\n{name}: job {job}: {status.get('phase')} {json.dumps(status.get('result') or status.get('error'))}")
        if status.get("phase") != "Succeeded":
            continue
        events = httpx.get(f"{api}/api/v1/jobs/{job}/events", headers=HEADERS, timeout=10).json()["events"]
        print(f"  {'module':<8} {'activity':<13} {'group':<5} {'day':<9} {'date':<10} {'time':<11} venues")
        for e in events:
            time_range = e["startTime"] + (f"-{e['endTime']}" if e["endTime"] else "")
            print(f"  {e['module']:<8} {e['activity']:<13} {e['group'] or '':<5} {e['day'] or '':<9} "
                  f"{e['date'] or '':<10} {time_range:<11} {'; '.join(e['venues'])}")


def down() -> None:
    if CLUSTER_DIR.exists():
        cluster_cmd("down")
    if SERVICES_DIR.exists():
        subprocess.run([sys.executable, str(ROOT / "hack" / "devservices.py"), "down",
                        "--state-dir", str(SERVICES_DIR)], check=True)
    say("stopped")


def status() -> None:
    subprocess.run([sys.executable, str(ROOT / "hack" / "devservices.py"), "status", "--state-dir", str(SERVICES_DIR)])
    subprocess.run([str(ROOT / "hack" / "cluster"), "--state-dir", str(CLUSTER_DIR), "status"])
    cluster = LocalCluster(state_dir=CLUSTER_DIR)
    if cluster.is_running():
        subprocess.run([cluster.bin("kubectl"), f"--kubeconfig={cluster.kubeconfig}", "get", "deploy,pods,svc,pj",
                        "-n", NAMESPACE])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="up", choices=("up", "down", "status"))
    {"up": up, "down": down, "status": status}[parser.parse_args().command]()


if __name__ == "__main__":
    main()
