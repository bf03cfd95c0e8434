"""The local demo stack: control plane, Postgres, S3, operator and API, with the real
UP schedule PDFs uploaded through the API.

    hack/demo.sh            # set up, start everything, upload the PDFs, show the events
    hack/demo.sh status     # what is running
    hack/demo.sh down       # stop everything (by pid); state stays in .local/demo/

Everything runs as local processes on loopback with free ports; the Kubernetes Job pods
are processes started by the node agent (hack/localkube).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".local" / "demo"
VENV_BIN = ROOT / ".venv" / "bin"
PDFS = sorted((ROOT.parent / "shared" / "fixtures" / "up").glob("*.pdf"))
NAMESPACE = "demo"
OPERATOR_NS = "schedgen-system"
BUCKET = "schedgen-uploads"
REGION = "us-east-1"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=True, text=True, **kwargs)


# --- the pieces -----------------------------------------------------------------------


def services_up() -> dict[str, str]:
    out = run(str(VENV_BIN / "python"), str(ROOT / "hack" / "devservices.py"), "up",
              "--state-dir", str(STATE / "services"), "--migrate", capture_output=True).stdout
    # SCHEDGEN_DATABASE_URL, SCHEDGEN_S3_ENDPOINT_URL and the S3 server's AWS_* credentials
    env = dict(line.split("=", 1) for line in out.splitlines() if line.startswith(("SCHEDGEN_", "AWS_")))
    env["AWS_REGION"] = REGION
    import boto3

    s3 = boto3.client("s3", endpoint_url=env["SCHEDGEN_S3_ENDPOINT_URL"], region_name=REGION,
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    return env


def cluster(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return run(str(ROOT / "hack" / "cluster"), "--state-dir", str(STATE / "cluster"), *args,
               capture_output=capture)


def kubeconfig() -> str:
    return str(STATE / "cluster" / "admin.kubeconfig")


def install(env: dict[str, str]) -> None:
    kubectl = lambda *a, **k: cluster("kubectl", *a, **k)  # noqa: E731
    kubectl("apply", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io")
    for ns in (OPERATOR_NS, NAMESPACE):
        manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        subprocess.run([str(ROOT / "hack" / "cluster"), "--state-dir", str(STATE / "cluster"),
                        "kubectl", "apply", "-f", "-"], input=json.dumps(manifest), text=True, check=True,
                       capture_output=True)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "schedgen-operator",
                                                                       "namespace": OPERATOR_NS},
              "data": {"maxConcurrent": "4", "maxPerTenant": "4"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "schedgen-runner", "namespace": NAMESPACE},
              "stringData": {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                  "SCHEDGEN_DATABASE_URL")}}
    for manifest in (config, secret):
        subprocess.run([str(ROOT / "hack" / "cluster"), "--state-dir", str(STATE / "cluster"),
                        "kubectl", "apply", "-f", "-"], input=json.dumps(manifest), text=True, check=True,
                       capture_output=True)


def start_process(name: str, argv: list[str], env: dict[str, str]) -> None:
    stop_process(name)
    log = open(STATE / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True, cwd=str(STATE))
    (STATE / f"{name}.pid").write_text(str(proc.pid))


def stop_process(name: str) -> None:
    pidfile = STATE / f"{name}.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.killpg(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink(missing_ok=True)


def wait_http(url: str, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} did not come up; see {STATE}/*.log")


# --- the run --------------------------------------------------------------------------


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    say("starting Postgres and the S3 server (MinIO) ...")
    env = services_up()
    say(f"  Postgres {env['SCHEDGEN_DATABASE_URL'].split('@')[-1]}, S3 {env['SCHEDGEN_S3_ENDPOINT_URL']}")
    say("starting the local control plane (etcd, kube-apiserver, kube-controller-manager, node agent) ...")
    cluster("up", "--nodes", "1")
    install(env)
    common = {**env, "KUBECONFIG": kubeconfig(), "SCHEDGEN_LOG_FORMAT": "json",
              "SCHEDGEN_DEFAULT_BUCKET": BUCKET, "SCHEDGEN_S3_BUCKET": BUCKET, "PYTHONUNBUFFERED": "1"}
    metrics_port, api_port = free_port(), free_port()
    say("starting the operator ...")
    start_process("operator", [str(VENV_BIN / "schedgen-operator"), "--standalone"], {
        **common, "SCHEDGEN_OPERATOR_NAMESPACE": OPERATOR_NS, "SCHEDGEN_OPERATOR_CONFIGMAP": "schedgen-operator",
        "SCHEDGEN_METRICS_PORT": str(metrics_port), "SCHEDGEN_LIVENESS_PORT": str(free_port())})
    wait_http(f"http://127.0.0.1:{metrics_port}/metrics", "the operator")
    say("starting the upload API ...")
    start_process("api", [str(VENV_BIN / "schedgen-api"), "--host", "127.0.0.1", "--port", str(api_port)],
                  {**common, "SCHEDGEN_API_NAMESPACE": NAMESPACE})
    api = f"http://127.0.0.1:{api_port}"
    wait_http(f"{api}/readyz", "the API")
    (STATE / "api-url").write_text(api)
    jobs = upload_all(api)
    show(api, jobs)
    say("the stack keeps running:")
    print(f"  API:      {api}/docs   (OpenAPI at {api}/openapi.json)")
    print(f"  kubectl:  export KUBECONFIG={kubeconfig()}; "
          f"{STATE.parent.parent / 'hack' / 'cluster'} --state-dir {STATE / 'cluster'} kubectl get pj -A")
    print(f"  metrics:  http://127.0.0.1:{metrics_port}/metrics")
    print(f"  logs:     {STATE}/operator.log, {STATE}/api.log")
    print("  stop:     hack/demo.sh down")


def upload_all(api: str) -> dict[str, str]:
    jobs = {}
    for pdf in PDFS:
        with pdf.open("rb") as fh:
            response = httpx.post(f"{api}/api/v1/uploads", files={"file": (pdf.name, fh, "application/pdf")},
                                  headers={"Idempotency-Key": f"demo-{pdf.name}"}, timeout=30)
        if response.status_code != 202:
            raise SystemExit(f"upload of {pdf.name} failed: {response.status_code} {response.text}")
        job = response.json()
        jobs[pdf.name] = job["id"]
        say(f"uploaded {pdf.name}: job {job['id']}")
    say("waiting for the ParseJobs ...")
    deadline = time.monotonic() + 300
    last = None
    while time.monotonic() < deadline:
        phases = {name: httpx.get(f"{api}/api/v1/jobs/{job}", timeout=10).json().get("phase")
                  for name, job in jobs.items()}
        line = ", ".join(f"{name}: {phase}" for name, phase in phases.items())
        if line != last:
            say(f"  {line}")
            last = line
        if all(phase in ("Succeeded", "Failed", "Cancelled") for phase in phases.values()):
            return jobs
        time.sleep(1)
    raise SystemExit("the ParseJobs did not finish within 300 s")


def show(api: str, jobs: dict[str, str]) -> None:
    for name, job in jobs.items():
        status = httpx.get(f"{api}/api/v1/jobs/{job}", timeout=10).json()
        print(f"\n{name}: {status.get('phase')} {json.dumps(status.get('result') or status.get('error'))}")
        if status.get("phase") != "Succeeded":
            continue
        events = httpx.get(f"{api}/api/v1/jobs/{job}/events", timeout=10).json()["events"]
        print(f"  {'module':<8} {'activity':<13} {'group':<5} {'day':<9} {'date':<10} {'time':<11} venues")
        for e in events:
            time_range = e["startTime"] + (f"-{e['endTime']}" if e["endTime"] else "")
            print(f"  {e['module']:<8} {e['activity']:<13} {e['group'] or '':<5} {e['day'] or '':<9} "
                  f"{e['date'] or '':<10} {time_range:<11} {'; '.join(e['venues'])}")


def down() -> None:
    for name in ("api", "operator"):
        stop_process(name)
    if (STATE / "cluster").exists():
        cluster("down")
    if (STATE / "services").exists():
        run(str(VENV_BIN / "python"), str(ROOT / "hack" / "devservices.py"), "down",
            "--state-dir", str(STATE / "services"))
    say("stopped")


def status() -> None:
    for name in ("operator", "api"):
        pidfile = STATE / f"{name}.pid"
        print(f"{name}: {'pid ' + pidfile.read_text() if pidfile.exists() else 'stopped'}")
    subprocess.run([str(VENV_BIN / "python"), str(ROOT / "hack" / "devservices.py"), "status",
                    "--state-dir", str(STATE / "services")])
    subprocess.run([str(ROOT / "hack" / "cluster"), "--state-dir", str(STATE / "cluster"), "status"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="up", choices=("up", "down", "status"))
    {"up": up, "down": down, "status": status}[parser.parse_args().command]()


if __name__ == "__main__":
    main()
