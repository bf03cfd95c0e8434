"""From `helm install` to the first upload, offline: NOTES.txt for the main value sets (its
commands are valid shell and name real objects), the example ParseJob against the CRD and
the source-key rule, the API's Ingress / HTTPRoute (publicUrl, trustedProxies), the
operator's PodDisruptionBudget, topology spread, and the `helm test` pod. The commands NOTES
prints run against a real release in tests/chart/test_install.py."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from chartlib import CHART, REPO_CRDS, find, notes, one, render
from noteslib import commands, one_starting, starting

PROXIES = {"trustedProxies": ["10.0.0.0/8"]}
INGRESS = {"api": {**PROXIES, "ingress": {"enabled": True, "host": "schedule.example.org",
                                          "className": "nginx", "tls": {"secretName": "schedule-tls"}}}}
HTTPROUTE = {"api": {**PROXIES, "httpRoute": {"enabled": True, "hostnames": ["schedule.example.org"],
                                              "parentRefs": [{"name": "public", "namespace": "gw",
                                                              "sectionName": "https"}]}}}
ROLE_SECRETS = {"postgres": {"migrationSecret": "pg-owner", "operatorSecret": "pg-op", "apiSecret": "pg-api"}}
# The main value sets NOTES must be right for.
NOTES_SETS = {
    "default": {},
    "role-secrets": ROLE_SECRETS,
    "key-admin": {"postgres": {**ROLE_SECRETS["postgres"], "keyAdminSecret": "pg-keys"}},
    "api-disabled": {"api": {"enabled": False}},
    "ingress": {**INGRESS, **ROLE_SECRETS},
    "httproute": HTTPROUTE,
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}, **ROLE_SECRETS},
    "no-networkpolicy": {"networkPolicy": {"enabled": False}},
}
TROUBLESHOOTING = "https://github.com/schedgen/schedgen/blob/main/docs/troubleshooting.md"


def _api_env(docs) -> dict:
    api = one(docs, "Deployment", "schedgen-api")
    return {e["name"]: e.get("value") for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}


def _render_error(values) -> str:
    import helm_python as helm

    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError)) as err:
        render(values)
    return str(err.value)


# --- NOTES.txt ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NOTES_SETS))
def test_notes_commands_are_valid_shell_naming_real_objects(name):
    text = notes(NOTES_SETS[name])
    cmds = commands(text)
    assert cmds and all(c.startswith(("kubectl", "helm", "curl", "export", "aws", "cat")) for c in cmds), cmds
    for cmd in cmds:
        done = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True, check=False)
        assert done.returncode == 0, (cmd, done.stderr)
    # nothing the runner no longer needs; no blank names (a value that no longer exists)
    for stale in ("s3Secret", "databaseSecret", "AWS_SECRET_ACCESS_KEY", "runner.s3", "<no value>"):
        assert stale not in text, stale
    assert not re.search(r"(secret generic|Secret|svc/|-n) +(\s|$|,|\.)", text), text
    assert TROUBLESHOOTING in text
    assert (CHART.parents[1] / "docs" / "troubleshooting.md").exists()
    kinds = yaml.safe_load(one_starting(cmds, "cat <<'YAML'").split("\n", 1)[1].rsplit("\n", 1)[0])
    assert kinds["spec"]["source"]["s3"]["key"] == "uploads/namespaces/NAMESPACE/week-12.pdf"


def test_notes_with_the_api_say_how_to_make_a_key_and_reach_it():
    cmds = commands(notes(ROLE_SECRETS))
    add_key = one_starting(cmds, "kubectl -n schedgen-system run schedgen-add-key")
    assert add_key.endswith("schedgen-api add-key --tenant TENANT")
    overrides = json.loads(re.search(r"--overrides='([^']+)'", add_key).group(1))
    spec = overrides["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"] is True
    env = spec["containers"][0]["env"]
    # the schema owner's Secret by reference, never a value; the container the run makes
    assert env == [{"name": "SCHEDGEN_DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": "pg-owner", "key": "SCHEDGEN_DATABASE_URL"}}}]
    assert spec["containers"][0]["name"] == "schedgen-add-key" and "--override-type=strategic" in add_key
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    one_starting(cmds, "kubectl -n schedgen-system create secret generic schedgen-test-api-key --from-literal=api-key=KEY")
    one_starting(cmds, "kubectl -n schedgen-system port-forward svc/schedgen-api 8080:80")
    assert one_starting(cmds, "export") == "export SCHEDGEN_API_URL=http://127.0.0.1:8080 SCHEDGEN_API_KEY=KEY"
    assert len(starting(cmds, "curl")) == 3
    one_starting(cmds, "helm test schedgen -n schedgen-system")
    # a key administrator's own Secret wins over the owner's
    keys = one_starting(commands(notes(NOTES_SETS["key-admin"])), "kubectl -n schedgen-system run")
    assert '"name":"pg-keys"' in keys and "pg-owner" not in keys


def test_notes_without_a_database_secret_say_what_to_set():
    text = notes({})
    assert "add-key" in text and "postgres.keyAdminSecret" in text
    assert not starting(commands(text), "kubectl -n schedgen-system run")


def test_notes_with_an_ingress_or_route_give_its_https_address():
    for values in (INGRESS, HTTPROUTE):
        cmds = commands(notes(values))
        assert one_starting(cmds, "export") == "export SCHEDGEN_API_URL=https://schedule.example.org SCHEDGEN_API_KEY=KEY"
        assert not starting(cmds, "kubectl -n schedgen-system port-forward")


def test_notes_without_the_api_give_the_kubectl_path_only():
    text = notes({"api": {"enabled": False}})
    cmds = commands(text)
    assert not [c for c in cmds if "add-key" in c or "port-forward" in c or c.startswith(("helm test", "curl"))]
    assert starting(cmds, "aws s3 cp week-12.pdf s3://schedgen-uploads/uploads/namespaces/NAMESPACE/week-12.pdf")
    assert starting(cmds, "kubectl -n NAMESPACE wait pj/week-12")


@pytest.mark.parametrize("values,namespaces", [
    ({"watch": {"namespaces": ["team-a", "team-b"]}}, "team-a, team-b, schedgen-system"),
    ({"networkPolicy": {"runnerNamespaces": ["team-c"]}}, "team-c, schedgen-system"),
    ({"networkPolicy": {"enabled": False}}, None),
])
def test_notes_name_the_namespaces_a_parsejob_may_run_in(values, namespaces):
    text = " ".join(notes(values).split())
    if namespaces:
        assert f"NAMESPACE: one of {namespaces}" in text
    else:
        assert "NAMESPACE: any namespace" in text
    s3 = notes({"s3": {"endpointUrl": "http://minio.storage:9000", "bucket": "uploads"}})
    assert "aws s3 cp week-12.pdf s3://uploads/uploads/namespaces/NAMESPACE/week-12.pdf " \
           "--endpoint-url http://minio.storage:9000" in s3


def test_notes_say_runner_pull_secrets_belong_in_the_parsejobs_namespace():
    """A runner pod pulls in its ParseJob's namespace: without the Secret there it waits in
    ImagePullBackOff and its run fails ImagePullFailed, so NOTES names the Secrets where
    users look."""
    assert "runner.imagePullSecrets" not in notes()
    text = " ".join(notes({"runner": {"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]}}).split())
    assert "Runner pods pull their image with Secret(s) regcred, mirror (runner.imagePullSecrets): " \
           "make them in NAMESPACE too" in text


def test_example_parsejob_follows_the_crd_and_the_source_rule():
    text = (CHART / "examples" / "parsejob.yaml").read_text()
    example = yaml.safe_load(text)
    crd = yaml.safe_load((REPO_CRDS / "parsejobs.schedgen.io.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    assert example["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert example["kind"] == crd["spec"]["names"]["kind"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec = example["spec"]
    assert set(spec) <= set(schema["properties"]), set(spec) - set(schema["properties"])
    for field in ("scheduleType", "priority"):
        assert spec[field] in schema["properties"][field]["enum"]
    for field in ("deadlineSeconds", "maxRetries"):
        prop = schema["properties"][field]
        assert prop["minimum"] <= spec[field] <= prop["maximum"]
    # the key is under uploads/namespaces/<the namespace the example is applied in>/, no bucket
    namespaces = set(re.findall(r"kubectl apply -n (\S+)", text))
    assert namespaces == {"team-a"}
    assert spec["source"]["s3"]["key"].startswith("uploads/namespaces/team-a/")
    assert "bucket" not in spec["source"]["s3"]


# --- Ingress / HTTPRoute ----------------------------------------------------------------


def test_ingress_routes_the_api_host_with_tls_and_https_feed_links():
    docs = render(INGRESS)
    ingress = one(docs, "Ingress", "schedgen-api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["schedule.example.org"], "secretName": "schedule-tls"}]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "schedule.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "schedgen-api", "port": {"name": "http"}}
    env = _api_env(docs)
    assert env["SCHEDGEN_API_PUBLIC_URL"] == "https://schedule.example.org"
    assert env["SCHEDGEN_API_TRUSTED_PROXIES"] == "10.0.0.0/8"
    assert not find(docs, "HTTPRoute")
    no_tls = {"api": {**PROXIES, "ingress": {"enabled": True, "host": "schedule.example.org"}}}
    assert _api_env(render(no_tls))["SCHEDGEN_API_PUBLIC_URL"] == "http://schedule.example.org"
    mine = {"api": {**INGRESS["api"], "publicUrl": "https://up.example.org/schedule"}}
    assert _api_env(render(mine))["SCHEDGEN_API_PUBLIC_URL"] == "https://up.example.org/schedule"
    assert _api_env(render({}))["SCHEDGEN_API_PUBLIC_URL"] == ""
    assert not find(render({}), "Ingress") and not find(render({**INGRESS, "api": {**INGRESS["api"], "enabled": False}}), "Ingress")


def test_httproute_attaches_to_the_gateway_and_feed_links_are_https():
    docs = render(HTTPROUTE)
    route = one(docs, "HTTPRoute", "schedgen-api")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == HTTPROUTE["api"]["httpRoute"]["parentRefs"]
    assert route["spec"]["hostnames"] == ["schedule.example.org"]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "schedgen-api", "port": 80}]
    assert _api_env(docs)["SCHEDGEN_API_PUBLIC_URL"] == "https://schedule.example.org"
    assert not find(docs, "Ingress")


@pytest.mark.parametrize("values,message", [
    ({"api": {"ingress": {"enabled": True, "host": "schedule.example.org"}}},
     "api.ingress.enabled needs api.trustedProxies"),
    ({"api": {"httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]}}},
     "api.httpRoute.enabled needs api.trustedProxies"),
    ({"api": {**PROXIES, "ingress": {"enabled": True}}}, "api.ingress.enabled needs api.ingress.host"),
    ({"api": {**PROXIES, "httpRoute": {"enabled": True}}}, "api.httpRoute.enabled needs api.httpRoute.parentRefs"),
    ({"api": {**PROXIES, "ingress": {"enabled": True, "host": "Not A Host"}}}, "/api/ingress/host"),
    ({"api": {"ingress": {"tls": {"secretName": "x", "crt": "---"}}}}, "crt"),  # certificates by reference only
])
def test_ingress_and_route_refuse_incomplete_values_clearly(values, message):
    assert message in _render_error(values)


# --- operator PodDisruptionBudget, topology spread ---------------------------------------


def test_operator_pdb_keeps_one_replica_through_drains():
    pdb = one(render({}), "PodDisruptionBudget", "schedgen-operator")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    op = one(render({}), "Deployment", "schedgen-operator")
    assert pdb["spec"]["selector"]["matchLabels"] == op["spec"]["selector"]["matchLabels"]
    custom = one(render({"operator": {"replicas": 3, "podDisruptionBudget": {"maxUnavailable": 1}}}),
                 "PodDisruptionBudget", "schedgen-operator")
    assert custom["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
    single = render({"operator": {"replicas": 1, "standalone": True}})
    assert not find(single, "PodDisruptionBudget", "schedgen-operator")  # it would only block drains
    off = render({"operator": {"podDisruptionBudget": {"enabled": False}}})
    assert not find(off, "PodDisruptionBudget", "schedgen-operator")
    assert "/operator/podDisruptionBudget/minAvailable" in _render_error(
        {"operator": {"podDisruptionBudget": {"minAvailable": 0}}})


@pytest.mark.parametrize("component", ["operator", "api"])
def test_replicas_spread_over_nodes_by_default(component):
    name = f"schedgen-{component}"
    spec = one(render({}), "Deployment", name)["spec"]
    constraints = spec["template"]["spec"]["topologySpreadConstraints"]
    assert constraints == [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway", "matchLabelKeys": ["pod-template-hash"],
                            "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]}}]
    zone = {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "mine"}}}
    mine = one(render({component: {"topologySpreadConstraints": [zone]}}), "Deployment", name)
    assert mine["spec"]["template"]["spec"]["topologySpreadConstraints"] == [zone]  # its own selector kept
    none = one(render({component: {"topologySpreadConstraints": []}}), "Deployment", name)
    assert "topologySpreadConstraints" not in none["spec"]["template"]["spec"]
    assert f"/{component}/topologySpreadConstraints/0/whenUnsatisfiable" in _render_error(
        {component: {"topologySpreadConstraints": [{**zone, "whenUnsatisfiable": "Sometimes"}]}})


# --- helm test ----------------------------------------------------------------------------


def _test_pod(values=None) -> dict:
    return one(render(values or {}), "Pod", "schedgen-api-test")


def test_helm_test_pod_is_a_restricted_hook_with_the_key_by_reference():
    pod = _test_pod()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["restartPolicy"] == "Never"
    c = spec["containers"][0]
    assert c["image"] == "schedgen-operator:0.1.0" and c["command"] == ["python3", "/test/api-test.py"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["resources"]["limits"]["memory"] == "96Mi"
    env = {e["name"]: e for e in c["env"]}
    assert env["SCHEDGEN_API_KEY"]["valueFrom"]["secretKeyRef"] == \
        {"name": "schedgen-test-api-key", "key": "api-key", "optional": True}
    assert env["TEST_API_HOST"]["value"] == "$(SCHEDGEN_API_SERVICE_HOST)"  # the Service's own variables
    cm = one(render({}), "ConfigMap", "schedgen-api-test")
    assert cm["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert cm["data"]["api-test.py"] == (CHART / "files" / "api-test.py").read_text()
    custom = _test_pod({"tests": {"apiKeySecret": "my-key", "apiKeySecretKey": "token"}})
    ref = next(e for e in custom["spec"]["containers"][0]["env"] if e["name"] == "SCHEDGEN_API_KEY")
    assert ref["valueFrom"]["secretKeyRef"]["name"] == "my-key" and ref["valueFrom"]["secretKeyRef"]["key"] == "token"
    other = one(render({}, name="sg"), "Pod", "sg-schedgen-api-test")["spec"]["containers"][0]["env"]
    assert {"name": "TEST_KEY_SECRET", "value": "sg-schedgen-test-api-key"} in other
    assert {"name": "TEST_API_PORT", "value": "$(SG_SCHEDGEN_API_SERVICE_PORT)"} in other
    for values in ({"tests": {"enabled": False}}, {"api": {"enabled": False}}):
        assert not find(render(values), "Pod")
    refused = _render_error({"tests": {"apiKey": "sgk_secret"}})  # never a key in values
    assert "/tests" in refused and "apiKey" in refused


def test_helm_test_pod_may_reach_the_api_through_its_network_policy():
    policy = one(render({"networkPolicy": {"apiFrom": [{"namespaceSelector": {"matchLabels": {"x": "y"}}}]}}),
                 "NetworkPolicy", "schedgen-api")
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "schedgen", "app.kubernetes.io/instance": "schedgen",
                                            "app.kubernetes.io/component": "api-test"}}} in peers
    assert "from" not in one(render({}), "NetworkPolicy", "schedgen-api")["spec"]["ingress"][0]  # any peer


def test_the_helm_test_pdf_parses_to_what_the_pod_expects():
    from schedgen.runner.parsing import parse_pdf

    pod = _test_pod()
    expect = next(e["value"] for e in pod["spec"]["containers"][0]["env"] if e["name"] == "TEST_EXPECT")
    kind, events = expect.split()
    result = parse_pdf(CHART / "files" / "test-schedule.pdf")
    assert (result.kind, len(result.events)) == (kind, int(events))
