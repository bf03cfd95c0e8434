"""The check that a runner Job's spec holds no credential of any kind (unit and e2e tests)."""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

_CREDENTIAL_NAME = re.compile(r"AWS_|DATABASE|DSN|PASSWORD|SECRET|TOKEN|KEY_ID|PGPASS", re.IGNORECASE)


def assert_no_credentials(job: dict[str, Any], secret_values: Iterable[str] = ()) -> None:
    """`job` as a plain dict (the API's camelCase JSON). The runner's only access is its
    two presigned URLs, which carry a signature, never a key."""
    pod = job["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False
    text = json.dumps(job)
    for marker in ("secretKeyRef", "envFrom", "secretName", '"secret"', "serviceAccountToken", "projected"):
        assert marker not in text, f"{marker} in the runner Job"
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env") or []:
            assert not _CREDENTIAL_NAME.search(env["name"]), f"credential-like env {env['name']}"
            assert "valueFrom" not in env, env
    for value in secret_values:
        assert value and value not in text, "a secret value is in the runner Job"
    env = {e["name"]: e.get("value", "") for c in pod["containers"] for e in c.get("env") or []}
    if "SCHEDGEN_BATCH" in env:  # a batch Job: each member's variables, its two URLs among them
        members = json.loads(env["SCHEDGEN_BATCH"])
        assert members and all(not any(_CREDENTIAL_NAME.search(k) for k in m) for m in members), members
        assert all({"SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"} <= set(m) for m in members)
    else:
        assert {"SCHEDGEN_SOURCE_URL", "SCHEDGEN_RESULT_URL"} <= set(env)
