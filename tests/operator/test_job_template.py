"""The Job built for an admitted ParseJob: the common template (job_template.runner_job)
as a single run fills it (runner_jobs.SINGLE.build), resources and placement."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from credentials import assert_no_credentials, assert_run_file_holds_no_credentials
from parsejobs import parsejob as typed
from schedgen.errors import ConfigurationError
from schedgen.operator.config import OperatorConfig
from schedgen.operator.job_template import (
    effective_resources,
    label_value,
    parse_quantity,
    runner_job,
    runner_memory_mb,
)
from schedgen.operator.runner_jobs import SINGLE
from schedgen.parsejob import ParseJob

UID = "0b5c9a3e-1111-2222-3333-444455556666"
URLS = {"source": "http://s3:9000/b/k.pdf?X-Amz-Signature=a", "result": "http://s3:9000/b/r.json?X-Amz-Signature=b"}


def parsejob(**spec) -> ParseJob:
    base = {"scheduleType": "lecture", "priority": "high", "deadlineSeconds": 120, "maxRetries": 2}
    base.update(spec)
    return typed("my.upload", namespace="team-a", uid=UID, labels={"x": "y"},
                 status={"phase": "Queued", "transitionSeq": 1}, **base)


def build(pj: ParseJob, cfg: OperatorConfig | None = None, urls=URLS) -> dict:
    return SINGLE.build([pj], cfg or OperatorConfig(), {pj.uid: urls})


def run_of(pj: ParseJob, cfg: OperatorConfig | None = None) -> dict:
    """The variables of the ParseJob's run, as its run file (the Secret) holds them."""
    (run,) = assert_run_file_holds_no_credentials(SINGLE.secret([pj], cfg or OperatorConfig(), {pj.uid: URLS}))
    return run


def env_of(job: dict) -> dict:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def rule_for(rules: list[dict], exit_code: int) -> int:
    return next(i for i, r in enumerate(rules)
                if r.get("onExitCodes", {}).get("containerName") == "runner"
                and r["onExitCodes"].get("operator") == "In" and exit_code in r["onExitCodes"]["values"])


def test_job_shape():
    cfg = OperatorConfig(priority_classes={"high": "schedgen-high"}, s3_endpoint_url="http://s3:9000")
    job = build(parsejob(), cfg)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "my-upload-0b5c9a3e-1" and job["metadata"]["namespace"] == "team-a"
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["uid"] == UID and owner["controller"] is True and owner["kind"] == "ParseJob"
    assert owner["name"] == "my.upload" and owner["apiVersion"] == "schedgen.io/v1alpha1"
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["ttlSecondsAfterFinished"] == cfg.job_ttl_seconds
    rules = spec["podFailurePolicy"]["rules"]
    for code in (2, 3, 137):  # bad input, misconfigured, OOM-killed: fail at once
        assert rules[rule_for(rules, code)]["action"] == "FailJob"
    assert not any(1 in r.get("onExitCodes", {}).get("values", ()) for r in rules)  # transient: no rule
    ignore = next(i for i, r in enumerate(rules) if r["action"] == "Ignore")
    assert rules[ignore]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert ignore < rule_for(rules, 137)  # an eviction's SIGKILL stays a free new pod
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["priorityClassName"] == "schedgen-high"
    assert c["image"] == cfg.runner_image and "command" not in c
    env = env_of(job)
    assert env["SCHEDGEN_RUN_FILE"]["value"] == "/run/schedgen/run.json"
    assert env["SCHEDGEN_MAX_BYTES"]["value"] == str(cfg.max_bytes)
    assert "SCHEDGEN_SOURCE_URL" not in env and "SCHEDGEN_RESULT_URL" not in env  # not in the pod spec
    # the run file: a Secret of the Job's name, read-only at /run/schedgen, readable by the runner's group
    volume = next(v for v in pod["volumes"] if v["name"] == "run")
    assert volume["secret"] == {"secretName": job["metadata"]["name"], "defaultMode": 0o440}
    assert pod["securityContext"]["fsGroup"] == 65532
    secret = SINGLE.secret([parsejob()], cfg, {UID: URLS})
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == job["metadata"]["name"]
    assert [(o["uid"], o["controller"]) for o in secret["metadata"]["ownerReferences"]] == [(UID, False)]
    (run,) = assert_run_file_holds_no_credentials(secret)
    assert run["SCHEDGEN_JOB_UID"] == UID and run["SCHEDGEN_JOB_NAME"] == "my.upload"
    assert run["SCHEDGEN_JOB_NAMESPACE"] == "team-a"
    assert run["SCHEDGEN_TENANT"] == "team-a"  # defaults to the namespace
    assert run["SCHEDGEN_SCHEDULE_TYPE"] == "lecture"
    assert (run["SCHEDGEN_SOURCE_URL"], run["SCHEDGEN_RESULT_URL"]) == (URLS["source"], URLS["result"])
    assert_no_credentials(job, run_secret=secret)
    labels = job["metadata"]["labels"]
    assert labels["schedgen.io/parsejob-uid"] == UID and labels["app.kubernetes.io/managed-by"] == "schedgen-operator"
    assert labels["schedgen.io/parsejob"] == "my.upload" and labels["schedgen.io/tenant"] == "team-a"
    assert labels["schedgen.io/priority"] == "high" and "x" not in labels  # the ParseJob's own labels stay
    assert "schedgen.io/batch" not in labels
    assert spec["template"]["metadata"]["labels"] == labels


def test_no_pod_retries_whatever_max_retries_says():
    """Was: a single Job's backoffLimit was the ParseJob's maxRetries (the Job retried its
    pod). Now every runner Job has backoffLimit 0: a transient failure ends the run, and
    the operator retries it as a new run after retry_backoff_seconds (outcome.conclude)."""
    for retries in (0, 2, 7):
        assert build(parsejob(maxRetries=retries))["spec"]["backoffLimit"] == 0


def test_the_parse_timeout_is_capped_at_the_deadline():
    cfg = OperatorConfig(parse_timeout_seconds=60)
    assert run_of(parsejob(deadlineSeconds=120), cfg)["SCHEDGEN_PARSE_TIMEOUT_SECONDS"] == "60"
    assert run_of(parsejob(deadlineSeconds=30), cfg)["SCHEDGEN_PARSE_TIMEOUT_SECONDS"] == "30"
    assert build(parsejob(deadlineSeconds=30), cfg)["spec"]["activeDeadlineSeconds"] == 30


def test_no_priority_class_unless_configured_and_runner_command_override():
    job = build(parsejob(priority="low", tenant="t1"), OperatorConfig(runner_command=("stub", "--ok")))
    pod = job["spec"]["template"]["spec"]
    assert "priorityClassName" not in pod
    assert pod["containers"][0]["command"] == ["stub", "--ok"]
    assert run_of(parsejob(priority="low", tenant="t1"))["SCHEDGEN_TENANT"] == "t1"
    assert job["metadata"]["labels"]["schedgen.io/tenant"] == "t1"


def test_label_values_are_valid_whatever_the_tenant():
    job = build(parsejob(tenant="Team A/ünï" + "x" * 80))
    value = job["metadata"]["labels"]["schedgen.io/tenant"]
    assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
    assert set(value) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    assert run_of(parsejob(tenant="Team A/ünï" + "x" * 80))["SCHEDGEN_TENANT"].startswith("Team A/ünï")  # as it is
    assert label_value("-a.b_") == "a.b"


def test_the_template_without_a_pod_failure_policy():
    cfg = OperatorConfig()
    job = runner_job(name="j", namespace="n", labels={"l": "v"}, owners=[],
                     resources=effective_resources(None, cfg), deadline_seconds=50, priority="normal", cfg=cfg)
    assert "podFailurePolicy" not in job["spec"] and job["spec"]["backoffLimit"] == 0
    env = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert env[0] == "SCHEDGEN_RUN_FILE"
    assert {"SCHEDGEN_MAX_BYTES", "SCHEDGEN_MAX_PAGES", "SCHEDGEN_MAX_MEMORY_MB"} <= set(env)


@pytest.mark.parametrize("text,value", [("250m", Decimal("0.25")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)),
                                         ("512M", Decimal(512 * 10**6)), (1, Decimal(1)), ("1e3", Decimal(1000))])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Qi", "1..2", "--1"])
def test_parse_quantity_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


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
    assert effective_resources({"limits": {"cpu": "lots"}}, cfg)["limits"]["cpu"] == "1"  # invalid: the default
    job = build(parsejob(resources=asked), cfg)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == effective_resources(asked, cfg)


@pytest.mark.parametrize("limit, fraction, expected", [
    ("512Mi", 0.75, 384), ("2Gi", 0.75, 1536), ("1G", 0.5, 476),
    ("160Mi", 0.75, 0),  # 120 MiB: too little for the interpreter, the container limit alone
    ("16Mi", 0.75, 0), ("512Mi", 0.0, 0)])
def test_runner_memory_limit_is_on_by_default_under_the_containers(limit, fraction, expected):
    cfg = OperatorConfig(runner_memory_fraction=fraction, max_memory="4Gi")
    job = build(parsejob(resources={"limits": {"memory": limit}}), cfg)
    assert env_of(job)["SCHEDGEN_MAX_MEMORY_MB"]["value"] == str(expected)
    assert runner_memory_mb(effective_resources({"limits": {"memory": limit}}, cfg), cfg) == expected
    assert OperatorConfig().runner_memory_fraction == 0.75


TOLERATIONS = [{"key": "pool", "operator": "Equal", "value": "runners", "effect": "NoSchedule"}]
AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["runners"]}]}]}}}


def test_runner_placement_from_the_charts_environment():
    cfg = OperatorConfig.from_env({"SCHEDGEN_NODE_SELECTOR": "pool=runners",
                                   "SCHEDGEN_RUNNER_TOLERATIONS": json.dumps(TOLERATIONS),
                                   "SCHEDGEN_RUNNER_AFFINITY": json.dumps(AFFINITY)})
    pod = build(parsejob(), cfg)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "runners"}
    assert pod["tolerations"] == TOLERATIONS
    assert pod["affinity"] == AFFINITY
    # the Job gets copies: mutating one Job never leaks into the config or the next Job
    pod["tolerations"][0]["value"] = "changed"
    pod["affinity"]["nodeAffinity"].clear()
    pod["nodeSelector"]["pool"] = "changed"
    again = build(parsejob(), cfg)["spec"]["template"]["spec"]
    assert again["tolerations"] == TOLERATIONS and again["affinity"] == AFFINITY
    assert again["nodeSelector"] == {"pool": "runners"}


@pytest.mark.parametrize("env", [{}, {"SCHEDGEN_RUNNER_TOLERATIONS": "[]", "SCHEDGEN_RUNNER_AFFINITY": "{}"},
                                 {"SCHEDGEN_RUNNER_TOLERATIONS": "null", "SCHEDGEN_RUNNER_AFFINITY": "null"},
                                 {"SCHEDGEN_RUNNER_TOLERATIONS": "", "SCHEDGEN_RUNNER_AFFINITY": ""}])
def test_no_placement_unless_configured(env):
    pod = build(parsejob(), OperatorConfig.from_env(env))["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity"} & set(pod)


def test_image_pull_secrets_reach_single_and_batch_jobs_by_name():
    """The chart's runner.imagePullSecrets (SCHEDGEN_RUNNER_IMAGE_PULL_SECRETS): every runner
    pod names them, in order, once each; none by default; the Job holds names, no secret data."""
    from schedgen.operator.runner_jobs import BATCH

    cfg = OperatorConfig.from_env({"SCHEDGEN_RUNNER_IMAGE_PULL_SECRETS": " regcred, mirror-cred ,regcred,"})
    assert cfg.runner_image_pull_secrets == ("regcred", "mirror-cred")
    single = build(parsejob(), cfg)["spec"]["template"]["spec"]
    assert single["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-cred"}]
    members = [parsejob(), typed("other.upload", namespace="team-a", uid=UID.replace("0b5c", "1b5c"),
                                 status={"phase": "Queued", "transitionSeq": 1}, scheduleType="lecture",
                                 priority="high", deadlineSeconds=120, maxRetries=2)]
    batch = BATCH.build(members, cfg, {m.uid: URLS for m in members})["spec"]["template"]["spec"]
    assert batch["imagePullSecrets"] == single["imagePullSecrets"]
    assert "imagePullSecrets" not in build(parsejob())["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in build(parsejob(), OperatorConfig.from_env(
        {"SCHEDGEN_RUNNER_IMAGE_PULL_SECRETS": ""}))["spec"]["template"]["spec"]


@pytest.mark.parametrize("name,raw", [("SCHEDGEN_RUNNER_TOLERATIONS", "{not json"),
                                      ("SCHEDGEN_RUNNER_TOLERATIONS", '{"key": "pool"}'),
                                      ("SCHEDGEN_RUNNER_TOLERATIONS", '["pool"]'),
                                      ("SCHEDGEN_RUNNER_AFFINITY", "[]")])
def test_invalid_placement_is_a_startup_error(name, raw):
    with pytest.raises(ConfigurationError, match=name):
        OperatorConfig.from_env({name: raw})


def test_runner_pods_say_they_are_working_to_autoscalers():
    """No consolidation or scale-down takes a runner's node away under it."""
    annotations = build(parsejob())["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"karpenter.sh/do-not-disrupt": "true",
                           "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
