"""Small OCI images for the local cluster's real nodes, written without Docker.

* ``localhost/schedgen-pause:3.10`` -- the sandbox ("pause") image containerd starts for every
  pod: the static C program of ``hack/pause/pause.c`` (``pause()``, reaps children, exits 0 on
  SIGTERM/SIGINT), the same source and name as ``hack/images build pause``.
* ``localhost/schedgen-busybox:1.35`` -- Debian's ``busybox-static`` binary with its applets
  (sh, sleep, nc, wget, dd, id, ...) and an ``/etc/passwd`` with ``nonroot`` (65532): the
  workload image of ``tests/cluster``.

Both are written as docker-archive tarballs (``docker save`` layout: one layer tar, a config
JSON and ``manifest.json``), which ``ctr images import`` reads. They are cached under
``~/.cache/schedgen/images/`` and rebuilt when their inputs change.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import build as _build

PAUSE_REF = "localhost/schedgen-pause:3.10"
BUSYBOX_REF = "localhost/schedgen-busybox:1.35"
BUSYBOX_BIN = Path("/bin/busybox")  # Debian package busybox-static

# One pause program for the project: hack/pause/pause.c (hack/images packs the same source with
# podman; here it is packed without it).
PAUSE_C = Path(__file__).resolve().parents[1] / "pause" / "pause.c"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def images_dir() -> Path:
    return _build.cache_root() / "images"


class Layer:
    """Deterministic layer tar built in memory (owner root, mtime 0)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, 0, 0, 0, "", ""
        return ti

    def dir(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if i == len(parts) else 0o755))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        ti = self._info(name, tarfile.REGTYPE, mode)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def write_docker_archive(path: Path, ref: str, layer: bytes, config: dict) -> Path:
    """Write a single-layer ``docker save`` archive for ``ref`` to ``path`` (atomically)."""
    diff_id = hashlib.sha256(layer).hexdigest()
    cfg = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/localkube/images.py"}],
    }
    cfg_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in ((f"{diff_id}/layer.tar", layer), (cfg_name, cfg_bytes),
                           ("manifest.json", json.dumps(manifest).encode())):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
            t.addfile(ti, io.BytesIO(data))
    tmp.replace(path)
    return path


def _cached(name: str, key: str) -> Path | None:
    p = images_dir() / f"{name}.tar"
    k = images_dir() / f"{name}.key"
    if p.exists() and k.exists() and k.read_text() == key:
        return p
    return None


def _remember(name: str, key: str) -> None:
    (images_dir() / f"{name}.key").write_text(key)


def pause_archive() -> Path:
    """Build (or reuse) the pause image archive; needs gcc and a static libc (libc6-dev)."""
    source = PAUSE_C.read_text()
    key = hashlib.sha256(source.encode()).hexdigest()
    hit = _cached("schedgen-pause", key)
    if hit:
        return hit
    with tempfile.TemporaryDirectory() as td:
        src, out = Path(td) / "pause.c", Path(td) / "pause"
        src.write_text(source)
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)], check=True,
                       capture_output=True, text=True)
        layer = Layer()
        layer.file("pause", out.read_bytes(), 0o755)
    p = write_docker_archive(images_dir() / "schedgen-pause.tar", PAUSE_REF, layer.bytes(),
                             {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/",
                              "Env": [PATH_ENV]})
    _remember("schedgen-pause", key)
    return p


def busybox_archive() -> Path:
    """Build (or reuse) the busybox test image archive from Debian's busybox-static."""
    if not BUSYBOX_BIN.exists():
        raise FileNotFoundError(f"{BUSYBOX_BIN} missing: apt-get install busybox-static (hack/setup.sh does)")
    data = BUSYBOX_BIN.read_bytes()
    key = hashlib.sha256(data + b"v1").hexdigest()
    hit = _cached("schedgen-busybox", key)
    if hit:
        return hit
    applets = subprocess.run([str(BUSYBOX_BIN), "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    layer = Layer()
    layer.file("bin/busybox", data, 0o755)
    for a in sorted(set(applets)):
        if a != "busybox" and "/" not in a:
            layer.symlink(f"bin/{a}", "busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh\n"
                             b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    layer.file("etc/group", b"root:x:0:\nnonroot:x:65532:\nnogroup:x:65534:\n")
    layer.dir("tmp", 0o1777)
    layer.dir("root", 0o700)
    layer.dir("home/nonroot", 0o755)
    for d in ("proc", "sys", "dev", "etc", "var", "usr/bin"):
        layer.dir(d)
    p = write_docker_archive(images_dir() / "schedgen-busybox.tar", BUSYBOX_REF, layer.bytes(),
                             {"Cmd": ["sh"], "WorkingDir": "/", "Env": [PATH_ENV]})
    _remember("schedgen-busybox", key)
    return p


def main(argv: list[str] | None = None) -> int:
    for p in (pause_archive(), busybox_archive()):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
