"""Fixtures (a pytest plugin, registered in tests/conftest.py) for end-to-end tests: the local
cluster with real nodes (hack/localkube), the project's own images built from this checkout
(hack/images) and imported into every node, Postgres and S3 (tests/conftest.py), and the
operator itself as a subprocess (operator_e2e.OperatorProcess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from operator_e2e import (
    CONFIGMAP,
    OPERATOR_NS,
    ROOT,
    Cluster,
    OperatorProcess,
    operator_env,
)

@pytest.fixture(scope="session")
def project_images(local_cluster) -> dict[str, str]:
    """The runner and operator images of this checkout, built or reused (cached by their
    inputs) and imported into every node, also nodes added later. Returns name -> ref."""
    import images

    archives = images.save(images.CACHE_DIR / "archives", ["runner", "operator"])
    for archive in archives:
        local_cluster.import_image(archive)
    return images.refs(["runner", "operator"])


@pytest.fixture(scope="session")
def registry_images(local_registry) -> dict[str, str]:
    """The runner and operator images of this checkout (built or reused) pushed to the cluster's
    registry, as users deploy them: name -> `repository@sha256:...` (the kubelet pulls them)."""
    import images

    return images.push(["runner", "operator"], local_registry.address, authfile=local_registry.authfile(),
                       cert_dir=local_registry.cert_dir)


@pytest.fixture(scope="session")
def operator_cluster(local_cluster, k8s_api_client, postgres, s3, project_images):
    """The control plane with the CRDs, the operator namespace and ConfigMap."""
    from kubernetes import client

    for args in (("apply", "-f", str(ROOT / "crds")),
                 ("wait", "--for=condition=Established", "--timeout=60s", "crd/parsejobs.schedgen.io",
                  "crd/clusterkopfpeerings.kopf.dev")):
        done = local_cluster.kubectl(*args, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    core = client.CoreV1Api(k8s_api_client)
    try:
        core.create_namespace({"metadata": {"name": OPERATOR_NS}})
    except client.rest.ApiException as exc:
        if exc.status != 409:
            raise
    try:
        core.create_namespaced_config_map(OPERATOR_NS, {"metadata": {"name": CONFIGMAP}, "data": {}})
    except client.rest.ApiException as exc:
        if exc.status != 409:
            raise
    return Cluster(local_cluster, k8s_api_client, postgres, s3, project_images["runner"])


@pytest.fixture
def start_operator(operator_cluster, tmp_path):
    """Factory: start an operator process with env overrides; all stopped at teardown,
    after the test's ParseJobs are cleaned up (their finalizers need an operator)."""
    started: list[OperatorProcess] = []

    def start(wait: bool = True, **overrides) -> OperatorProcess:
        env = operator_env(operator_cluster, **overrides)
        op = OperatorProcess(operator_cluster.cluster, env, tmp_path / f"operator-{len(started)}.log")
        started.append(op)
        return op.start(wait=wait)

    # defaults for each test; a test may set_runtime() before start() to begin differently.
    # Batch mode off (batchSize 1): these tests are about one ParseJob, one Job;
    # tests/operator/test_e2e_batch.py switches it on.
    operator_cluster.set_runtime(maxConcurrent=10, maxPerTenant=10, admissionsPerSecond=50, admissionBurst=50,
                                 guardMaxUnschedulable=-1, queuePositionIntervalSeconds=5,
                                 queuePositionMaxWrites=50, batchThreshold=20, batchSize=1,
                                 retryBackoffSeconds=1)
    yield start
    try:
        if not any(op.running for op in started):
            start()
        operator_cluster.cleanup()
    finally:
        for op in started:
            op.stop()
        for op in started:
            print(f"--- operator log {op.log_path} ---\n{op.log_tail(40)}")
