"""The Job built for an admitted ParseJob."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schedgen.errors import ConfigurationError
from schedgen.operator.config import OperatorConfig
from credentials import assert_no_credentials
from schedgen.operator.job_template import build_job, effective_resources, job_name, parse_quantity

UID = "0b5c9a3e-1111-2222-3333-444455556666"


def parsejob(**spec) -> dict:
    base = {"source": {"s3": {"key": "uploads/a.pdf"}}, "scheduleType": "lecture", "priority": "high",
            "deadlineSeconds": 120, "maxRetries": 2}
    base.update(spec)
    return {"apiVersion": "schedgen.io/v1alpha1", "kind": "ParseJob",
            "metadata": {"name": "my.upload", "namespace": "team-a", "uid": UID, "labels": {"x": "y"}},
            "spec": base}


URLS = {"source": "http://s3:9000/b/k.pdf?X-Amz-Signature=a", "result": "http://s3:9000/b/r.json?X-Amz-Signature=b"}


def env_of(job: dict) -> dict:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_name_is_deterministic_and_valid():
    assert job_name("my.upload", UID) == job_name("my.upload", UID) == "my-upload-0b5c9a3e"
    assert job_name("my.upload", UID) != job_name("my.upload", "ffffffff-0000")
    long = job_name("x" * 253, UID)
    assert len(long) <= 63 and long.endswith("-0b5c9a3e")


def test_job_shape():
    cfg = OperatorConfig(priority_classes={"high": "schedgen-high"}, s3_endpoint_url="http://s3:9000")
    job = build_job(parsejob(), cfg, URLS)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert job["metadata"]["name"] == "my-upload-0b5c9a3e" and job["metadata"]["namespace"] == "team-a"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == UID and owner["controller"] is True and owner["kind"] == "ParseJob"
    assert spec["activeDeadlineSeconds"] == 120 and spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] == cfg.job_ttl_seconds
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "runner", "operator": "In", "values": [2]}}
    ignore = next(i for i, r in enumerate(rules) if r["action"] == "Ignore")
    assert rules[ignore]["onPodConditions"][0]["type"] == "DisruptionTarget"
    oom = next(i for i, r in enumerate(rules) if r.get("onExitCodes", {}).get("values") == [137])
    assert rules[oom]["action"] == "FailJob" and ignore < oom  # an eviction's SIGKILL stays retried
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["priorityClassName"] == "schedgen-high"
    assert c["image"] == cfg.runner_image and "command" not in c
    env = env_of(job)
    assert env["SCHEDGEN_JOB_UID"]["value"] == UID and env["SCHEDGEN_JOB_NAME"]["value"] == "my.upload"
    assert env["SCHEDGEN_TENANT"]["value"] == "team-a"  # defaults to the namespace
    assert env["SCHEDGEN_SCHEDULE_TYPE"]["value"] == "lecture"
    assert env["SCHEDGEN_SOURCE_URL"]["value"] == URLS["source"]
    assert env["SCHEDGEN_RESULT_URL"]["value"] == URLS["result"]
    assert_no_credentials(job)
    labels = job["metadata"]["labels"]
    assert labels["schedgen.io/parsejob-uid"] == UID and labels["app.kubernetes.io/managed-by"] == "schedgen-operator"
    assert spec["template"]["metadata"]["labels"]["schedgen.io/parsejob-uid"] == UID


def test_no_priority_class_unless_configured_and_runner_command_override():
    job = build_job(parsejob(priority="low", tenant="t1"), OperatorConfig(runner_command=("stub", "--ok")))
    pod = job["spec"]["template"]["spec"]
    assert "priorityClassName" not in pod
    assert pod["containers"][0]["command"] == ["stub", "--ok"]
    assert env_of(job)["SCHEDGEN_TENANT"]["value"] == "t1"


@pytest.mark.parametrize("text,value", [("250m", Decimal("0.25")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)),
                                         ("512M", Decimal(512 * 10**6)), (1, Decimal(1)), ("1e3", Decimal(1000))])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_resources_spec_may_ask_less_never_more():
    cfg = OperatorConfig(cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi",
                         max_cpu="2", max_memory="1Gi")
    assert effective_resources(None, cfg) == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                              "limits": {"cpu": "1", "memory": "512Mi"}}
    asked = {"requests": {"cpu": "4", "memory": "64Mi"}, "limits": {"cpu": 8, "memory": "100Gi"}}
    assert effective_resources(asked, cfg) == {"requests": {"cpu": "2", "memory": "64Mi"},
                                               "limits": {"cpu": "2", "memory": "1Gi"}}
    small = {"limits": {"memory": "32Mi"}}
    got = effective_resources(small, cfg)
    assert got["limits"]["memory"] == "32Mi" and got["requests"]["memory"] == "32Mi"  # request <= limit


@pytest.mark.parametrize("limit, fraction, expected", [
    ("512Mi", 0.75, 384), ("2Gi", 0.75, 1536), ("1G", 0.5, 476),
    ("160Mi", 0.75, 0),  # 120 MiB: too little for the interpreter, the container limit alone
    ("16Mi", 0.75, 0), ("512Mi", 0.0, 0)])
def test_runner_memory_limit_is_on_by_default_under_the_containers(limit, fraction, expected):
    cfg = OperatorConfig(runner_memory_fraction=fraction, max_memory="4Gi")
    job = build_job(parsejob(resources={"limits": {"memory": limit}}), cfg, URLS)
    assert env_of(job)["SCHEDGEN_MAX_MEMORY_MB"]["value"] == str(expected)
    assert OperatorConfig().runner_memory_fraction == 0.75


TOLERATIONS = [{"key": "pool", "operator": "Equal", "value": "runners", "effect": "NoSchedule"}]
AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["runners"]}]}]}}}


def test_runner_placement_from_the_charts_environment():
    import json

    cfg = OperatorConfig.from_env({"SCHEDGEN_NODE_SELECTOR": "pool=runners",
                                   "SCHEDGEN_RUNNER_TOLERATIONS": json.dumps(TOLERATIONS),
                                   "SCHEDGEN_RUNNER_AFFINITY": json.dumps(AFFINITY)})
    pod = build_job(parsejob(), cfg)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "runners"}
    assert pod["tolerations"] == TOLERATIONS
    assert pod["affinity"] == AFFINITY
    # the Job gets copies: mutating one Job never leaks into the config or the next Job
    pod["tolerations"][0]["value"] = "changed"
    pod["affinity"]["nodeAffinity"].clear()
    again = build_job(parsejob(), cfg)["spec"]["template"]["spec"]
    assert again["tolerations"] == TOLERATIONS and again["affinity"] == AFFINITY


@pytest.mark.parametrize("env", [{}, {"SCHEDGEN_RUNNER_TOLERATIONS": "[]", "SCHEDGEN_RUNNER_AFFINITY": "{}"},
                                 {"SCHEDGEN_RUNNER_TOLERATIONS": "null", "SCHEDGEN_RUNNER_AFFINITY": "null"},
                                 {"SCHEDGEN_RUNNER_TOLERATIONS": "", "SCHEDGEN_RUNNER_AFFINITY": ""}])
def test_no_placement_unless_configured(env):
    pod = build_job(parsejob(), OperatorConfig.from_env(env))["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity"} & set(pod)


@pytest.mark.parametrize("name,raw", [("SCHEDGEN_RUNNER_TOLERATIONS", "{not json"),
                                      ("SCHEDGEN_RUNNER_TOLERATIONS", '{"key": "pool"}'),
                                      ("SCHEDGEN_RUNNER_TOLERATIONS", '["pool"]'),
                                      ("SCHEDGEN_RUNNER_AFFINITY", "[]")])
def test_invalid_placement_is_a_startup_error(name, raw):
    with pytest.raises(ConfigurationError, match=name):
        OperatorConfig.from_env({name: raw})
