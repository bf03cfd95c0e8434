"""The chart's lifecycle hooks' logic (schedgen.operator.release_hooks), without a cluster:
which CRDs the hook applies, the conditional finalizer patch and its retries. The hooks run
for real on the local cluster in tests/chart/test_upgrade_rollback.py."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException

from schedgen.errors import ConfigurationError
from schedgen.operator import release_hooks as hooks
from schedgen.parsejob import FINALIZER

REPO_CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_the_hook_applies_every_crd_of_the_repository(tmp_path):
    """What a ConfigMap mount looks like: the files, plus kubelet's ..data links and
    timestamped directory, which are not read twice."""
    for path in REPO_CRDS.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "..2026_01_01_00_00_00.1").mkdir()
    (tmp_path / "..data").symlink_to(tmp_path / "..2026_01_01_00_00_00.1")
    (tmp_path / "notes.txt").write_text("kind: CustomResourceDefinition\n")
    names = [c["metadata"]["name"] for c in hooks.crds_in(tmp_path)]
    assert names == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev", "parsejobs.schedgen.io"]
    parsejob = hooks.crds_in(tmp_path)[-1]
    assert parsejob == yaml.safe_load((REPO_CRDS / "parsejobs.schedgen.io.yaml").read_text())


def test_a_directory_without_crds_is_a_configuration_error(tmp_path):
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ConfigurationError, match="no CustomResourceDefinition"):
        hooks.crds_in(tmp_path)


def test_the_finalizer_patch_removes_ours_only_and_is_conditional():
    meta = {"resourceVersion": "42", "finalizers": ["example.com/keep", FINALIZER]}
    assert hooks.without_finalizer(meta) == {"metadata": {"finalizers": ["example.com/keep"], "resourceVersion": "42"}}
    assert hooks.without_finalizer({"resourceVersion": "1", "finalizers": [FINALIZER]}) == \
        {"metadata": {"finalizers": [], "resourceVersion": "1"}}
    assert hooks.without_finalizer({"resourceVersion": "1", "finalizers": ["example.com/keep"]}) is None
    assert hooks.without_finalizer({"resourceVersion": "1"}) is None


class Object:
    """One object as the API server keeps it: a patch whose resourceVersion is stale is a
    409, as for a merge patch that carries metadata.resourceVersion."""

    def __init__(self, finalizers, changes_before_patch: int = 0):
        self.version = itertools.count(1)
        self.meta = {"resourceVersion": str(next(self.version)), "finalizers": list(finalizers)}
        self.changes = changes_before_patch
        self.patches = 0

    def read(self):
        return {"metadata": dict(self.meta)}

    def patch(self, body):
        self.patches += 1
        if self.changes:  # someone else wrote it meanwhile
            self.changes -= 1
            self.meta["resourceVersion"] = str(next(self.version))
        if body["metadata"]["resourceVersion"] != self.meta["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.meta = {"resourceVersion": str(next(self.version)), "finalizers": body["metadata"]["finalizers"]}


def test_release_one_retries_after_a_conflict():
    obj = Object([FINALIZER, "example.com/keep"], changes_before_patch=2)
    assert hooks.release_one(obj.read(), obj.read, obj.patch) is True
    assert obj.meta["finalizers"] == ["example.com/keep"] and obj.patches == 3


def test_release_one_gives_up_on_an_object_that_keeps_changing():
    obj = Object([FINALIZER], changes_before_patch=100)
    with pytest.raises(hooks.HookFailed, match="kept changing"):
        hooks.release_one(obj.read(), obj.read, obj.patch, tries=3)
    assert obj.patches == 3 and obj.meta["finalizers"] == [FINALIZER]


def test_release_one_without_our_finalizer_or_object_writes_nothing():
    obj = Object(["example.com/keep"])
    assert hooks.release_one(obj.read(), obj.read, obj.patch) is False and obj.patches == 0

    def gone(_body):
        raise ApiException(status=404, reason="Not Found")
    assert hooks.release_one(Object([FINALIZER]).read(), obj.read, gone) is False

    def forbidden(_body):
        raise ApiException(status=403, reason="Forbidden")
    with pytest.raises(ApiException):  # the hook fails loudly: the uninstall stops there
        hooks.release_one(Object([FINALIZER]).read(), obj.read, forbidden)


def test_waiting_ends_with_a_typed_timeout():
    now = iter(range(0, 1000, 10))
    with pytest.raises(hooks.HookFailed, match="timed out after 30s waiting for the pods"):
        hooks.wait_until(lambda: False, 30, "the pods", clock=lambda: next(now), interval=0)
    hooks.wait_until(lambda: True, 0, "nothing", clock=lambda: 0)
