"""hack/release on a small scale: the images as built (``--reuse``: no rebuild), a CycloneDX SBOM
per image read from inside it, the chart package, a CHANGELOG entry in a copy of CHANGELOG.md;
nothing pushed (the push to a registry: tests/cluster/test_registry.py). Plus the CHANGELOG
logic on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import images  # hack/images.py
import pytest
import release  # hack/release.py
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.1-test.1"


def purls(sbom: dict) -> set[str]:
    return {c.get("purl", "") for c in sbom["components"]}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict:
    images.build(list(release.NAMES))  # built or reused by content; the release reuses them as they are
    out = tmp_path_factory.mktemp("release")
    changelog = out / "CHANGELOG.md"
    changelog.write_text((ROOT / "CHANGELOG.md").read_text())
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'hack'}:{ROOT / 'src'}", "SCHEDGEN_PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "hack" / "release"), VERSION, "--reuse", "--out", str(out / "dist"),
                           "--changelog", str(changelog)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    yield {"out": out / "dist", "changelog": changelog, "stdout": done.stdout}
    for name in release.NAMES:
        images.podman("rmi", f"localhost/schedgen-{name}:{VERSION}", capture=True, check=False)


@pytest.mark.slow
def test_the_release_writes_valid_sboms_of_what_is_in_the_images(released):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    summary = json.loads((released["out"] / "release.json").read_text())
    for name in release.NAMES:
        path = released["out"] / "sbom" / f"schedgen-{name}-{VERSION}.cdx.json"
        assert summary["sboms"][name] == str(path)
        text = path.read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
        sbom = json.loads(text)
        assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
        assert sbom["metadata"]["component"]["name"] == f"schedgen-{name}"
        assert sbom["metadata"]["component"]["version"] == VERSION
        found = purls(sbom)
        assert any(p.startswith("pkg:pypi/pdfplumber@") for p in found), sorted(found)
        assert any(p.startswith("pkg:deb/debian/python3@") for p in found), sorted(found)[:20]
        assert any(p.startswith("pkg:pypi/schedgen@") for p in found)
        # the SBOM says what the image really holds: the operator's stack only in the operator
        assert any(p.startswith("pkg:pypi/kopf@") for p in found) == (name == "operator")
        # the versioned image exists, labelled with the release's version
        ref = summary["images"][name]["ref"]
        assert ref == f"localhost/schedgen-{name}:{VERSION}" and summary["images"][name]["pushed"] is None
        assert images.image_label(ref, "org.opencontainers.image.version") == VERSION
        assert ref in released["stdout"]


@pytest.mark.slow
def test_the_release_packages_the_chart_and_adds_a_changelog_entry(released):
    archive = released["out"] / f"schedgen-{VERSION}.tgz"
    with tarfile.open(archive) as tar:
        meta = yaml.safe_load(tar.extractfile("schedgen/Chart.yaml"))
        values = yaml.safe_load(tar.extractfile("schedgen/values.yaml"))
    assert meta["version"] == meta["appVersion"] == VERSION
    assert meta["annotations"]["artifacthub.io/license"] == "Apache-2.0"
    assert values["runner"]["image"]["digest"] == ""  # not pushed: no digest to pin
    text = released["changelog"].read_text()
    assert text.index("## [Unreleased]") < text.index(f"## [{VERSION}] - ") < text.index("## [0.1.0] - ")
    entry = text[text.index(f"## [{VERSION}]"):text.index("## [0.1.0]")]
    expected = release.commits_since_previous_release()
    assert all(f"- {subject}" in entry for subject in expected)
    if not expected:
        assert "No changes since the previous release." in entry


def test_changelog_entries_are_grouped_and_take_the_unreleased_notes(tmp_path):
    assert release.group_of("Add the registry") == "Added"
    assert release.group_of("localkube: fix the probe") == "Fixed"
    assert release.group_of("Drop the old flag") == "Removed"
    assert release.group_of("Harden the runner pods") == "Security"
    assert release.group_of("Failover: a create refused ...") == "Changed"
    path = tmp_path / "CHANGELOG.md"
    path.write_text(release.CHANGELOG_HEADER + "\n### Added\n- a note made by hand\n\n## [1.0.0] - 2026-01-01\n\n- old\n")
    entry = release.add_changelog_entry(path, "1.1.0", ["Add x", "fix y", "Tune z"], date="2026-02-03")
    assert entry.startswith("## [1.1.0] - 2026-02-03\n")
    assert entry.index("- a note made by hand") < entry.index("### Added\n- Add x") < entry.index(
        "### Changed\n- Tune z") < entry.index("### Fixed\n- fix y")
    text = path.read_text()
    unreleased = text[text.index("## [Unreleased]"):text.index("## [1.1.0]")]
    assert "note made by hand" not in unreleased  # moved into the release
    assert text.index("## [1.1.0]") < text.index("## [1.0.0] - 2026-01-01")
    with pytest.raises(release.ReleaseError, match="already has an entry"):
        release.add_changelog_entry(path, "1.1.0", [])
    with pytest.raises(release.ReleaseError, match="semantic version"):
        release.release("1.2", tmp_path / "out", path)
