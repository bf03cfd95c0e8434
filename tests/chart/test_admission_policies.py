"""The chart's other admission rules on the real kube-apiserver (hack/localkube): where a
ParseJob may take its PDF from (templates/source-policy.yaml), who may write runner Jobs
and pods (templates/runner-policy.yaml), and the CRD's own rule on quantities. Requests
are made as real identities by impersonation (kubectl --as), each with the RBAC a tenant
or the operator has."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from chartlib import GROUP, PLURAL, REPO_CRDS, VERSION, find, kubectl, render

pytestmark = pytest.mark.cluster

RELEASE_NS = "schedgen-system"


def policies(local_cluster, suffix: str, release: str, refused=None, api_namespace: str = "the-api"):
    """Apply the chart's policy (`-<suffix>`) and its binding; the docs applied.

    The kube-apiserver enforces a new policy only once its informer has it (about a
    second): `refused()`, a request the policy denies, is sent as a server dry run until
    it is denied, so what follows is never run against an API server not enforcing yet."""
    docs = render({"api": {"namespace": api_namespace}}, name=release, namespace=RELEASE_NS)
    picked = [d for d in find(docs, "ValidatingAdmissionPolicy") + find(docs, "ValidatingAdmissionPolicyBinding")
              if d["metadata"]["name"].endswith(suffix)]
    assert len(picked) == 2, [d["metadata"]["name"] for d in picked]
    for args in (("apply", "-f", str(REPO_CRDS)),
                 ("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")):
        kubectl(local_cluster, *args)
    kubectl(local_cluster, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": picked}))
    deadline = time.monotonic() + 30
    while refused is not None and refused().returncode == 0:
        assert time.monotonic() < deadline, f"{suffix}: the policy was not enforced within 30 s"
        time.sleep(0.3)
    return docs, picked


def remove(local_cluster, picked) -> None:
    for obj in picked:
        local_cluster.kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found",
                              check=False)


@pytest.fixture
def make_namespace(local_cluster, k8s_api_client):
    """Factory: a namespace where user `alice` (a tenant) and the operator's ServiceAccount
    may edit (the built-in `edit` ClusterRole: Jobs, pods, ParseJobs not included)."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_api_client)
    made: list[str] = []

    def make() -> str:
        name = f"ap-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true"}}})
        made.append(name)
        grant(local_cluster, name)
        return name

    yield make
    for name in made:
        core.delete_namespace(name)


@pytest.fixture
def namespace(make_namespace):
    return make_namespace()


def grant(local_cluster, name: str) -> None:
    rules = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "parsejobs", "namespace": name},
             "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "list"]}]}
    bindings = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                 "metadata": {"name": f"{who}-{role}", "namespace": name},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                 "subjects": [subject]}
                for who, subject in (("alice", {"kind": "User", "name": "alice"}),
                                     ("operator", {"kind": "User", "name": operator_user()}))
                for kind, role in (("ClusterRole", "edit"), ("Role", "parsejobs"))]
    kubectl(local_cluster, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [rules, *bindings]}))


def operator_user(release: str = "ap") -> str:
    return f"system:serviceaccount:{RELEASE_NS}:{release}-schedgen-operator"


def as_user(local_cluster, user: str, *args: str, manifest: dict | None = None):
    return kubectl(local_cluster, f"--as={user}", *args, check=False,
                   input=json.dumps(manifest) if manifest is not None else None)


def parsejob(key: str, bucket: str | None = None, resources: dict | None = None) -> dict:
    s3 = {"key": key, **({"bucket": bucket} if bucket else {})}
    spec = {"source": {"s3": s3}, **({"resources": resources} if resources else {})}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob",
            "metadata": {"name": f"pj-{uuid.uuid4().hex[:6]}"}, "spec": spec}


def test_a_parsejob_takes_its_pdf_only_from_its_own_upload_prefix(local_cluster, make_namespace):
    """One rule in every namespace, the API's included (it stores its uploads under its own
    prefix): two releases' policies in one cluster (each cluster-wide) admit each other's
    API's ParseJobs and a tenant's alike, and refuse the same keys everywhere."""
    tenant, api_a, api_b = make_namespace(), make_namespace(), make_namespace()

    def probe():
        return as_user(local_cluster, "alice", "create", "--dry-run=server", "-n", tenant, "-f", "-",
                       manifest=parsejob("uploads/namespaces/victim/x.pdf"))

    picked = [*policies(local_cluster, "-parsejob-source", "ap", refused=probe, api_namespace=api_a)[1],
              *policies(local_cluster, "-parsejob-source", "ap2", refused=probe, api_namespace=api_b)[1]]
    try:
        def create(ns: str, key: str, bucket: str | None = None):
            return as_user(local_cluster, "alice", "create", "-n", ns, "-f", "-", manifest=parsejob(key, bucket))

        def refused(done) -> bool:
            return done.returncode != 0 and "spec.source.s3" in done.stderr

        for ns in (tenant, api_a, api_b):
            for key in (f"uploads/namespaces/{ns}/x.pdf", f"uploads/namespaces/{ns}/sha256/{'ab' * 32}.pdf"):
                for bucket in (None, "schedgen-uploads"):  # absent: the chart's bucket
                    done = create(ns, key, bucket)
                    assert done.returncode == 0, (ns, key, bucket, done.stderr)
            other = api_a if ns != api_a else tenant
            for key, bucket in (("uploads/sha256/0123.pdf", None),  # the old shared prefix: anyone's PDF
                                (f"uploads/sha256/{'ab' * 32}.pdf", None),
                                (f"uploads/namespaces/{other}/x.pdf", None),  # another namespace's
                                (f"uploads/namespaces/{other}/sha256/{'ab' * 32}.pdf", None),
                                ("results/victim/uid.json", None),
                                (f"uploads/namespaces/{ns}/../{other}/x.pdf", None),
                                (f"uploads/namespaces/{ns}/..", None),
                                (f"uploads/namespaces/{ns}//x.pdf", None),
                                (f"uploads/namespaces/{ns}/x.pdf", "another-bucket")):
                done = create(ns, key, bucket)
                assert refused(done), (ns, key, bucket, done.stderr)
    finally:
        remove(local_cluster, picked)


def test_the_crd_refuses_quantities_that_are_not_more_than_zero(local_cluster, namespace):
    for args in (("apply", "-f", str(REPO_CRDS)),
                 ("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")):
        kubectl(local_cluster, *args)
    key = f"uploads/namespaces/{namespace}/x.pdf"
    ok = parsejob(key, resources={"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"memory": 1048576}})
    assert kubectl(local_cluster, "create", "-n", namespace, "-f", "-", input=json.dumps(ok)).returncode == 0
    for resources in ({"limits": {"cpu": "0", "memory": "0"}}, {"requests": {"memory": 0}},
                      {"limits": {"memory": "-1Mi"}}, {"requests": {"cpu": "0m"}}):
        done = kubectl(local_cluster, "create", "-n", namespace, "-f", "-", check=False,
                       input=json.dumps(parsejob(key, resources=resources)))
        assert done.returncode != 0 and "must be more than 0" in done.stderr, (resources, done.stderr)


def runner_job(name: str) -> dict:
    labels = {"app.kubernetes.io/managed-by": "schedgen-operator"}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": {"suspend": True, "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "runner", "image": "x", "command": ["true"]}]}}}}


def test_only_the_operator_and_the_control_plane_write_runner_jobs_and_pods(local_cluster, namespace):
    _, picked = policies(local_cluster, "-runner-writers", "ap", refused=lambda: as_user(
        local_cluster, "alice", "create", "--dry-run=server", "-n", namespace, "-f", "-",
        manifest=runner_job("probe")))
    try:
        ns = namespace
        denied = as_user(local_cluster, "alice", "create", "-n", ns, "-f", "-", manifest=runner_job("forged"))
        assert denied.returncode != 0 and "written only by the schedgen operator" in denied.stderr, denied.stderr
        # an ordinary Job of the tenant's is none of the policy's business
        plain = runner_job("plain")
        plain["metadata"]["labels"] = plain["spec"]["template"]["metadata"]["labels"] = {"app": "mine"}
        assert as_user(local_cluster, "alice", "create", "-n", ns, "-f", "-", manifest=plain).returncode == 0
        # the operator's Job; then the tenant may neither change nor delete it, nor relabel its own into one
        made = as_user(local_cluster, operator_user(), "create", "-n", ns, "-f", "-", manifest=runner_job("runner"))
        assert made.returncode == 0, made.stderr
        for args in (("patch", "job", "runner", "-p", '{"spec":{"suspend":false}}'),
                     ("label", "job", "runner", "app.kubernetes.io/managed-by-"),
                     ("delete", "job", "runner"),
                     ("label", "job", "plain", "app.kubernetes.io/managed-by=schedgen-operator")):
            done = as_user(local_cluster, "alice", *args, "-n", ns)
            assert done.returncode != 0 and "written only by" in done.stderr, (args, done.stderr)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forged-pod",
               "labels": {"app.kubernetes.io/managed-by": "schedgen-operator"}},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "runner", "image": "x"}]}}
        done = as_user(local_cluster, "alice", "create", "-n", ns, "-f", "-", manifest=pod)
        assert done.returncode != 0 and "written only by" in done.stderr, done.stderr
        # the control plane still works: the Job controller creates the runner Job's pods
        # (as system:serviceaccount:kube-system:job-controller) once it is resumed by the operator
        assert as_user(local_cluster, operator_user(), "patch", "job", "runner", "-n", ns,
                       "-p", '{"spec":{"suspend":false}}').returncode == 0
        deadline = time.monotonic() + 60
        while not json.loads(kubectl(local_cluster, "get", "pods", "-n", ns, "-l", "job-name=runner",
                                     "-o", "json").stdout)["items"]:
            assert time.monotonic() < deadline, "the Job controller made no pod for the operator's Job"
            time.sleep(0.5)
    finally:
        remove(local_cluster, picked)


def operator_job(name: str, image: str, **pod) -> dict:
    """A runner Job as the operator builds it (runner_jobs.SINGLE), `pod` fields changed."""
    from schedgen.operator.config import OperatorConfig
    from schedgen.operator.runner_jobs import SINGLE
    from schedgen.parsejob import ParseJob

    pj = ParseJob.of({"metadata": {"name": name, "namespace": "x", "uid": str(uuid.uuid4())},
                      "spec": {"source": {"s3": {"key": "k"}}}})
    job = SINGLE.build([pj], OperatorConfig(runner_image=image), {pj.uid: {"source": "", "result": ""}})
    job["metadata"]["name"] = name
    job["metadata"].pop("namespace")
    job["metadata"]["ownerReferences"] = []
    spec = job["spec"]["template"]["spec"]
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume["secret"]["secretName"] = name
    spec.update(pod)
    return job


def test_the_operator_may_create_runner_jobs_only(local_cluster, namespace):
    """The operator's `jobs create` reaches every namespace it serves: what its Jobs may
    hold is pinned (templates/runner-policy.yaml, `-runner-job-shape`)."""
    docs, picked = policies(local_cluster, "-runner-job-shape", "ap", refused=lambda: as_user(
        local_cluster, operator_user(), "create", "--dry-run=server", "-n", namespace, "-f", "-",
        manifest=operator_job("probe", "evil:latest")))
    try:
        image = next(e["value"] for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
                     for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
                     if e["name"] == "SCHEDGEN_RUNNER_IMAGE")

        def create(job: dict):
            return as_user(local_cluster, operator_user(), "create", "-n", namespace, "-f", "-", manifest=job)

        made = create(operator_job("fine", image))
        assert made.returncode == 0, made.stderr  # what the operator really builds passes
        volumes = operator_job("v", image)["spec"]["template"]["spec"]["volumes"]
        # (a Job must stay valid as a Job, else the API server refuses it before any policy)
        other_secret = [{**v, "secret": {**v["secret"], "secretName": "db"}} if "secret" in v else v for v in volumes]
        bad = {"another-image": operator_job("a", "evil:latest"),
               "host-path": operator_job("b", image, volumes=[*volumes, {"name": "h", "hostPath": {"path": "/"}}]),
               "another-secret": operator_job("c", image, volumes=other_secret),
               "token": operator_job("d", image, automountServiceAccountToken=True),
               "host-network": operator_job("e", image, hostNetwork=True),
               # runner.imagePullSecrets is empty here: no borrowing a pull credential of the namespace
               "another-pull-secret": operator_job("h", image, imagePullSecrets=[{"name": "regcred"}])}
        env_from = operator_job("f", image)
        env_from["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "db"}}]
        bad["env-from-secret"] = env_from
        unlabelled = operator_job("g", image)
        unlabelled["metadata"]["labels"] = unlabelled["spec"]["template"]["metadata"]["labels"] = {"app": "x"}
        bad["not-a-runner"] = unlabelled
        for what, job in bad.items():
            done = create(job)
            assert done.returncode != 0 and "denied request" in done.stderr.lower(), (what, done.stderr)
        # a tenant's own Job (not the operator's) is none of this policy's business
        assert as_user(local_cluster, "alice", "create", "-n", namespace, "-f", "-",
                       manifest=operator_job("mine", "anything:1", automountServiceAccountToken=True)).returncode == 0
    finally:
        remove(local_cluster, picked)
