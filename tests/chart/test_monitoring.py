"""The chart's observability objects: ServiceMonitors (operator and API), the
PrometheusRule (the rules file promtool tests, included as is) and the Grafana dashboard
ConfigMap; on by default where the Prometheus Operator's API is served."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from chartlib import CHART, ROOT, find, one, render

MONITORING = ["monitoring.coreos.com/v1"]
RULES_FILE = CHART / "rules" / "schedgen-alerts.yaml"
DASHBOARD_FILE = CHART / "dashboards" / "schedgen.json"


def monitoring_objects(docs):
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs
                  if d["kind"] in ("ServiceMonitor", "PrometheusRule")
                  or (d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {})))


EXPECTED = [("ConfigMap", "schedgen-dashboard"), ("PrometheusRule", "schedgen"),
            ("ServiceMonitor", "schedgen-api"), ("ServiceMonitor", "schedgen-operator")]


def test_on_by_default_where_the_prometheus_operator_api_is_served():
    assert monitoring_objects(render({}, api_versions=MONITORING)) == EXPECTED


def test_off_by_default_without_it_and_forced_by_the_switches():
    assert monitoring_objects(render({})) == []
    on = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}
    assert monitoring_objects(render(on)) == EXPECTED
    off = {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}, "dashboard": {"enabled": False}}
    assert monitoring_objects(render(off, api_versions=MONITORING)) == []


def test_service_monitors_select_the_metrics_services_and_ports():
    docs = render({}, api_versions=MONITORING)
    for sm in find(docs, "ServiceMonitor"):
        want = sm["spec"]["selector"]["matchLabels"]
        services = [s for s in find(docs, "Service", namespace="schedgen-system")
                    if want.items() <= s["metadata"]["labels"].items() or want.items() <= s["spec"]["selector"].items()]
        ports = {p["name"] for s in services for p in s["spec"]["ports"]}
        assert services and sm["spec"]["endpoints"][0]["port"] in ports, (sm["metadata"]["name"], ports)
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        assert sm["spec"]["namespaceSelector"] == {"matchNames": ["schedgen-system"]}
    api_sm = one(docs, "ServiceMonitor", "schedgen-api")
    assert api_sm["spec"]["endpoints"][0]["port"] == "metrics"  # its own listener, not the public port
    no_api = render({"api": {"enabled": False}}, api_versions=MONITORING)
    assert [sm["metadata"]["name"] for sm in find(no_api, "ServiceMonitor")] == ["schedgen-operator"]


def test_prometheus_rule_is_the_rules_file():
    docs = render({"prometheusRule": {"labels": {"release": "prom"}}}, api_versions=MONITORING)
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    assert rule["metadata"]["labels"]["release"] == "prom"


def test_every_alert_has_a_runbook_section():
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbooks, re.M)}
    alerts = [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 7
    for r in alerts:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/schedgen/schedgen/blob/main/docs/runbooks.md#"), url
        assert url.split("#", 1)[1] in anchors, (r["alert"], url)
        assert r["alert"] in runbooks, f"{r['alert']} not named in docs/runbooks.md"


def test_runbook_base_url_is_swapped():
    docs = render({"prometheusRule": {"runbookBaseUrl": "https://docs.example.org/schedgen/"}},
                  api_versions=MONITORING)
    urls = [r["annotations"]["runbook_url"] for g in one(docs, "PrometheusRule")["spec"]["groups"]
            for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith("https://docs.example.org/schedgen/runbooks.md#") for u in urls), urls


def test_dashboard_configmap_for_the_grafana_sidecar():
    docs = render({"dashboard": {"namespace": "grafana"}}, api_versions=MONITORING)
    cm = one(docs, "ConfigMap", "schedgen-dashboard")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["schedgen.json"])
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("waiting by priority", "running by priority", "Admissions per second", "Queue wait time",
                   "Run time", "Uploads per second", "API latency", "Outcomes by reason"):
        assert any(wanted in t for t in titles), (wanted, titles)


def test_queries_use_only_metrics_the_code_defines():
    """A renamed metric breaks this, not a dashboard in production."""
    from prometheus_client import REGISTRY

    import schedgen.api.metrics  # noqa: F401
    import schedgen.operator.metrics  # noqa: F401

    defined = {s.name for fam in REGISTRY.collect() for s in fam.samples} | {
        fam.name for fam in REGISTRY.collect()}
    exprs = [t["expr"] for p in json.loads(DASHBOARD_FILE.read_text())["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in re.findall(r"\b(schedgen_[a-z_]+)", e)}
    # histogram buckets and labelled counters only show samples once used: allow their families
    missing = {m for m in used if m not in defined and re.sub(r"_(bucket|total|count|sum)$", "", m) not in defined}
    assert used and not missing, missing


@pytest.mark.parametrize("values, where", [
    ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
    ({"prometheusRule": {"runbookBaseUrl": "docs.example.org"}}, "/prometheusRule/runbookBaseUrl"),
    ({"dashboard": {"labelz": {}}}, "labelz"),
])
def test_schema_checks_the_monitoring_values(values, where):
    with pytest.raises(Exception) as err:
        render(values)
    assert where in str(err.value)


def test_every_metric_is_documented():
    from prometheus_client import REGISTRY

    import schedgen.api.metrics  # noqa: F401
    import schedgen.operator.metrics  # noqa: F401

    doc = (ROOT / "docs" / "observability.md").read_text()
    names = {fam.name for fam in REGISTRY.collect() if fam.name.startswith("schedgen_")}
    assert names and not {n for n in names if n not in doc}, sorted(n for n in names if n not in doc)
