"""The chart's ValidatingAdmissionPolicy on the real kube-apiserver (hack/localkube): a
ParseJob that claims another tenant than its namespace's, or a priority the namespace
may not use, is rejected at admission; namespaces without a tenant label are not bound."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from chartlib import GROUP, PLURAL, REPO_CRDS, VERSION, find, kubectl, one, render

pytestmark = pytest.mark.cluster


def parsejob(name: str, tenant: str | None, priority: str | None = None, labels: dict | None = None) -> dict:
    spec = {"source": {"s3": {"key": "uploads/namespaces/any/x.pdf"}}}
    if tenant:
        spec["tenant"] = tenant
    if priority:
        spec["priority"] = priority
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ParseJob",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


@pytest.fixture
def tenant_policy(local_cluster):
    """The chart's policy and binding (a release named uniquely: they are cluster-scoped)."""
    release = f"tb{uuid.uuid4().hex[:6]}"
    docs = render({}, name=release)
    (policy,) = [d for d in find(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-tenant-binding")]
    binding = one(docs, "ValidatingAdmissionPolicyBinding", policy["metadata"]["name"])
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    for args in (("apply", "-f", str(REPO_CRDS)),
                 ("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")):
        done = local_cluster.kubectl(*args, check=False)
        assert done.returncode == 0, done.stderr
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})
    kubectl(local_cluster, "apply", "-f", "-", input=manifest)
    yield policy
    for kind, obj in (("validatingadmissionpolicybinding", binding), ("validatingadmissionpolicy", policy)):
        local_cluster.kubectl("delete", kind, obj["metadata"]["name"], "--ignore-not-found", check=False)


@pytest.fixture
def namespaces(k8s_api_client):
    from kubernetes import client

    core = client.CoreV1Api(k8s_api_client)
    suffix = uuid.uuid4().hex[:5]
    made = {}
    for key, labels in {"team-a": {"schedgen.io/tenant": "team-a"},
                        "team-a-high": {"schedgen.io/tenant": "team-a", "schedgen.io/max-priority": "high"},
                        "team-a-low": {"schedgen.io/tenant": "team-a", "schedgen.io/max-priority": "low"},
                        "unbound": {}}.items():
        name = f"tb-{key}-{suffix}"
        core.create_namespace({"metadata": {"name": name, "labels": {"schedgen.test": "true", **labels}}})
        made[key] = name
    yield made
    for name in made.values():
        try:
            core.delete_namespace(name)
        except Exception:  # noqa: BLE001
            pass


def create(k8s_api_client, namespace: str, body: dict):
    """(status, message): 201 when created, else the API server's refusal."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        client.CustomObjectsApi(k8s_api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                 body)
        return 201, ""
    except ApiException as exc:
        return exc.status, json.loads(exc.body).get("message", "")


def wait_enforced(k8s_api_client, namespace: str, timeout: float = 60) -> None:
    """The API server loads a new policy asynchronously: probe until it refuses."""
    from kubernetes import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = f"probe-{uuid.uuid4().hex[:6]}"
        status, _ = create(k8s_api_client, namespace, parsejob(name, "someone-else"))
        if status != 201:
            return
        client.CustomObjectsApi(k8s_api_client).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                 name)
        time.sleep(0.5)
    raise AssertionError("the policy was not enforced within the timeout")


def test_the_policy_binds_tenants_to_namespaces(tenant_policy, namespaces, k8s_api_client, local_cluster):
    ns = namespaces
    wait_enforced(k8s_api_client, ns["team-a"])
    # its CEL type-checks against the CRD's schema without warnings
    status = json.loads(local_cluster.kubectl("get", "validatingadmissionpolicy", tenant_policy["metadata"]["name"],
                                              "-o", "json").stdout).get("status", {})
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status

    # another tenant than the namespace's: rejected at admission, saying why
    code, message = create(k8s_api_client, ns["team-a"], parsejob("claims-b", "team-b"))
    assert code in (403, 422) and "spec.tenant must be team-a" in message, message
    # no spec.tenant means the namespace's name (as the operator reads it): not team-a here
    code, message = create(k8s_api_client, ns["team-a"], parsejob("no-tenant", None))
    assert code in (403, 422) and "spec.tenant must be team-a" in message, message
    code, message = create(k8s_api_client, ns["team-a"],
                           parsejob("label-b", "team-a", labels={"schedgen.io/tenant": "team-b"}))
    assert code in (403, 422) and "label schedgen.io/tenant must be team-a" in message, message
    # the namespace's own tenant: admitted, priority up to normal without a max-priority label
    assert create(k8s_api_client, ns["team-a"], parsejob("own", "team-a"))[0] == 201
    assert create(k8s_api_client, ns["team-a"], parsejob("own-low", "team-a", "low"))[0] == 201
    code, message = create(k8s_api_client, ns["team-a"], parsejob("own-high", "team-a", "high"))
    assert code in (403, 422) and "priority high is not allowed" in message, message
    # schedgen.io/max-priority raises or lowers that
    assert create(k8s_api_client, ns["team-a-high"], parsejob("high", "team-a", "high"))[0] == 201
    assert create(k8s_api_client, ns["team-a-low"], parsejob("low", "team-a", "low"))[0] == 201
    assert create(k8s_api_client, ns["team-a-low"], parsejob("normal", "team-a"))[0] in (403, 422)
    # a namespace without a tenant label is not bound (the API's namespace, serving every tenant)
    assert create(k8s_api_client, ns["unbound"], parsejob("any", "team-b", "high"))[0] == 201

    # metadata-only updates of an admitted object pass (the operator's finalizer)
    from kubernetes import client

    custom = client.CustomObjectsApi(k8s_api_client)
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns["team-a"], PLURAL, "own",
                                          {"metadata": {"finalizers": ["schedgen.io/test"]}})
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns["team-a"], PLURAL, "own",
                                          {"metadata": {"finalizers": None}})
    # and exactly the refused ones are missing
    names = {o["metadata"]["name"] for o in custom.list_namespaced_custom_object(GROUP, VERSION, ns["team-a"],
                                                                                PLURAL)["items"]}
    assert names == {"own", "own-low"}


def test_the_switch_and_the_operator_grant():
    docs = render({"tenantBinding": {"enabled": False}})
    assert not [d for d in find(docs, "ValidatingAdmissionPolicy") + find(docs, "ValidatingAdmissionPolicyBinding")
                if "tenant-binding" in d["metadata"]["name"]]
    assert {d["metadata"]["name"] for d in find(docs, "ValidatingAdmissionPolicy")} == {
        "schedgen-parsejob-source", "schedgen-runner-writers", "schedgen-runner-job-shape"}  # the others stay
    docs = render({})
    role = one(docs, "ClusterRole", "schedgen-tenant-binding-operator")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]
    subjects = one(docs, "ClusterRoleBinding", "schedgen-tenant-binding-operator")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "schedgen-operator", "namespace": "schedgen-system"}]


def test_the_api_requires_keys_unless_anonymous_is_allowed():
    def env(values):
        api = one(render(values), "Deployment", "schedgen-api")
        return {e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}

    default = env({})
    assert default["SCHEDGEN_API_ALLOW_ANONYMOUS"] == "false" and "SCHEDGEN_API_REQUIRE_KEY" not in default
    assert env({"api": {"allowAnonymous": True}})["SCHEDGEN_API_ALLOW_ANONYMOUS"] == "true"
