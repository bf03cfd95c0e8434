"""The pure parts of the simulated nodes (hack/localkube/kwok.py, kwok-stages.yaml) and of the
executor (hack/localkube/executor.py): the runner's inputs read from a pod, the checks the
runner's configuration makes, the stages file, and the executor's runner work against the real
S3 server (no cluster needed: `Executor.execute` takes a pod as the API returns it)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
import yaml
from localkube import kwok
from localkube.executor import Executor, failure_document, member, runner_inputs

from schedgen.errors import ConfigurationError, SourceNotFound
from schedgen.parsejob import RUNNER_CONTAINER, RunnerSummary, result_key

URLS = {"SCHEDGEN_SOURCE_URL": "http://10.200.3.1:9000/b/uploads/a.pdf?X-Amz-Signature=s",
        "SCHEDGEN_RESULT_URL": "http://10.200.3.1:9000/b/results/ns/u.json?X-Amz-Signature=t"}
IDS = {"SCHEDGEN_JOB_NAMESPACE": "ns", "SCHEDGEN_JOB_NAME": "pj", "SCHEDGEN_TENANT": "ns",
       "SCHEDGEN_JOB_UID": "3f2b8f0e-4b44-4a43-9f57-1c1d1f1e1a10"}


def pod(env: dict[str, str], container: str = RUNNER_CONTAINER, extra_env: list | None = None) -> dict:
    return {"metadata": {"namespace": "ns", "name": "pj-abc-xyz"},
            "spec": {"containers": [{"name": "sidecar", "env": [{"name": "SCHEDGEN_SOURCE_URL", "value": "nope"}]},
                                    {"name": container, "env": [{"name": k, "value": v} for k, v in env.items()]
                                     + (extra_env or [])}]}}


def test_single_run_inputs_come_from_the_runner_containers_env():
    inputs = runner_inputs(pod({**IDS, **URLS, "SCHEDGEN_MAX_PAGES": "7", "SCHEDGEN_SCHEDULE_TYPE": "exam"}))
    assert not inputs.batch and inputs.pod == "ns/pj-abc-xyz"
    run = member(inputs.members[0])
    assert run.source_url == URLS["SCHEDGEN_SOURCE_URL"] and run.result_url == URLS["SCHEDGEN_RESULT_URL"]
    assert run.job_uid == IDS["SCHEDGEN_JOB_UID"] and run.max_pages == 7 and run.schedule_type == "exam"
    assert run.max_bytes == 10 * 1024 * 1024 and run.parse_timeout_seconds == 60.0  # the runner's defaults


def with_run_file(env: dict[str, str], runs, secret: str = "job-x") -> tuple[dict, dict]:
    """A pod as the operator makes it (its runs in a Secret mounted at /run/schedgen), and
    that Secret as the API returns it (base64 data)."""
    spec = pod({**env, "SCHEDGEN_RUN_FILE": "/run/schedgen/run.json"})
    runner = spec["spec"]["containers"][1]
    runner["volumeMounts"] = [{"name": "run", "mountPath": "/run/schedgen", "readOnly": True}]
    spec["spec"]["volumes"] = [{"name": "run", "secret": {"secretName": secret}}]
    text = runs if isinstance(runs, str) else json.dumps(runs)
    return spec, {"data": {"run.json": base64.b64encode(text.encode()).decode()}}


def reader(secret: dict, name: str = "job-x"):
    return lambda ns, wanted: secret if (ns, wanted) == ("ns", name) else None


def test_batch_inputs_are_one_set_per_member_with_the_shared_variables_merged_in():
    items = [{**IDS, **URLS, "SCHEDGEN_JOB_NAME": f"pj-{i}", "SCHEDGEN_PARSE_TIMEOUT_SECONDS": str(10 + i)}
             for i in range(3)]
    spec, secret = with_run_file({"SCHEDGEN_MAX_BYTES": "1000"}, items)
    inputs = runner_inputs(spec, reader(secret))
    assert inputs.batch and len(inputs.members) == 3
    runs = [member(m) for m in inputs.members]
    assert [r.parse_timeout_seconds for r in runs] == [10.0, 11.0, 12.0]
    assert {r.max_bytes for r in runs} == {1000}
    assert all("SCHEDGEN_RUN_FILE" not in m for m in inputs.members)


def test_a_run_file_of_one_is_a_single_run():
    spec, secret = with_run_file({}, [{**IDS, **URLS}])
    inputs = runner_inputs(spec, reader(secret))
    assert not inputs.batch and member(inputs.members[0]).source_url == URLS["SCHEDGEN_SOURCE_URL"]


@pytest.mark.parametrize("spec, message", [
    (pod({**IDS, **URLS}, container="main"), "has no container 'runner'"),
    (pod(IDS, extra_env=[{"name": "SCHEDGEN_SOURCE_URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     "SCHEDGEN_SOURCE_URL comes from valueFrom"),
    (with_run_file({}, "[{"), "SCHEDGEN_RUN_FILE is not JSON"),
    (with_run_file({}, "[]"), "a list of 1 to 50 objects"),
    (with_run_file({}, [{"SCHEDGEN_JOB_UID": 1}]), "a list of 1 to 50 objects"),
    (with_run_file({}, [IDS] * 51), "a list of 1 to 50 objects"),
    (with_run_file({}, [IDS], secret="another"), "cannot be read: no Secret another"),
    ((pod({"SCHEDGEN_RUN_FILE": "/run/schedgen/run.json"}), {}), "no Secret is mounted at /run/schedgen"),
])
def test_unreadable_inputs_are_a_configuration_error(spec, message):
    if isinstance(spec, tuple):
        spec, secret = spec
    else:
        secret = {}
    with pytest.raises(ConfigurationError, match=message) as caught:
        runner_inputs(spec, reader(secret))
    assert caught.value.exit_code == 3


def test_member_checks_what_the_runner_requires():
    with pytest.raises(ConfigurationError) as caught:
        member({**IDS, "SCHEDGEN_SOURCE_URL": "file:///etc/passwd", "SCHEDGEN_MAX_PAGES": "many",
                "SCHEDGEN_SCHEDULE_TYPE": "poster"})
    text = caught.value.message
    assert "SCHEDGEN_RESULT_URL is required" in text and "SCHEDGEN_SOURCE_URL must be an http(s) URL" in text
    assert "SCHEDGEN_MAX_PAGES='many' is not a number" in text and "SCHEDGEN_SCHEDULE_TYPE='poster'" in text


def test_failure_document_is_the_batch_runners():
    assert json.loads(failure_document(SourceNotFound("gone"))) == {
        "ok": False, "killed": None, "code": "SourceNotFound", "message": "gone", "retry": False}


def test_stages_file_has_the_stages_and_reads_the_executors_annotations():
    docs = list(yaml.safe_load_all(kwok.STAGES_FILE.read_text()))
    assert all(d["apiVersion"] == "kwok.x-k8s.io/v1alpha1" and d["kind"] == "Stage" for d in docs)
    by_name = {d["metadata"]["name"]: d["spec"] for d in docs}
    assert set(by_name) == {"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete",
                            "pod-terminate", "pod-delete"}
    assert {n: s["resourceRef"]["kind"] for n, s in by_name.items()} == {
        "node-initialize": "Node", "node-heartbeat-with-lease": "Node", "pod-ready": "Pod",
        "pod-complete": "Pod", "pod-terminate": "Pod", "pod-delete": "Pod"}
    complete = by_name["pod-complete"]
    keys = [e["key"] for e in complete["selector"]["matchExpressions"]]
    assert f'.metadata.annotations["{kwok.ANN_EXIT_CODE}"]' in keys
    template = complete["next"]["statusTemplate"]
    assert f'"{kwok.ANN_EXIT_CODE}"' in template and f'"{kwok.ANN_TERMINATION_MESSAGE}"' in template
    assert by_name["pod-delete"]["next"] == {"delete": True}
    # the message pod-terminate writes is the runner's own summary on SIGTERM
    terminate = by_name["pod-terminate"]["next"]["statusTemplate"]
    line = next(x for x in terminate.splitlines() if "message:" in x)
    summary = RunnerSummary.from_message(yaml.safe_load(line.strip())["message"])
    assert summary == RunnerSummary(ok=False, code="Interrupted",
                                    message="stopped by SIGTERM before finishing (pod deleted or evicted)")


def test_fake_node_object():
    node = kwok.fake_node("kwok-node-9", cpu="4", memory="8Gi", pods=20, labels={"pool": "runners"})
    assert node["metadata"]["annotations"][kwok.FAKE_KEY] == kwok.FAKE_VALUE
    assert node["metadata"]["labels"]["pool"] == "runners" and node["metadata"]["labels"][kwok.FAKE_KEY] == "fake"
    assert node["spec"]["taints"] == [kwok.FAKE_TAINT]
    assert node["status"]["allocatable"] == node["status"]["capacity"] == {
        "cpu": "4", "memory": "8Gi", "pods": "20", "ephemeral-storage": "100Gi"}
    assert kwok.fake_node("n", taints=[])["spec"]["taints"] == []
    assert json.loads(kwok.RUNNER_PLACEMENT_ENV["SCHEDGEN_RUNNER_TOLERATIONS"]) == [kwok.FAKE_TOLERATION]
    assert kwok.RUNNER_PLACEMENT_ENV["SCHEDGEN_NODE_SELECTOR"] == "kwok.x-k8s.io/node=fake"


# ------------------------------------------------------------------------- the runner's work, real S3
def _presigned_env(s3, source_key: str) -> tuple[str, dict[str, str]]:
    uid = str(uuid.uuid4())
    env = {**IDS, "SCHEDGEN_JOB_UID": uid,
           "SCHEDGEN_SOURCE_URL": s3.client_for("operator").generate_presigned_url(  # as the operator signs
               "get_object", Params={"Bucket": s3.bucket, "Key": source_key}, ExpiresIn=300),
           "SCHEDGEN_RESULT_URL": s3.client_for("operator").generate_presigned_url(
               "put_object", Params={"Bucket": s3.bucket, "Key": result_key("ns", uid),
                                     "ContentType": "application/json"}, ExpiresIn=300)}
    return uid, env


def test_execute_gets_parses_once_per_content_and_puts_the_result(s3):
    from api_testlib import FIXTURES

    executor = Executor(api_client=None, workers=2)
    pdf = (FIXTURES / "up" / "UP_TST_PDF.pdf").read_bytes()
    outcomes = []
    for _ in range(3):  # the same content under three keys: one parse
        uid, env = _presigned_env(s3, s3.put(pdf))
        outcomes.append((uid, executor.execute(pod(env))))
    for uid, (code, summary) in outcomes:
        assert code == 0 and summary.ok and summary.kind == "test" and summary.events == 12
        doc = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=result_key("ns", uid))["Body"].read())
        assert doc["kind"] == "test" and len(doc["events"]) == 12 and doc["seconds"] == summary.seconds
    stats = executor.stats()
    assert stats["parses"] == 1 and stats["parse_cache_hits"] == 2 and stats["s3_gets"] == 3
    assert stats["s3_puts"] == 3 and stats["s3_get_bytes"] == 3 * len(pdf)

    # a missing object: SourceNotFound, exit 2, nothing written
    uid, env = _presigned_env(s3, f"uploads/missing-{uuid.uuid4().hex}.pdf")
    code, summary = executor.execute(pod(env))
    assert code == 2 and summary.code == "SourceNotFound" and "HTTP 404" in summary.message
    # a PDF over SCHEDGEN_MAX_BYTES: TooLarge, exit 2
    uid, env = _presigned_env(s3, s3.put(pdf))
    code, summary = executor.execute(pod({**env, "SCHEDGEN_MAX_BYTES": "1000"}))
    assert code == 2 and summary.code == "TooLarge"
    # S3 not reachable: transient, exit 1 (the Job retries)
    uid, env = _presigned_env(s3, "uploads/x.pdf")
    env["SCHEDGEN_SOURCE_URL"] = "http://127.0.0.1:9/b/x.pdf"
    code, summary = executor.execute(pod(env))
    assert code == 1 and summary.code == "StorageUnavailable"
    # a misconfigured pod: exit 3
    code, summary = executor.execute(pod({"SCHEDGEN_SOURCE_URL": "x"}))
    assert code == 3 and summary.code == "ConfigurationError"
    assert executor.stats()["member_errors"] == {"SourceNotFound": 1, "TooLarge": 1, "StorageUnavailable": 1,
                                                 "ConfigurationError": 1}
