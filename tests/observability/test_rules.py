"""The alert rules (charts/schedgen/rules/schedgen-alerts.yaml, the file the chart's
PrometheusRule includes) checked and unit-tested by a real promtool, built from the Go
module proxy by hack/promserver.py (hack/setup.sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

import promserver

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
RULES = ROOT / "charts" / "schedgen" / "rules" / "schedgen-alerts.yaml"
UNIT_TESTS = HERE / "alerts_test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return str(promserver.build()["promtool"])


def run(*argv: str, cwd: Path = HERE) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


def alerts() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules(promtool):
    done = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout, done.stdout


def test_promtool_unit_tests_pass(promtool):
    done = run(promtool, "test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it stays quiet"


@pytest.mark.parametrize("original, mutated", [
    ("> 900", "> 1900"),                               # backlog threshold
    ("reason!=\"InvalidPDF\"", "reason!=\"none\""),    # bad uploads would page
    ("status=~\"5..\"", "status=~\"[45]..\""),         # 4xx counted as errors
    ("(schedgen_operator_active == 1)", "(schedgen_operator_active >= 0)"),  # standby replicas counted
    ("for: 10m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"The operator",
     "for: 2m\n        labels:\n          severity: critical\n        annotations:\n          summary: \"The operator"),
])
def test_the_unit_tests_catch_a_changed_rule(promtool, tmp_path, original, mutated):
    """The unit tests can fail: each of these changes to the rules breaks them."""
    text = RULES.read_text()
    assert original in text
    (tmp_path / "rules.yaml").write_text(text.replace(original, mutated))
    tests = yaml.safe_load(UNIT_TESTS.read_text())
    tests["rule_files"] = [str(tmp_path / "rules.yaml")]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = run(promtool, "test", "rules", str(tmp_path / "tests.yaml"), cwd=tmp_path)
    assert done.returncode != 0, done.stdout


def test_metric_prefixes_per_component():
    """Operator metrics are schedgen_* (never schedgen_api_*); API metrics schedgen_api_*."""
    from prometheus_client import REGISTRY

    import schedgen.api.metrics as api_metrics
    import schedgen.operator.metrics as op_metrics

    def names(module):
        return {getattr(module, a)._name for a in dir(module) if hasattr(getattr(module, a), "_name")
                and getattr(module, a).__class__.__module__.startswith("prometheus_client")}

    op, api = names(op_metrics), names(api_metrics)
    assert op and api and REGISTRY
    assert all(n.startswith("schedgen_") and not n.startswith("schedgen_api_") for n in op), op
    assert all(n.startswith("schedgen_api_") for n in api), api
