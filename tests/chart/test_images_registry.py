"""Images from a registry, offline: the chart references images by digest, runner.imagePullSecrets
reaches the operator (and so every runner Job) and bounds the runner Job policy, the chart
package pins digests (hack/chart_oci.py), and the local registry's configs (hack/localkube/registry.py).
The real pulls are tests/cluster/test_registry.py and the chart e2e (test_install.py)."""

from __future__ import annotations

import base64
import json
import tarfile

import pytest
import yaml

import chart_oci
from chartlib import CHART, one, render
from localkube import registry

DIGEST_R = "sha256:" + "a" * 64
DIGEST_O = "sha256:" + "b" * 64
PINNED = {"operator": {"image": {"repository": "reg.example:5000/schedgen-operator", "tag": "",
                                 "digest": DIGEST_O, "pullPolicy": "IfNotPresent"},
                       "imagePullSecrets": [{"name": "regcred"}]},
          "runner": {"image": {"repository": "reg.example:5000/schedgen-runner", "tag": "",
                               "digest": DIGEST_R, "pullPolicy": "IfNotPresent"},
                     "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}]}}


def operator_env(docs: list[dict]) -> dict[str, str]:
    dep = one(docs, "Deployment", "schedgen-operator")
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def runner_shape_policy(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"
                and d["metadata"]["name"].endswith("runner-job-shape"))


def test_images_by_digest_and_pull_secrets_reach_every_pod_and_the_runner_jobs():
    docs = render(PINNED)
    for name in ("schedgen-operator", "schedgen-api"):
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == f"reg.example:5000/schedgen-operator@{DIGEST_O}"
        assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = operator_env(docs)
    assert env["SCHEDGEN_RUNNER_IMAGE"] == f"reg.example:5000/schedgen-runner@{DIGEST_R}"
    assert env["SCHEDGEN_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert env["SCHEDGEN_RUNNER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    # the operator's config parses what the chart passes
    from schedgen.operator.config import OperatorConfig

    cfg = OperatorConfig.from_env({k: v for k, v in env.items() if v is not None})
    assert cfg.runner_image_pull_secrets == ("regcred", "mirror")
    assert operator_env(render({}))["SCHEDGEN_RUNNER_IMAGE_PULL_SECRETS"] == ""


def test_the_runner_job_policy_allows_only_the_configured_pull_secrets():
    checks = {v["message"]: v["expression"] for v in runner_shape_policy(render(PINNED))["spec"]["validations"]}
    expression = checks["a runner Job pulls its image with runner.imagePullSecrets only"]
    assert expression.endswith('s.name in ["regcred","mirror"])')
    default = {v["message"]: v["expression"] for v in runner_shape_policy(render({}))["spec"]["validations"]}
    assert default["a runner Job pulls its image with runner.imagePullSecrets only"].endswith("s.name in [])")


@pytest.mark.parametrize("secrets", [[{"name": "Not_A_Secret"}], ["regcred"], [{"name": "a", "key": "b"}]])
def test_schema_rejects_bad_runner_pull_secrets(secrets):
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as err:
        render({"runner": {"imagePullSecrets": secrets}})
    assert "/runner/imagePullSecrets/0" in str(err.value), str(err.value)


def test_the_packaged_chart_pins_digests_and_keeps_the_comments(tmp_path):
    images = {"runner": f"reg.example:5000/schedgen-runner@{DIGEST_R}",
              "operator": f"reg.example:5000/schedgen-operator@{DIGEST_O}"}
    archive = chart_oci.package(tmp_path, version="2.3.4", app_version="2.3.4", images=images)
    assert archive.name == "schedgen-2.3.4.tgz"
    with tarfile.open(archive) as tar:
        meta = yaml.safe_load(tar.extractfile("schedgen/Chart.yaml"))
        text = tar.extractfile("schedgen/values.yaml").read().decode()
        names = tar.getnames()
    assert meta["version"] == meta["appVersion"] == "2.3.4"
    values = yaml.safe_load(text)
    for name, ref in images.items():
        repository, digest = ref.split("@")
        assert values[name]["image"] == {"repository": repository, "tag": "", "digest": digest,
                                         "pullPolicy": "IfNotPresent"}
    assert values["api"]["image"]["repository"] == ""  # the API runs the operator image
    # only the two image blocks changed, line for line (comments kept)
    original = (CHART / "values.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(original, text.splitlines()) if a != b]
    assert len(text.splitlines()) == len(original) and len(changed) == 4, changed
    # the CRDs travel in the package (crds/ is a link to the repository's crds/)
    assert "schedgen/crds/parsejobs.schedgen.io.yaml" in names
    with pytest.raises(chart_oci.ChartError):
        chart_oci.package(tmp_path, images={"api": images["runner"]})


def test_local_registry_configs(tmp_path):
    cfg = registry.config("10.200.7.1:5443", tmp_path / "data", tmp_path / "htpasswd", tmp_path / "s.crt",
                          tmp_path / "s.key", "x")
    assert cfg["http"]["addr"] == "10.200.7.1:5443" and cfg["http"]["tls"]["certificate"].endswith("s.crt")
    assert cfg["auth"]["htpasswd"]["path"].endswith("htpasswd")
    toml = registry.hosts_toml("10.200.7.1:5443", tmp_path / "ca.crt")
    assert 'server = "https://10.200.7.1:5443"' in toml and f'ca = "{tmp_path / "ca.crt"}"' in toml
    assert 'capabilities = ["pull", "resolve"]' in toml
    auths = json.loads(registry.docker_config_json("10.200.7.1:5443", "u", "p w"))["auths"]
    assert base64.b64decode(auths["10.200.7.1:5443"]["auth"]).decode() == "u:p w"
    import bcrypt

    user, hashed = registry.htpasswd_line("u", "secret").strip().split(":", 1)
    assert user == "u" and hashed.startswith("$2b$") and bcrypt.checkpw(b"secret", hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())
