"""The check that a runner Job holds no credential of any kind (unit and e2e tests): its
only Secret is its own run file (the presigned URLs of its runs, which carry a signature,
never a key), mounted read-only; no env, token or other volume carries anything."""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

_CREDENTIAL_NAME = re.compile(r"AWS_|DATABASE|DSN|PASSWORD|SECRET|TOKEN|KEY_ID|PGPASS", re.IGNORECASE)
RUN_DIR = "/run/schedgen"


def assert_no_credentials(job: dict[str, Any], secret_values: Iterable[str] = (),
                          run_secret: dict[str, Any] | None = None) -> None:
    """`job` as a plain dict (the API's camelCase JSON; a pod may stand for it as
    {"spec": {"template": pod}}); `run_secret`: the Secret its run file comes from, as
    built (stringData) or read (base64 data), checked too when given."""
    pod = job["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    secrets = [v for v in volumes.values() if "secret" in v or "projected" in v]
    assert len(secrets) == 1 and set(secrets[0]) == {"name", "secret"}, volumes  # the run file, nothing else
    text = json.dumps(job)
    for marker in ("secretKeyRef", "envFrom", "serviceAccountToken", "projected"):
        assert marker not in text, f"{marker} in the runner Job"
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env") or []:
            assert not _CREDENTIAL_NAME.search(env["name"]), f"credential-like env {env['name']}"
            assert "valueFrom" not in env, env
            assert "X-Amz-Signature" not in env.get("value", ""), "a presigned URL in the pod spec"
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts") or []}
        assert mounts[RUN_DIR].get("readOnly") is True and mounts[RUN_DIR]["name"] == secrets[0]["name"]
    for value in secret_values:
        assert value and value not in text, "a secret value is in the runner Job"
    if run_secret is not None:
        assert_run_file_holds_no_credentials(run_secret, secret_values)


def assert_run_file_holds_no_credentials(secret: dict[str, Any], secret_values: Iterable[str] = ()) -> list[dict]:
    """The runs in a run Secret: each with its two presigned URLs, no credential-like
    variable, no secret value. Returns the runs."""
    import base64

    if "stringData" in secret:
        text = secret["stringData"]["run.json"]
    else:
        text = base64.b64decode(secret["data"]["run.json"]).decode()
    runs = json.loads(text)
    assert runs and all(not any(_CREDENTIAL_NAME.search(k) for k in run) for run in runs), runs
    assert all({"SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"} <= set(run) for run in runs)
    for value in secret_values:
        assert value and value not in text, "a secret value is in the run file"
    return runs
