"""The cluster's OCI registry (hack/localkube/registry.py): the kubelet pulls an image by digest
from it over TLS (the cluster CA, through containerd's hosts.toml) and only with the
registry's login in an imagePullSecret; without one the pull is refused (ErrImagePull /
ImagePullBackOff, 401 from the registry)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from localkube.images import BUSYBOX_REF, busybox_archive
from localkube.testing import wait_for

pytestmark = pytest.mark.cluster

PULL_REFUSED = ("ErrImagePull", "ImagePullBackOff")


@pytest.fixture(scope="module")
def pushed_busybox(local_registry) -> str:
    """The busybox test image in the registry, as `repository@sha256:...` (never imported by
    that name into a node: the kubelet has to pull it)."""
    import images

    images.podman("load", "--quiet", "--input", str(busybox_archive()), capture=True)
    return images.push_ref(BUSYBOX_REF, f"{local_registry.address}/test/busybox", "1.35",
                           authfile=local_registry.authfile(), cert_dir=local_registry.cert_dir)


def pod(name: str, image: str, secrets: list[str] = ()) -> dict:
    spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "echo pulled"]}]}
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def waiting_reason(core, ns: str, name: str) -> str | None:
    statuses = core.read_namespaced_pod(name, ns).status.container_statuses or []
    return next((s.state.waiting.reason for s in statuses if s.state.waiting), None)


def test_the_registry_wants_a_login_and_serves_what_was_pushed(local_registry, pushed_busybox):
    repository, digest = pushed_busybox.split("@")
    assert repository == f"{local_registry.address}/test/busybox" and digest.startswith("sha256:")
    assert local_registry.get("/v2/test/busybox/tags/list", auth=False)[0] == 401
    status, body = local_registry.get("/v2/test/busybox/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["1.35"]
    status, _ = local_registry.get(f"/v2/test/busybox/manifests/{digest}",
                                   accept="application/vnd.oci.image.manifest.v1+json,"
                                          "application/vnd.docker.distribution.manifest.v2+json")
    assert status == 200


def test_a_pod_pulls_from_the_registry_only_with_its_pull_secret(local_cluster, local_registry, pushed_busybox,
                                                                 k8s_api_client, k8s_namespace):
    core, ns = client.CoreV1Api(k8s_api_client), k8s_namespace
    # no secret: the registry refuses the kubelet's pull
    core.create_namespaced_pod(ns, pod("no-secret", pushed_busybox))
    reason = wait_for(lambda: waiting_reason(core, ns, "no-secret") in PULL_REFUSED
                      and waiting_reason(core, ns, "no-secret"), 120, what="the refused pull")
    assert reason in PULL_REFUSED
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=no-secret").items
    failed = " ".join(e.message or "" for e in events if e.reason == "Failed")
    assert "401" in failed or "nauthorized" in failed, failed
    # the registry's login in a dockerconfigjson Secret of the pod's namespace: pulled, ran
    core.create_namespaced_secret(ns, local_registry.pull_secret(ns, "regcred"))
    core.create_namespaced_pod(ns, pod("with-secret", pushed_busybox, ["regcred"]))
    wait_for(lambda: core.read_namespaced_pod("with-secret", ns).status.phase == "Succeeded", 120,
             what="the pod pulled with its secret")
    log = core.read_namespaced_pod_log("with-secret", ns, _preload_content=False).data.decode()
    assert log.strip() == "pulled"
    status = core.read_namespaced_pod("with-secret", ns).status.container_statuses[0]
    assert status.image_id.endswith(pushed_busybox.split("@")[1]), status.image_id  # the pushed digest
    node = core.read_namespaced_pod("with-secret", ns).spec.node_name
    listed = local_cluster._real_node(node).images()
    assert any(ref.startswith(local_registry.address + "/test/busybox") for ref in listed), listed


def test_the_chart_is_an_oci_artifact_in_the_registry(local_registry, tmp_path):
    """hack/chart_oci.py against the registry: the push needs the login and the CA (TLS is
    verified, never skipped); the pushed version is listed at oci://<registry>/charts/schedgen."""
    import chart_oci

    archive = chart_oci.package(tmp_path, version="0.0.1-registry-test")
    remote = f"{local_registry.address}/charts"
    with pytest.raises(chart_oci.ChartError, match="(?i)x509|certificate"):
        chart_oci.push(archive, remote, local_registry.credentials)  # the system CAs only
    with pytest.raises(chart_oci.ChartError, match="(?i)401|unauthori|denied|credential|login"):
        chart_oci.push(archive, remote, None, env=local_registry.trust_env())
    pushed = chart_oci.push(archive, remote, local_registry.credentials, env=local_registry.trust_env())
    assert pushed["ref"] == f"{remote}/schedgen:0.0.1-registry-test" and pushed["digest"].startswith("sha256:")
    assert "0.0.1-registry-test" in chart_oci.tags(f"{remote}/schedgen", local_registry.credentials,
                                                   env=local_registry.trust_env())


@pytest.mark.slow
def test_a_release_pushes_images_by_digest_and_the_chart_with_them(local_registry, tmp_path):
    """hack/release --push: the images and the chart land in the registry; the packaged chart
    and the SBOMs name the digests the registry stored."""
    import subprocess
    import sys
    import tarfile
    from pathlib import Path

    import chart_oci
    import images
    import release
    import yaml

    root, version = Path(release.ROOT), "0.0.3-registry-test"
    images.build(list(release.NAMES))
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text((root / "CHANGELOG.md").read_text())
    done = subprocess.run([sys.executable, str(root / "hack" / "release.py"), version, "--reuse",
                           "--out", str(tmp_path / "dist"), "--changelog", str(changelog),
                           "--push", local_registry.address, "--authfile", str(local_registry.authfile()),
                           "--cert-dir", str(local_registry.cert_dir)], capture_output=True, text=True, timeout=1200)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((tmp_path / "dist" / "release.json").read_text())
        with tarfile.open(tmp_path / "dist" / f"schedgen-{version}.tgz") as tar:
            values = yaml.safe_load(tar.extractfile("schedgen/values.yaml"))
        for name in release.NAMES:
            pushed = summary["images"][name]["pushed"]
            repository, digest = pushed.split("@")
            assert repository == f"{local_registry.address}/schedgen-{name}" and pushed in done.stdout
            assert values[name]["image"]["repository"] == repository and values[name]["image"]["digest"] == digest
            path = repository.split("/", 1)[1]
            assert local_registry.get(f"/v2/{path}/manifests/{digest}", accept=(
                "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"))[0] == 200
            sbom = json.loads(Path(summary["sboms"][name]).read_text())
            assert sbom["metadata"]["component"]["purl"].startswith(f"pkg:oci/schedgen-{name}@{digest}")
        assert summary["chart"]["ref"] == f"{local_registry.address}/charts/schedgen:{version}"
        assert version in chart_oci.tags(f"{local_registry.address}/charts/schedgen", local_registry.credentials,
                                         env=local_registry.trust_env())
    finally:
        for name in release.NAMES:
            images.podman("rmi", f"localhost/schedgen-{name}:{version}", capture=True, check=False)
