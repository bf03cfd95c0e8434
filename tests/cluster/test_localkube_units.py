"""The pure parts of the restart handling in hack/localkube (issue #24), no cluster needed: which
Ready condition counts, the CRI probe's framing, and that a test session's cluster touches only its
own state (its cleanup unmounts only its own dirs; it never reclaims a ``hack/cluster up`` cluster
such as the demo's). The real thing: tests/cluster/test_restart.py."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import pytest
from localkube import cluster as lk
from localkube import cri, hostfs, network
from localkube import pytest_plugin as plugin


def node_body(status: str, heartbeat: str) -> bytes:
    return json.dumps({"status": {"conditions": [
        {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat},
        {"type": "Ready", "status": status, "lastHeartbeatTime": heartbeat}]}}).encode()


def test_a_ready_condition_counts_only_when_written_after_the_kubelet_started(tmp_path, monkeypatch):
    c = lk.LocalCluster(state_dir=tmp_path / "s")
    started = lk._rfc3339("2026-12-07T10:00:00Z") + 0.7  # time.time() of the kubelet's start
    answers = {}
    monkeypatch.setattr(c, "_get", lambda path, **kw: answers["node"])
    answers["node"] = (200, node_body("True", "2026-12-07T09:58:12Z"))  # kept in etcd from before down
    assert c._node_ready("node-1") and not c._node_ready("node-1", since=started)
    answers["node"] = (200, node_body("True", "2026-12-07T10:00:00Z"))  # same second: heartbeats are whole
    assert c._node_ready("node-1", since=started)
    answers["node"] = (200, node_body("False", "2026-12-07T10:00:03Z"))
    assert not c._node_ready("node-1", since=started)
    answers["node"] = (404, b"{}")
    assert not c._node_ready("node-1", since=started)


def test_rfc3339():
    assert lk._rfc3339("1970-01-01T00:01:40Z") == 100.0


# ------------------------------------------------------------------ the CRI probe, against a fake server

def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def serve_once(path: Path, reply: bytes) -> dict:
    """A one-connection server: reads the client's preface, answers ``reply``; records the request."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    seen: dict = {}

    def run():
        conn, _ = srv.accept()
        with conn:
            data = b""
            conn.settimeout(5)
            while not (cri.VERSION_PATH.encode() in data and data.endswith(b"\x00" * 5)):  # up to the message
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            seen["request"] = data
            conn.sendall(reply)
            try:
                seen["after"] = conn.recv(4096)  # the client's SETTINGS ack
            except OSError:
                pass
        srv.close()
    threading.Thread(target=run, daemon=True).start()
    return seen


def version_response() -> bytes:
    def field(n: int, s: str) -> bytes:
        return bytes([n << 3 | 2, len(s)]) + s.encode()
    return field(1, "0.1.0") + field(2, "containerd") + field(3, "1.6.20") + field(4, "v1")


def test_cri_probe_reads_the_version_response(tmp_path):
    msg = version_response()
    seen = serve_once(tmp_path / "s.sock", frame(cri.SETTINGS, 0, 0) + frame(cri.HEADERS, cri.END_HEADERS, 1, b"\x88")
                      + frame(cri.DATA, 0, 1, b"\x00" + struct.pack(">I", len(msg)) + msg)
                      + frame(cri.HEADERS, cri.END_HEADERS | cri.END_STREAM, 1, b"\x00"))
    assert cri.runtime_version(str(tmp_path / "s.sock")) == {
        "version": "0.1.0", "runtime_name": "containerd", "runtime_version": "1.6.20", "runtime_api_version": "v1"}
    req = seen["request"]
    assert req.startswith(cri.PREFACE) and cri.VERSION_PATH.encode() in req and b"application/grpc" in req


def test_cri_probe_fails_on_a_trailers_only_answer(tmp_path):
    """How containerd answers while its CRI recovers (grpc-status Unknown, 'server is not
    initialized yet'): trailers only, no message."""
    serve_once(tmp_path / "s.sock", frame(cri.SETTINGS, 0, 0)
               + frame(cri.HEADERS, cri.END_HEADERS | cri.END_STREAM, 1, b"\x88"))
    with pytest.raises(cri.CRIError, match="no response message"):
        cri.runtime_version(str(tmp_path / "s.sock"))
    with pytest.raises(cri.CRIError, match="cannot connect"):
        cri.runtime_version(str(tmp_path / "none.sock"))


# ------------------------------------------------------------------ a test session touches only its own

def test_cleanup_unmounts_only_the_clusters_own_dirs(tmp_path, monkeypatch):
    c = lk.LocalCluster(state_dir=tmp_path / "mine")
    calls: dict = {}
    monkeypatch.setattr(hostfs, "cgroup_kill", lambda rel, **kw: calls.setdefault("kill", rel) and 0)
    monkeypatch.setattr(hostfs, "unmount_under", lambda *p: calls.setdefault("unmount", p) and [])
    monkeypatch.setattr(hostfs, "cgroup_remove", lambda rel, **kw: calls.setdefault("remove", rel) and [])
    monkeypatch.setattr(hostfs, "cgroup_prune_empty_parents", lambda rel: None)
    c._cleanup_host()
    assert calls["unmount"] == (tmp_path / "mine" / "nodes", network.RUN_DIR / c.cluster_id)
    assert calls["kill"] == calls["remove"] == f"/schedgen/{c.cluster_id}"
    assert lk.LocalCluster(state_dir=lk.default_state_dir()).cluster_id != c.cluster_id


def test_a_session_never_reclaims_a_hack_cluster_up_cluster(tmp_path, monkeypatch):
    """A dead 'hack/cluster up' cluster (the demo's) holds a slot: a test session's start leaves it
    (its state file and mounts) alone; a dead session's cluster is still reclaimed."""
    demo, session = tmp_path / "demo", tmp_path / "session"
    for d, slot in ((demo, 7), (session, 8)):
        d.mkdir()
        (d / "state.json").write_text(json.dumps({"network": {"slot": slot}, "processes": {
            "etcd": {"pid": 2 ** 22 + 1, "create_time": 1.0}}}))
    owners = {7: {"state_dir": str(demo), "session": False, "pid": 2 ** 22 + 1},
              8: {"state_dir": str(session), "session": True, "pid": 2 ** 22 + 1}}
    monkeypatch.setattr(network, "slots_with_owners", lambda: owners)
    monkeypatch.setattr(network, "owner_alive", lambda owner: False)
    cleaned = []
    monkeypatch.setattr(lk.LocalCluster, "_cleanup_host", lambda self: cleaned.append(self.state_dir))
    before = (demo / "state.json").read_text()
    assert lk.reclaim_stale_networks(log=lambda m: None, sessions_only=True) == [8]
    assert cleaned == [session] and (demo / "state.json").read_text() == before
    cleaned.clear()
    # 'hack/cluster up' (not a session) reclaims both (the fake slots stay listed)
    assert lk.reclaim_stale_networks(log=lambda m: None) == [7, 8]
    assert cleaned == [demo, session]


def test_the_session_cluster_lives_in_a_temp_state_dir(tmp_path, monkeypatch):
    made = []

    class FakeCluster:
        def __init__(self, state_dir, session):
            self.state_dir, self.session = Path(state_dir), session
            made.append(self)

        def start(self):
            return self

        def import_image(self, archive):
            pass

        def add_node(self, *a, **kw):
            pass

    class Factory:
        def mktemp(self, name):
            path = tmp_path / f"{name}0"
            path.mkdir()
            return path

    class Request:
        class config:  # noqa: N801
            @staticmethod
            def add_cleanup(fn):
                pass

    monkeypatch.setattr(plugin, "_CLUSTERS", {})
    monkeypatch.setattr(lk, "LocalCluster", FakeCluster)
    monkeypatch.setattr("localkube.images.busybox_archive", lambda: tmp_path / "busybox.tar")
    monkeypatch.delenv("SCHEDGEN_CLUSTER_KEEP", raising=False)
    c = plugin._session_cluster(Request(), Factory())
    assert c is made[0] and c.session
    assert c.state_dir.parent == tmp_path and c.state_dir != lk.default_state_dir()
