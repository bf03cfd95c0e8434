"""The chart offline: render (helm-python-sdk, the Helm v4 engine), lint, values schema,
one source of truth for the CRDs, restricted pods, least-privilege RBAC."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from chartlib import CHART, REPO_CRDS, REQUIRED_VALUES, chart, find, notes, one, pod_specs, render, with_required

# Non-default value sets the tests render (and the cluster tests apply).
VALUE_SETS = {
    "default": {},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "single-operator-no-api": {"operator": {"replicas": 1, "standalone": True}, "api": {"enabled": False}},
    "everything-on": {
        "priorityClasses": {"create": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
        "postgres": {"existingSecret": "schedgen-postgres"},
        "s3": {"existingSecret": "schedgen-s3", "endpointUrl": "http://minio.storage:9000", "bucket": "uploads"},
        "runner": {"nodeSelector": {"pool": "runners"},
                   "tolerations": [{"key": "pool", "value": "runners", "effect": "NoSchedule"}],
                   "image": {"repository": "ghcr.io/up/schedgen-runner", "tag": "1.2.3",
                             "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"}},
        "api": {"autoscaling": {"enabled": False}, "replicas": 3, "podDisruptionBudget": {"enabled": False}},
        "networkPolicy": {"runnerNamespaces": ["team-a"], "apiFrom": [{"namespaceSelector": {}}]},
        "jobDefaults": {"deadlineSeconds": 600, "maxRetries": 1, "ttlSecondsAfterFinished": 60,
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"cpu": 2, "memory": "1Gi"}}},
    },
    "no-networkpolicy": {"networkPolicy": {"enabled": False}},
}

BAD_VALUES = [
    ({"api": {"feedRefreshMinutes": 5}}, "/api/feedRefreshMinutes"),  # 0 or 15..10080
    ({"api": {"feedRefreshMinutes": 20000}}, "/api/feedRefreshMinutes"),
    ({"operator": {"replicas": 0}}, "/operator/replicas"),
    ({"operator": {"replicas": "two"}}, "/operator/replicas"),
    ({"operator": {"standalone": True}}, "/operator/replicas"),  # standalone with 2 replicas
    ({"jobDefaults": {"deadlineSeconds": 5}}, "/jobDefaults/deadlineSeconds"),
    ({"jobDefaults": {"maxRetries": 11}}, "/jobDefaults/maxRetries"),
    ({"jobDefaults": {"resources": {"limits": {"memory": "lots"}}}}, "/jobDefaults/resources/limits/memory"),
    ({"queue": {"maxConcurrent": -1}}, "/queue/maxConcurrent"),
    ({"queue": {"maxConcurent": 3}}, "maxConcurent"),  # typo: unknown keys are rejected
    ({"s3": {"bucket": "Not_A_Bucket"}}, "/s3/bucket"),
    ({"s3": {"endpointUrl": "minio:9000"}}, "/s3/endpointUrl"),
    ({"s3": {"operatorSecret": "Not A Secret"}}, "/s3/operatorSecret"),
    ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ({"watch": {"namespaces": "team-a"}}, "/watch/namespaces"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "/operator/image/pullPolicy"),
    ({"runner": {"image": {"digest": "sha256:nope"}}}, "/runner/image/digest"),
    ({"api": {"service": {"type": "Ingress"}}}, "/api/service/type"),
    ({"postgres": {"password": "hunter2"}}, "password"),  # no credentials in values
    ({"runner": {"s3Secret": "schedgen-runner"}}, "s3Secret"),  # the runner holds no secrets
    ({"networkPolicy": {"postgres": {"ports": [{"port": 5432}]}}}, "postgres"),  # nor reaches Postgres
    ({"api": {"behindProxy": True}}, "/api/trustedProxies"),  # every client would share the proxy's address
    ({"api": {"maxUploadBytesInFlight": 1000}}, "/api/maxUploadBytesInFlight"),
    ({"api": {"metricsPort": 0}}, "/api/metricsPort"),
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"runner": {"logLevel": "trace"}}, "/runner/logLevel"),
    # the peers runner pods reach are NetworkPolicy peers: an ipBlock alone, or selectors
    ({"networkPolicy": {"s3": {"to": [{"ipBlock": {"cidr": "10.1.2.3"}}]}}}, "/networkPolicy/s3/to/0/ipBlock/cidr"),
    ({"networkPolicy": {"s3": {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}, "podSelector": {}}]}}},
     "/networkPolicy/s3/to/0"),
    ({"networkPolicy": {"s3": {"to": [{}]}}}, "/networkPolicy/s3/to/0"),
    ({"networkPolicy": {"s3": {"to": [{"host": "minio"}]}}}, "/networkPolicy/s3/to/0"),
    ({"networkPolicy": {"dns": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}, "namespaceSelector": {}}]}}},
     "/networkPolicy/dns/to/0"),
]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_renders_and_lints(name):
    import helm_python as helm

    values = VALUE_SETS[name]
    docs = render(values)
    assert docs, "nothing rendered"
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ConfigMap", "ClusterRole"} <= kinds
    for d in docs:
        assert d["metadata"]["name"], d
        assert d["apiVersion"] and d["kind"]
    report = helm.lint(str(CHART), with_required(values), strict=True, namespace="schedgen-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])
    assert not problems, problems


def test_default_objects():
    docs = render()
    op = one(docs, "Deployment", "schedgen-operator")
    assert op["spec"]["replicas"] == 2
    api = one(docs, "Deployment", "schedgen-api")
    assert "replicas" not in api["spec"]  # the HPA owns it
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == \
        op["spec"]["template"]["spec"]["containers"][0]["image"] == "schedgen-operator:0.1.0"
    assert api["spec"]["template"]["spec"]["containers"][0]["command"] == ["schedgen-api"]
    one(docs, "Service", "schedgen-api")
    hpa = one(docs, "HorizontalPodAutoscaler", "schedgen-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "schedgen-api"
    one(docs, "PodDisruptionBudget", "schedgen-api")
    one(docs, "ClusterKopfPeering", "schedgen")
    assert not find(docs, "PriorityClass") and not find(docs, "ServiceMonitor")
    assert not find(docs, "Secret"), "the chart must not carry credentials"
    cm = one(docs, "ConfigMap", "schedgen-operator")
    assert cm["data"]["maxConcurrent"] == "10" and cm["data"]["retentionFailedSeconds"] == "86400"
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SCHEDGEN_OPERATOR_CONFIGMAP"] == "schedgen-operator"
    assert env["SCHEDGEN_RUNNER_IMAGE"] == "schedgen-runner:0.1.0"
    assert env["SCHEDGEN_MAX_BYTES"] == "10485760"  # integers stay integers (no 1.048576e+07)
    assert env["SCHEDGEN_STANDALONE"] == "0" and env["SCHEDGEN_PEERING_NAME"] == "schedgen"
    assert "SCHEDGEN_DATABASE_URL" not in env  # no existingSecret by default
    assert "schedgen.io/v1alpha1" in notes() and "kubectl" in notes()
    # the runner holds none (the one Secret NOTES makes holds helm test's API key)
    assert not re.search(r"create secret.*(AWS_|DATABASE_URL)", notes()) and "SCHEDGEN_DATABASE_URL" not in notes()


def test_values_reach_the_operator_and_the_configmap():
    docs = render(VALUE_SETS["everything-on"])
    op = one(docs, "Deployment", "schedgen-operator")
    env = {e["name"]: e for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SCHEDGEN_RUNNER_IMAGE"]["value"] == "ghcr.io/up/schedgen-runner@sha256:" + "a" * 64
    assert env["SCHEDGEN_IMAGE_PULL_POLICY"]["value"] == "Always"
    assert env["SCHEDGEN_PRIORITY_CLASSES"]["value"] == \
        "high=schedgen-high,normal=schedgen-normal,low=schedgen-low"
    assert env["SCHEDGEN_NODE_SELECTOR"]["value"] == "pool=runners"
    assert json.loads(env["SCHEDGEN_RUNNER_TOLERATIONS"]["value"])[0]["key"] == "pool"
    assert env["SCHEDGEN_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == \
        {"name": "schedgen-postgres", "key": "SCHEDGEN_DATABASE_URL"}
    assert env["SCHEDGEN_JOB_TTL_SECONDS"]["value"] == "60"
    assert env["SCHEDGEN_CPU_LIMIT"]["value"] == "2" and env["SCHEDGEN_MEMORY_LIMIT"]["value"] == "1Gi"
    assert env["SCHEDGEN_S3_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
    assert env["SCHEDGEN_DEFAULT_BUCKET"]["value"] == "uploads"
    api = one(docs, "Deployment", "schedgen-api")
    assert api["spec"]["replicas"] == 3
    aenv = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert aenv["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "schedgen-s3"
    assert aenv["SCHEDGEN_API_DEFAULT_DEADLINE_SECONDS"]["value"] == "600"
    assert not find(docs, "HorizontalPodAutoscaler") and not find(docs, "PodDisruptionBudget", "schedgen-api")
    pcs = {d["metadata"]["name"]: d["value"] for d in find(docs, "PriorityClass")}
    assert pcs == {"schedgen-high": 1000, "schedgen-normal": 0, "schedgen-low": -100}
    for sm in (one(docs, "ServiceMonitor", "schedgen-operator"), one(docs, "ServiceMonitor", "schedgen-api")):
        assert sm["metadata"]["labels"]["release"] == "prom"
    assert {d["metadata"]["namespace"] for d in find(docs, "NetworkPolicy", "schedgen-runner")} == \
        {"team-a", "schedgen-system"}
    # the operator presigns the runner's URLs with its own S3 credentials (by reference)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "schedgen-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "schedgen-s3"
    assert env["SCHEDGEN_RESULTS_BUCKET"]["value"] == ""
    assert not {"SCHEDGEN_S3_SECRET", "SCHEDGEN_DATABASE_SECRET"} & set(env)


KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}


def test_runner_pods_reach_dns_and_s3_only():
    docs = render({"networkPolicy": {"s3": {"ports": [{"port": 9000, "protocol": "TCP"}],
                                            "to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]}}})
    policy = one(docs, "NetworkPolicy", "schedgen-runner")
    assert policy["spec"]["ingress"] == [] and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "schedgen-operator"}}
    egress = policy["spec"]["egress"]
    assert len(egress) == 2
    # DNS only to the cluster DNS (by default kube-system's kube-dns pods), never "anywhere on 53"
    assert egress[0] == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                         "to": [KUBE_DNS]}
    assert egress[1] == {"ports": [{"port": 9000, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.1.2.0/24"}}]}
    assert "5432" not in json.dumps(policy)
    default = one(render({}), "NetworkPolicy", "schedgen-runner")
    assert default["spec"]["egress"][1] == {"ports": [{"port": 443, "protocol": "TCP"}],
                                            "to": REQUIRED_VALUES["networkPolicy"]["s3"]["to"]}
    # every egress rule names its peers: no rule is open to any destination
    for values in ({}, {"networkPolicy": {"s3": {"to": [KUBE_DNS]}, "dns": {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}}}):
        rendered = one(render(values), "NetworkPolicy", "schedgen-runner")
        assert all(rule.get("to") for rule in rendered["spec"]["egress"]), rendered
    custom = one(render({"networkPolicy": {"dns": {"to": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}}}),
                 "NetworkPolicy", "schedgen-runner")
    assert custom["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
    op = one(render({}), "Deployment", "schedgen-operator")
    env = {e["name"] for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "AWS_ACCESS_KEY_ID" not in env  # no existingSecret: the pod's ambient credentials


def test_chart_crds_are_the_repository_crds():
    """One source of truth: the chart's crds/ is the repository's crds/, not a copy."""
    assert (CHART / "crds").resolve() == REPO_CRDS.resolve()
    repo_crds = {p.name for p in REPO_CRDS.glob("*.yaml")}
    loaded = {c["filename"].split("/")[-1] for c in chart().crds}
    assert loaded == repo_crds
    names = {d["metadata"]["name"] for p in (CHART / "crds").iterdir()
             for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "CustomResourceDefinition"}
    assert {"parsejobs.schedgen.io", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= names


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_pod_meets_the_restricted_standard(name):
    specs = pod_specs(render(VALUE_SETS[name]))
    assert specs
    for obj, spec in specs:
        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, obj
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", obj
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), obj
        for vol in spec.get("volumes") or []:
            assert set(vol) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}, (obj, vol)
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext") or {}
            assert sc.get("allowPrivilegeEscalation") is False, (obj, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (obj, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (obj, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (obj, c["name"])
            assert sc.get("privileged") in (None, False), (obj, c["name"])
            assert c.get("resources", {}).get("limits"), (obj, c["name"])
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), (obj, "writable /tmp")


def _rules(docs, kind, name_prefix):
    return [(d["metadata"].get("namespace"), r) for d in docs if d["kind"] == kind
            and d["metadata"]["name"].startswith(name_prefix) for r in d["rules"]]


@pytest.mark.parametrize("name", ["default", "namespaced"])
def test_rbac_is_least_privilege(name):
    docs = render(VALUE_SETS[name])
    rules = _rules(docs, "ClusterRole", "schedgen") + _rules(docs, "Role", "schedgen")
    for _, r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r.get("apiGroups", []), r
        # Secrets: never read; only the operator makes each runner Job's run file (create, patch)
        assert "secrets" not in r["resources"] or (set(r["verbs"]) == {"create", "patch"}
                                                   and r["resources"] == ["secrets"]), r
        assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), r
    api_rules = _rules(docs, "ClusterRole", "schedgen-api") + _rules(docs, "Role", "schedgen-api")
    queue = [r for _, r in api_rules if r["resources"] == ["configmaps"]]
    assert queue == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["schedgen-operator-queue"],
                      "verbs": ["get"]}]  # the operator's queue summary, read only
    events = [r for _, r in api_rules if r["resources"] == ["events"]]
    assert events == [{"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]  # a job's log, read only
    assert api_rules and all(r["resources"] == ["parsejobs"] and set(r["verbs"]) == {"create", "get", "list", "watch", "delete"}
                             for _, r in api_rules if r not in queue and r not in events)
    # the API works in one namespace: a Role there, never a ClusterRole
    assert not find(docs, "ClusterRole", "schedgen-api-schedgen-system")
    assert not [(d["metadata"]["name"], r) for d in docs if d["kind"] in ("Role", "ClusterRole")
                for r in d["rules"] if "secrets" in r["resources"] and "operator" not in d["metadata"]["name"]]
    op_cluster = _rules(docs, "ClusterRole", "schedgen-operator")
    if name == "namespaced":
        # only CRD discovery is cluster-wide; everything else is per served namespace
        assert [r["resources"] for _, r in op_cluster] == [["customresourcedefinitions"]]
        served = {d["metadata"]["namespace"] for d in find(docs, "Role", "schedgen-operator")}
        assert served == {"team-a", "team-b", "schedgen-system"}
        assert {d["metadata"]["namespace"] for d in find(docs, "KopfPeering")} == served
        assert not find(docs, "ClusterKopfPeering")
        assert {d["metadata"]["namespace"] for d in find(docs, "Role", "schedgen-api")} == {"schedgen-system"}
        op = one(docs, "Deployment", "schedgen-operator")
        env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["SCHEDGEN_WATCH_NAMESPACES"] == "team-a,team-b,schedgen-system"
    else:
        groups = {g for _, r in op_cluster for g in r["apiGroups"]}
        assert groups == {"apiextensions.k8s.io", "kopf.dev", "schedgen.io", "batch", "", "networking.k8s.io"}


@pytest.mark.parametrize("values,needed", [
    ({}, "networkPolicy.s3.to is required"),  # the chart's defaults alone: S3 is not known
    ({"networkPolicy": {"s3": {"to": []}}}, "networkPolicy.s3.to is required"),
    ({"networkPolicy": {"s3": {"to": None}}}, "networkPolicy.s3.to is required"),
    ({"networkPolicy": {"s3": {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]}, "dns": {"to": []}}},
     "networkPolicy.dns.to is required"),
], ids=["defaults", "s3-empty", "s3-null", "dns-empty"])
def test_runner_egress_peers_are_required_while_policies_are_on(values, needed):
    """An empty peer list would be "any address on the S3 port / on port 53": the install fails
    instead, saying what to set; with the policies off nothing is required."""
    import helm_python as helm

    with pytest.raises(helm.HelmError) as err:
        render(values, required=False)
    message = str(err.value)
    assert needed in message and "networkPolicy.enabled" in message, message
    assert not find(render({"networkPolicy": {"enabled": False, "s3": {"to": []}, "dns": {"to": []}}},
                           required=False), "NetworkPolicy")


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values_with_a_clear_message(values, where):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    message = str(err.value)
    assert where in message, message


def test_api_namespace_is_served_and_the_only_api_grant():
    docs = render({"watch": {"namespaces": ["team-a"]}, "api": {"namespace": "uploads"}})
    assert {d["metadata"]["namespace"] for d in find(docs, "Role", "schedgen-api")} == {"uploads"}
    assert {d["metadata"]["namespace"] for d in find(docs, "Role", "schedgen-operator")} == \
        {"team-a", "uploads", "schedgen-system"}
    api = one(docs, "Deployment", "schedgen-api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["SCHEDGEN_API_NAMESPACE"] == "uploads"
    assert c["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]  # migrations are the hook Job's
    docs = render({"postgres": {"existingSecret": "pg"}})
    c = one(docs, "Deployment", "schedgen-api")["spec"]["template"]["spec"]["containers"][0]
    assert "--migrate" not in c["args"]
    assert {e["name"] for e in c["env"]} >= {"SCHEDGEN_DATABASE_URL", "SCHEDGEN_S3_BUCKET", "SCHEDGEN_API_NAMESPACE"}


def _dsn_secret(pod_spec: dict) -> str | None:
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    ref = env.get("SCHEDGEN_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef")
    return ref and ref["name"]


def test_each_component_logs_in_to_postgres_with_its_own_secret():
    """Least privilege: the operator, the API and the migration Job each get their own
    role's DSN; only the migration hook Job holds the schema owner's."""
    docs = render({"postgres": {"operatorSecret": "pg-operator", "apiSecret": "pg-api",
                                "migrationSecret": "pg-owner"}})
    specs = {name: one(docs, kind, name)["spec"]["template"]["spec"] for kind, name in
             (("Deployment", "schedgen-operator"), ("Deployment", "schedgen-api"), ("Job", "schedgen-migrate"))}
    assert {n: _dsn_secret(s) for n, s in specs.items()} == {
        "schedgen-operator": "pg-operator", "schedgen-api": "pg-api", "schedgen-migrate": "pg-owner"}
    job = one(docs, "Job", "schedgen-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = specs["schedgen-migrate"]
    assert pod["containers"][0]["command"] == ["schedgen", "db", "migrate"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # the shared Secret fills in what is not given per role; no DSN at all: no migration Job
    docs = render({"postgres": {"existingSecret": "pg", "apiSecret": "pg-api"}})
    assert _dsn_secret(one(docs, "Deployment", "schedgen-operator")["spec"]["template"]["spec"]) == "pg"
    assert _dsn_secret(one(docs, "Job", "schedgen-migrate")["spec"]["template"]["spec"]) == "pg"
    assert not find(render({}), "Job", "schedgen-migrate")
    assert not find(render({"postgres": {"existingSecret": "pg", "migrations": {"enabled": False}}}),
                    "Job", "schedgen-migrate")


def _s3_secrets(pod_spec: dict) -> set[str]:
    env = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
    return {env[k]["valueFrom"]["secretKeyRef"]["name"] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            if k in env}


def test_each_component_signs_s3_requests_with_its_own_secret():
    """Least privilege in S3: the operator and the API each read their own user's keys
    (s3.operatorSecret, s3.apiSecret; policies in docs/deploy.md); the shared
    s3.existingSecret fills in only what is not given; none at all: ambient credentials.
    The migration Job and the runner never get S3 keys."""
    def secrets(values: dict) -> dict[str, set[str]]:
        docs = render({"postgres": {"existingSecret": "pg"}, "s3": values})
        out = {name: _s3_secrets(one(docs, "Deployment", name)["spec"]["template"]["spec"])
               for name in ("schedgen-operator", "schedgen-api")}
        assert not _s3_secrets(one(docs, "Job", "schedgen-migrate")["spec"]["template"]["spec"])
        return out

    assert secrets({"operatorSecret": "s3-operator", "apiSecret": "s3-api", "existingSecret": "s3-shared"}) == {
        "schedgen-operator": {"s3-operator"}, "schedgen-api": {"s3-api"}}
    assert secrets({"apiSecret": "s3-api", "existingSecret": "s3-shared"}) == {
        "schedgen-operator": {"s3-shared"}, "schedgen-api": {"s3-api"}}
    assert secrets({"operatorSecret": "s3-operator"}) == {"schedgen-operator": {"s3-operator"}, "schedgen-api": set()}
    assert secrets({}) == {"schedgen-operator": set(), "schedgen-api": set()}


def test_example_parsejob_matches_the_crd():
    example = yaml.safe_load((CHART / "examples" / "parsejob.yaml").read_text())
    assert example["apiVersion"] == "schedgen.io/v1alpha1" and example["kind"] == "ParseJob"
    assert example["spec"]["source"]["s3"]["key"]


def _api_container(docs) -> dict:
    return one(docs, "Deployment", "schedgen-api")["spec"]["template"]["spec"]["containers"][0]


def _api_env(docs) -> dict:
    return {e["name"]: e.get("value") for e in _api_container(docs)["env"]}


def test_behind_a_proxy_trusted_proxies_are_required():
    """Behind an ingress every client arrives from the proxy's address: without
    trustedProxies they would all share one address's budget for failed keys."""
    import helm_python as helm

    for values in ({"api": {"behindProxy": True}}, {"api": {"behindProxy": True, "trustedProxies": []}}):
        with pytest.raises(helm.HelmValuesError) as err:
            render(values)
        assert "/api/trustedProxies" in str(err.value), str(err.value)
    docs = render({"api": {"behindProxy": True, "trustedProxies": ["10.0.0.0/8", "fd00::/8"]}})
    assert _api_env(docs)["SCHEDGEN_API_TRUSTED_PROXIES"] == "10.0.0.0/8,fd00::/8"
    assert _api_env(render({}))["SCHEDGEN_API_TRUSTED_PROXIES"] == ""  # not behind a proxy: none needed


def test_kube_prometheus_stack_release_label_reaches_the_monitoring_objects():
    """kube-prometheus-stack selects only ServiceMonitors and rules labelled `release:
    <its release>`; values.yaml says so, and the labels land on every such object."""
    comments = " ".join(line.strip().lstrip("#").strip() for line in (CHART / "values.yaml").read_text().splitlines())
    assert "kube-prometheus-stack selects only `release: <its Helm release name>`" in comments
    release = {"release": "kube-prometheus-stack"}
    docs = render({"serviceMonitor": {"enabled": True, "labels": release},
                   "prometheusRule": {"enabled": True, "labels": release}})
    monitors = find(docs, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == ["schedgen-api", "schedgen-operator"]
    for obj in monitors + find(docs, "PrometheusRule"):
        assert release.items() <= obj["metadata"]["labels"].items(), obj["metadata"]
    assert find(docs, "PrometheusRule")
    # without it: the chart's own labels only (kube-prometheus-stack would ignore them)
    assert all("release" not in m["metadata"]["labels"] for m in find(render({"serviceMonitor": {"enabled": True}}),
                                                                      "ServiceMonitor"))


def test_api_metrics_have_their_own_port_service_and_policy():
    docs = render({"serviceMonitor": {"enabled": True}})
    c = _api_container(docs)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "metrics": 9091}
    assert _api_env(docs)["SCHEDGEN_API_METRICS_PORT"] == "9091"
    public = one(docs, "Service", "schedgen-api")
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]  # never the metrics, whatever its type
    metrics = one(docs, "Service", "schedgen-api-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [{"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"}]
    sm = one(docs, "ServiceMonitor", "schedgen-api")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    selected = [s["metadata"]["name"] for s in find(docs, "Service")
                if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert selected == ["schedgen-api-metrics"]
    policy = one(docs, "NetworkPolicy", "schedgen-api")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8000, "protocol": "TCP"}]},
                                         {"ports": [{"port": 9091, "protocol": "TCP"}]}]
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    docs = render({"api": {"metricsPort": 9300}, "networkPolicy": {"metricsFrom": peers}})
    assert one(docs, "NetworkPolicy", "schedgen-api")["spec"]["ingress"][1] == {
        "ports": [{"port": 9300, "protocol": "TCP"}], "from": peers}
    assert _api_env(docs)["SCHEDGEN_API_METRICS_PORT"] == "9300"


def test_api_quotas_and_budgets_reach_the_environment():
    assert {k: v for k, v in _api_env(render({})).items() if k in (
        "SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE", "SCHEDGEN_API_TENANT_UPLOADS_PER_MINUTE",
        "SCHEDGEN_API_TENANT_READS_PER_MINUTE", "SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT",
        "SCHEDGEN_API_FEED_MAX_DAYS", "SCHEDGEN_API_FEED_REFRESH_MINUTES")} == {
        "SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE": "20", "SCHEDGEN_API_TENANT_UPLOADS_PER_MINUTE": "0",
        "SCHEDGEN_API_TENANT_READS_PER_MINUTE": "0", "SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT": "134217728",
        "SCHEDGEN_API_FEED_MAX_DAYS": "365", "SCHEDGEN_API_FEED_REFRESH_MINUTES": "360"}
    env = _api_env(render({"api": {"authFailuresPerMinute": 7, "tenantUploadsPerMinute": 9, "tenantReadsPerMinute": 90,
                                   "maxUploadBytesInFlight": 52428800, "feedMaxDays": 30, "feedRefreshMinutes": 60}}))
    assert (env["SCHEDGEN_API_AUTH_FAILURES_PER_MINUTE"], env["SCHEDGEN_API_TENANT_UPLOADS_PER_MINUTE"],
            env["SCHEDGEN_API_TENANT_READS_PER_MINUTE"], env["SCHEDGEN_API_MAX_UPLOAD_BYTES_IN_FLIGHT"],
            env["SCHEDGEN_API_FEED_MAX_DAYS"], env["SCHEDGEN_API_FEED_REFRESH_MINUTES"]) == (
        "7", "9", "90", "52428800", "30", "60")


def test_the_autoscaled_runners_example_points_runners_at_the_nodepools_nodes():
    """examples/autoscaled-runners-values.yaml with examples/karpenter-nodepool.yaml
    (docs/autoscaling.md): the runners select the pool's label and tolerate its taint, each
    asks one CPU, and the caps fit the pool's CPU limit."""
    values = yaml.safe_load((CHART / "examples" / "autoscaled-runners-values.yaml").read_text())
    pool = yaml.safe_load((CHART / "examples" / "karpenter-nodepool.yaml").read_text())
    assert (pool["apiVersion"], pool["kind"]) == ("karpenter.sh/v1", "NodePool")
    template = pool["spec"]["template"]
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    docs = render(values)
    op = one(docs, "Deployment", "schedgen-operator")
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    selector = dict(pair.split("=", 1) for pair in env["SCHEDGEN_NODE_SELECTOR"].split(","))
    assert selector.items() <= template["metadata"]["labels"].items()
    tolerations = json.loads(env["SCHEDGEN_RUNNER_TOLERATIONS"])
    for taint in template["spec"]["taints"]:  # every taint of the pool is tolerated
        assert any(t["key"] == taint["key"] and t.get("value") == taint.get("value")
                   and t["effect"] == taint["effect"] for t in tolerations), (taint, tolerations)
    assert env["SCHEDGEN_CPU_REQUEST"] == "1"
    config = one(docs, "ConfigMap", "schedgen-operator")["data"]
    assert int(config["maxConcurrent"]) * 1 <= int(pool["spec"]["limits"]["cpu"])
    assert (config["pendingRunnersMin"], config["pendingRunnersMax"]) == ("10", "100")


def test_log_levels_reach_every_component():
    """The top-level logLevel for all three (the runner's through the operator, which sets
    its Jobs' SCHEDGEN_LOG_LEVEL); each component's own logLevel wins over it."""

    def levels(values: dict) -> tuple[str, str, str]:
        docs = render(values)
        op = {e["name"]: e.get("value") for e in
              one(docs, "Deployment", "schedgen-operator")["spec"]["template"]["spec"]["containers"][0]["env"]}
        return op["SCHEDGEN_LOG_LEVEL"], _api_env(docs)["SCHEDGEN_LOG_LEVEL"], op["SCHEDGEN_RUNNER_LOG_LEVEL"]

    assert levels({}) == ("info", "info", "info")
    assert levels({"logLevel": "warning"}) == ("warning", "warning", "warning")
    assert levels({"logLevel": "warning", "operator": {"logLevel": "debug"}, "runner": {"logLevel": "error"}}) == (
        "debug", "warning", "error")
    assert levels({"api": {"logLevel": "debug"}}) == ("info", "debug", "info")
    assert _api_env(render({"operator": {"logFormat": "text"}}))["SCHEDGEN_LOG_FORMAT"] == "text"
