"""Cut a release: versioned images, a CycloneDX SBOM per image, the chart package, a CHANGELOG entry.

    hack/release VERSION [--reuse] [--out DIR] [--changelog FILE]
                         [--push REGISTRY [--authfile FILE] [--cert-dir DIR]]

1. Images: the runner and operator images (hack/images build: built or reused by content;
   ``--reuse``: the images already built, as they are, no build at all) re-labelled
   ``org.opencontainers.image.version=VERSION`` and tagged ``localhost/schedgen-<name>:VERSION``.
2. SBOMs: ``<out>/sbom/schedgen-<name>-VERSION.cdx.json``, CycloneDX 1.6 JSON (the
   ``cyclonedx-python-lib`` library), validated against the schema: every Debian package
   installed in the image (its dpkg status) and every Python distribution of its venv, read
   from inside the image (``podman run --network none``).
3. ``--push REGISTRY``: the images go to REGISTRY/schedgen-<name>:VERSION; their digests are
   printed and baked into the chart's values (``image.repository`` + ``image.digest``), and the
   chart goes to ``oci://REGISTRY/charts/schedgen`` (credentials: ``--authfile``, a docker
   config.json; extra CAs: ``--cert-dir`` with ``*.crt``). Without ``--push`` the chart keeps its
   default repositories and the images' tag is the chart's appVersion (VERSION).
4. The chart: ``<out>/schedgen-VERSION.tgz``, version and appVersion VERSION.
5. CHANGELOG.md: a ``## [VERSION] - DATE`` entry (Keep a Changelog) under ``## [Unreleased]``,
   with what was under Unreleased and the commits since the previous release (the newest tag,
   else the last commit that touched the changelog), grouped Added / Changed / Fixed /
   Removed / Security by their subject's first word.

``<out>`` (default ``dist/VERSION``) also gets ``release.json``: the images (ref, id, digest),
the chart archive and the SBOMs.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import chart_oci
import images

ROOT = images.ROOT
NAMES = ("runner", "operator")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
GROUPS = (("Added", ("add", "adds", "added", "new", "introduce", "introduces", "support", "supports")),
          ("Fixed", ("fix", "fixes", "fixed", "repair", "correct")),
          ("Removed", ("remove", "removes", "removed", "drop", "drops", "delete", "deletes")),
          ("Security", ("security", "harden", "hardens", "cve")))
CHANGELOG_HEADER = """# Changelog

All notable changes to schedgen are documented here. The format is based on
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/), and schedgen adheres to
[Semantic Versioning](https://semver.org/spec/v2.0.0.html). `hack/release VERSION` adds an entry.

## [Unreleased]
"""

# Run inside the image by its own python3: the installed Debian packages and Python distributions.
INVENTORY = r"""
import importlib.metadata, json, os
deb, fields = [], {}
text = open("/var/lib/dpkg/status", encoding="utf-8").read() if os.path.exists("/var/lib/dpkg/status") else ""
for para in text.split("\n\n"):
    fields = dict(l.split(":", 1) for l in para.splitlines() if l[:1] not in (" ", "\t", "") and ":" in l)
    fields = {k: v.strip() for k, v in fields.items()}
    if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
        deb.append({"name": fields["Package"], "version": fields["Version"], "arch": fields.get("Architecture", "")})
osr = dict(l.split("=", 1) for l in open("/etc/os-release").read().splitlines() if "=" in l)
py = [{"name": d.metadata["Name"], "version": d.version} for d in importlib.metadata.distributions()]
print(json.dumps({"deb": deb, "python": py, "os": {k: v.strip('"') for k, v in osr.items()}}))
"""


class ReleaseError(RuntimeError):
    pass


# ------------------------------------------------------------------------------ images
def release_images(version: str, reuse: bool) -> dict[str, str]:
    """name -> localhost/schedgen-<name>:VERSION, labelled with VERSION."""
    if reuse:
        refs = images.refs(NAMES)
        missing = [r for r in refs.values() if not images.image_exists(r)]
        if missing:
            raise ReleaseError(f"--reuse: no image {', '.join(missing)} (run hack/images build)")
    else:
        refs = images.build(NAMES)
    # by image id, taken at once: another checkout sharing the storage may re-tag the ref meanwhile
    return {name: _versioned(images.image_id(ref), name, version) for name, ref in refs.items()}


def _versioned(ref: str, name: str, version: str) -> str:
    """The image with its version label set to VERSION (a config-only build: no new layer)."""
    target = f"localhost/schedgen-{name}:{version}"
    with tempfile.TemporaryDirectory(prefix="schedgen-release-") as ctx:
        (Path(ctx) / "Containerfile").write_text(
            f"FROM {ref}\nLABEL org.opencontainers.image.version=\"{version}\"\n")
        images.podman("build", "--quiet", "--pull=never", "--file", f"{ctx}/Containerfile", "--tag", target, ctx,
                      capture=True)
    return target


def inventory(ref: str) -> dict:
    """What is installed in the image, read by its own python3, without network."""
    done = images.podman("run", "--rm", "--network", "none", "--entrypoint", "python3", ref, "-c", INVENTORY,
                         capture=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ SBOM
def sbom(name: str, version: str, found: dict, digest: str | None = None) -> str:
    """A CycloneDX 1.6 JSON document of one image, validated against the schema."""
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    image = Component(name=f"schedgen-{name}", version=version, type=ComponentType.CONTAINER,
                      bom_ref=f"schedgen-{name}@{version}",
                      purl=PackageURL("oci", None, f"schedgen-{name}", digest, {"tag": version}))
    bom = Bom()
    bom.metadata.component = image
    distro = f"{found['os'].get('ID', 'debian')}-{found['os'].get('VERSION_ID', '')}".rstrip("-")
    parts = [Component(name=found["os"].get("ID", "debian"), version=found["os"].get("VERSION_ID"),
                       type=ComponentType.OPERATING_SYSTEM, bom_ref=f"os:{distro}",
                       description=found["os"].get("PRETTY_NAME"))]
    for pkg in found["deb"]:
        purl = PackageURL("deb", "debian", pkg["name"], pkg["version"], {"arch": pkg["arch"], "distro": distro})
        parts.append(Component(name=pkg["name"], version=pkg["version"], type=ComponentType.LIBRARY,
                               purl=purl, bom_ref=purl.to_string()))
    for dist in sorted(found["python"], key=lambda d: d["name"].lower()):
        purl = PackageURL("pypi", None, dist["name"], dist["version"])
        parts.append(Component(name=dist["name"], version=dist["version"], type=ComponentType.LIBRARY,
                               purl=purl, bom_ref=purl.to_string()))
    bom.components.update(parts)
    bom.register_dependency(image, parts)
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise ReleaseError(f"the SBOM of schedgen-{name} is not valid CycloneDX 1.6: {error}")
    return text


# ------------------------------------------------------------------------------ CHANGELOG
def group_of(subject: str) -> str:
    first = re.sub(r"^[\w./-]+:\s*", "", subject).split(" ", 1)[0].lower().strip(",:;")
    return next((group for group, words in GROUPS if first in words), "Changed")


def commits_since_previous_release(root: Path = ROOT) -> list[str]:
    """Subjects (no merges, oldest first) since the newest tag, else since the changelog's last change."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    since = git("describe", "--tags", "--abbrev=0") or git("log", "-1", "--format=%H", "--", "CHANGELOG.md")
    span = [f"{since}..HEAD"] if since else ["HEAD"]
    return [s for s in git("log", "--no-merges", "--reverse", "--format=%s", *span).splitlines() if s]


def changelog_entry(version: str, date: str, subjects: list[str], unreleased: str = "") -> str:
    grouped: dict[str, list[str]] = {}
    for subject in subjects:
        grouped.setdefault(group_of(subject), []).append(subject)
    lines = [f"## [{version}] - {date}", ""]
    if unreleased.strip():
        lines += [unreleased.strip(), ""]
    for group in ("Added", "Changed", "Fixed", "Removed", "Security"):
        if grouped.get(group):
            lines += [f"### {group}", *(f"- {s}" for s in grouped[group]), ""]
    if len(lines) == 2:
        lines += ["No changes since the previous release.", ""]
    return "\n".join(lines) + "\n"


def add_changelog_entry(path: Path, version: str, subjects: list[str], date: str | None = None) -> str:
    """Put the entry under ``## [Unreleased]`` (moving what was there into it); returns the entry."""
    text = path.read_text() if path.exists() else CHANGELOG_HEADER
    if re.search(rf"^## \[{re.escape(version)}\]", text, re.M):
        raise ReleaseError(f"{path} already has an entry for {version}")
    head, marker, rest = text.partition("## [Unreleased]\n")
    if not marker:
        raise ReleaseError(f"{path} has no '## [Unreleased]' section (Keep a Changelog)")
    nxt = re.search(r"^## \[", rest, re.M)
    unreleased, older = (rest[:nxt.start()], rest[nxt.start():]) if nxt else (rest, "")
    entry = changelog_entry(version, date or dt.date.today().isoformat(), subjects, unreleased)
    path.write_text(f"{head}{marker}\n{entry}\n{older}".rstrip("\n") + "\n")
    return entry


# ------------------------------------------------------------------------------ the release
def credentials_from(authfile: Path | None, registry: str) -> tuple[str, str] | None:
    if not authfile:
        return None
    auth = json.loads(authfile.read_text()).get("auths", {}).get(registry.split("/", 1)[0], {}).get("auth")
    return tuple(base64.b64decode(auth).decode().split(":", 1)) if auth else None


def trust_env(cert_dir: Path | None, workdir: Path) -> dict[str, str] | None:
    """For Helm's TLS (SSL_CERT_FILE): the system CAs plus the ``*.crt`` of ``cert_dir``."""
    import os

    if not cert_dir:
        return None
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle = workdir / "ca-bundle.crt"
    bundle.write_text((system.read_text() if system.is_file() else "")
                      + "".join(p.read_text() for p in sorted(cert_dir.glob("*.crt"))))
    return {**os.environ, "SSL_CERT_FILE": str(bundle)}


def release(version: str, out: Path, changelog: Path, *, reuse: bool = False, push: str | None = None,
            authfile: Path | None = None, cert_dir: Path | None = None) -> dict:
    if not SEMVER.match(version):
        raise ReleaseError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"version": version, "images": {}, "sboms": {}}
    for name, ref in release_images(version, reuse).items():
        digest_ref = images.push_ref(ref, images.registry_repository(push, name), version, authfile=authfile,
                                     cert_dir=cert_dir) if push else None
        summary["images"][name] = {"ref": ref, "id": images.image_id(ref), "pushed": digest_ref}
        path = out / "sbom" / f"schedgen-{name}-{version}.cdx.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sbom(name, version, inventory(ref), digest_ref.split("@")[1] if digest_ref else None))
        summary["sboms"][name] = str(path)
    pinned = {n: i["pushed"] for n, i in summary["images"].items() if i["pushed"]}
    archive = chart_oci.package(out, version=version, app_version=version, images=pinned or None)
    summary["chart"] = {"archive": str(archive)}
    if push:
        summary["chart"].update(chart_oci.push(archive, f"{push}/charts", credentials_from(authfile, push),
                                               env=trust_env(cert_dir, out)))
    summary["changelog"] = add_changelog_entry(changelog, version, commits_since_previous_release())
    (out / "release.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hack/release", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version")
    ap.add_argument("--reuse", action="store_true", help="the images already built, as they are (no build)")
    ap.add_argument("--out", type=Path, help="output directory (default dist/VERSION)")
    ap.add_argument("--changelog", type=Path, default=ROOT / "CHANGELOG.md")
    ap.add_argument("--push", metavar="REGISTRY", help="push images and chart to host[:port][/path]")
    ap.add_argument("--authfile", type=Path, help="registry credentials (docker config.json)")
    ap.add_argument("--cert-dir", type=Path, help="extra CA certificates (*.crt) for the registry")
    a = ap.parse_args(argv)
    try:
        summary = release(a.version, a.out or ROOT / "dist" / a.version, a.changelog, reuse=a.reuse,
                          push=a.push, authfile=a.authfile, cert_dir=a.cert_dir)
    except (ReleaseError, images.Failure, chart_oci.ChartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, info in summary["images"].items():
        print(f"{name}\t{info['ref']}\t{info['id'][:12]}\t{info['pushed'] or '(not pushed: no digest)'}")
    print(f"chart\t{summary['chart'].get('ref') or summary['chart']['archive']}\t{summary['chart'].get('digest', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
