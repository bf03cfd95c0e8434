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
from localkube.executor import SIGTERM_SUMMARY, Executor, _Stopped, failure_document, member, runner_inputs

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
    terminating = ("pod-terminate", "pod-terminate-other", "pod-terminate-runner", "pod-terminate-grace")
    assert set(by_name) == {"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-complete",
                            *terminating, "pod-delete"}
    assert {n: s["resourceRef"]["kind"] for n, s in by_name.items()} == {
        "node-initialize": "Node", "node-heartbeat-with-lease": "Node", "pod-ready": "Pod",
        "pod-complete": "Pod", "pod-delete": "Pod", **{n: "Pod" for n in terminating}}
    # a Running runner pod being deleted ends when the executor has annotated it (after the
    # runner's SIGTERM work) or at the end of its grace period; the others at once
    def selector(name):
        return {e["key"]: (e["operator"], tuple(e.get("values") or ())) for e in by_name[name]["selector"]["matchExpressions"]}

    managed = '.metadata.labels["app.kubernetes.io/managed-by"]'
    exit_code = f'.metadata.annotations["{kwok.ANN_EXIT_CODE}"]'
    assert selector("pod-terminate")[".status.phase"] == ("In", ("Pending",))
    assert selector("pod-terminate-other")[managed] == ("NotIn", ("schedgen-operator",))
    assert selector("pod-terminate-runner")[managed] == ("In", ("schedgen-operator",))
    assert selector("pod-terminate-runner")[exit_code] == ("Exists", ())
    assert selector("pod-terminate-grace")[exit_code] == ("DoesNotExist", ())
    assert by_name["pod-terminate-grace"]["delay"] == {"durationFrom": {"expressionFrom": ".metadata.deletionTimestamp"}}
    runner_end = by_name["pod-terminate-runner"]["next"]["statusTemplate"]
    assert f'"{kwok.ANN_EXIT_CODE}"' in runner_end and f'"{kwok.ANN_TERMINATION_MESSAGE}"' in runner_end
    assert all("delay" not in by_name[n] for n in ("pod-terminate", "pod-terminate-other", "pod-terminate-runner"))
    complete = by_name["pod-complete"]
    keys = [e["key"] for e in complete["selector"]["matchExpressions"]]
    assert f'.metadata.annotations["{kwok.ANN_EXIT_CODE}"]' in keys
    template = complete["next"]["statusTemplate"]
    assert f'"{kwok.ANN_EXIT_CODE}"' in template and f'"{kwok.ANN_TERMINATION_MESSAGE}"' in template
    assert by_name["pod-delete"]["next"] == {"delete": True}
    # the message pod-terminate writes is the runner's own summary on SIGTERM (the executor's too)
    for name in ("pod-terminate", "pod-terminate-other", "pod-terminate-grace"):
        terminate = by_name[name]["next"]["statusTemplate"]
        line = next(x for x in terminate.splitlines() if "message:" in x)
        summary = RunnerSummary.from_message(yaml.safe_load(line.strip())["message"])
        assert summary == RunnerSummary(ok=False, code="Interrupted", message=SIGTERM_SUMMARY)


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


# ------------------------------------------------------------------------- slow runs, stopped mid-way
def _batch_pod(s3, pdf: bytes, count: int, node: str = "") -> tuple[dict, dict, list[str]]:
    uids, items = [], []
    for _ in range(count):
        uid, env = _presigned_env(s3, s3.put(pdf))
        uids.append(uid)
        items.append(env)
    spec, secret = with_run_file({}, items)
    if node:
        spec["spec"]["nodeName"] = node
    return spec, secret, uids


def _result(s3, uid: str):
    try:
        return json.loads(s3.client.get_object(Bucket=s3.bucket, Key=result_key("ns", uid))["Body"].read())
    except s3.client.exceptions.NoSuchKey:
        return None


def test_a_slow_batch_stopped_mid_way_ends_as_the_runner_on_sigterm(s3):
    import threading
    import time

    from api_testlib import FIXTURES

    executor = Executor(api_client=None, workers=2, member_seconds=0.6)
    spec, secret, uids = _batch_pod(s3, (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes(), 3)
    executor._read_secret = reader(secret)
    stop = threading.Event()
    stopped_at = []

    def delete_after_the_first_member():  # the pod is deleted while its second member is in hand
        while executor.stats().get("s3_puts", 0) < 1:
            time.sleep(0.02)
        time.sleep(0.2)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=delete_after_the_first_member, daemon=True).start()
    with pytest.raises(_Stopped) as stopped:
        executor.execute(spec, stop)
    assert stopped.value.how == "sigterm" and stopped.value.done == 1
    assert time.monotonic() - stopped_at[0] < 0.5  # it stopped at once, not at the member's end
    first, second, third = (_result(s3, uid) for uid in uids)
    assert first["kind"] == "exam" and len(first["events"]) == 5
    # the member in hand: the document runner/batch.py writes on SIGTERM (a transient failure)
    assert second == {"ok": False, "killed": None, "code": "Interrupted", "retry": True,
                      "message": "stopped by SIGTERM (pod deleted or evicted) mid-parse"}
    assert third is None  # not reached: no object, the operator puts it back in the queue
    assert executor.stats()["members_interrupted"] == 1


def test_a_slow_single_run_stopped_writes_nothing_and_a_killed_pod_writes_nothing(s3):
    from api_testlib import FIXTURES

    import threading

    pdf = (FIXTURES / "up" / "UP_EXAM_SS.pdf").read_bytes()
    executor = Executor(api_client=None, workers=2, member_seconds=5)
    uid, env = _presigned_env(s3, s3.put(pdf))
    stop = threading.Event()
    stop.set()  # deleted before it began
    with pytest.raises(_Stopped) as stopped:
        executor.execute(pod(env), stop)
    assert stopped.value.how == "sigterm" and _result(s3, uid) is None
    # its node gone mid-batch: the machine went, nothing is written
    spec, secret, uids = _batch_pod(s3, pdf, 2, node="kwok-gone")
    executor._read_secret = reader(secret)
    executor._node_gone = lambda node: node == "kwok-gone"
    with pytest.raises(_Stopped) as stopped:
        executor.execute(spec, threading.Event())
    assert stopped.value.how == "killed" and [_result(s3, u) for u in uids] == [None, None]
    # not slow, not stopped: as before
    executor.member_seconds = 0
    uid, env = _presigned_env(s3, s3.put(pdf))
    code, summary = executor.execute(pod(env), threading.Event())
    assert code == 0 and summary.events == 5
