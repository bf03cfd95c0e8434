"""Host-level helpers for real nodes: cgroup trees (v1 hierarchies and the v2 one of a hybrid
setup) and mounts. Everything a node creates lives under one cgroup path and under its own
directories, so stopping a cluster can kill, unmount and remove exactly what it made."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, root) of every mount this process sees."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            fstype = right.split()[0] if right else ""
            res.append((_unescape(parts[4]), fstype, _unescape(parts[3])))
    return res


def hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies (v1 controllers, name=systemd, and cgroup2)."""
    return sorted({Path(mp) for mp, fs, _ in mounts() if fs in ("cgroup", "cgroup2")})


def _memory_like(h: Path) -> bool:
    return (h / "cgroup.procs").exists()


def cgroup_ensure(rel: str) -> None:
    """Create ``rel`` (e.g. ``/schedgen/abc/node-1``) in every hierarchy; cpuset levels get their
    parent's cpus/mems (v1 leaves them empty, and an empty cpuset cannot hold a process)."""
    parts = [p for p in rel.split("/") if p]
    for h in hierarchies():
        cur = h
        for part in parts:
            parent, cur = cur, cur / part
            if not cur.exists():
                try:
                    cur.mkdir()
                except FileExistsError:
                    pass
                except OSError:
                    break
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (cur / f).exists() and not (cur / f).read_text().strip():
                    (cur / f).write_text((parent / f).read_text())


def cgroup_joiner(rel: str):
    """A ``preexec_fn`` that moves the new process into ``rel`` in every hierarchy."""
    targets = [str(h / rel.strip("/") / "cgroup.procs") for h in hierarchies()]

    def join() -> None:
        pid = str(os.getpid())
        for t in targets:
            try:
                with open(t, "w") as f:
                    f.write(pid)
            except OSError:
                pass
    return join


def cgroup_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for h in hierarchies():
        root = h / rel.strip("/")
        if not root.exists():
            continue
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                pass
    return pids


def cgroup_kill(rel: str, timeout: float = 10.0) -> int:
    """SIGKILL every process in the tree until it is empty; returns how many were signalled."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = cgroup_pids(rel)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    return len(killed)


def cgroup_remove(rel: str, timeout: float = 5.0) -> list[str]:
    """rmdir the tree (deepest first) in every hierarchy; returns what could not be removed."""
    left = []
    for h in hierarchies():
        root = h / rel.strip("/")
        if not root.exists():
            continue
        dirs = sorted((p for p in [root, *root.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts))
        for d in dirs:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        left.append(str(d))
                        break
                    time.sleep(0.05)
    return left


def cgroup_prune_empty_parents(rel: str) -> None:
    """Remove now-empty ancestors of ``rel`` (e.g. ``/schedgen``) where nothing else uses them."""
    parts = [p for p in rel.split("/") if p][:-1]
    for h in hierarchies():
        for i in range(len(parts), 0, -1):
            try:
                (h / "/".join(parts[:i])).rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: another cluster's cgroups are in it
                break


def unmount_under(*prefixes: Path) -> list[str]:
    """Lazily unmount every mount at or below the prefixes, deepest first; returns the paths."""
    pre = [str(Path(p).resolve()).rstrip("/") for p in prefixes if p]
    done = []
    for _ in range(5):  # a mount may be stacked several times on one point
        targets = sorted({mp for mp, _, _ in mounts() if any(mp == p or mp.startswith(p + "/") for p in pre)},
                         key=lambda m: -m.count("/"))
        if not targets:
            break
        for mp in targets:
            if _libc.umount2(mp.encode(), _MNT_DETACH) == 0:
                done.append(mp)
    return done
