"""Ask a node's containerd whether its CRI answers: ``runtime.v1.RuntimeService/Version`` over the
node's gRPC socket, the call the kubelet makes first (``validate CRI v1 runtime API``).

``ctr version`` answers as soon as containerd listens, but the CRI plugin only serves after it
has recovered the node's old sandboxes and containers (with hundreds of exited ones that takes
a while); until then every CRI call fails with ``server is not initialized yet`` and a kubelet
started then exits at once. Neither grpcio nor crictl is at hand, so this is a minimal gRPC
client: HTTP/2 with prior knowledge over the unix socket, one unary call. A response message
means the CRI serves (a failing call ends with trailers only: no message).
"""

from __future__ import annotations

import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
VERSION_PATH = "/runtime.v1.RuntimeService/Version"


class CRIError(RuntimeError):
    pass


def _frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _hpack_literal(name: str, value: str) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding (RFC 7541 6.2.2)."""
    def string(s: str) -> bytes:
        b = s.encode()
        if len(b) >= 127:
            raise ValueError("header too long for this encoder")
        return bytes([len(b)]) + b
    return b"\x00" + string(name) + string(value)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise CRIError("connection closed by containerd")
        buf += chunk
    return buf


def _strings(message: bytes) -> dict[int, str]:
    """The length-delimited fields of a protobuf message (field number -> str); others skipped."""
    out, i = {}, 0
    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            b = message[i]
            i += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
    while i < len(message):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            n = varint()
            out[field] = message[i:i + n].decode(errors="replace")
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise CRIError(f"unexpected protobuf wire type {wire}")
    return out


def unary(sock_path: str, path: str, request: bytes = b"", timeout: float = 5.0) -> bytes:
    """One unary gRPC call; returns the response message, CRIError if there is none."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock_path))
        except OSError as e:
            raise CRIError(f"cannot connect to {sock_path}: {e}") from e
        headers = b"".join(_hpack_literal(k, v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
            ("content-type", "application/grpc"), ("te", "trailers")))
        s.sendall(PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, 1, headers)
                  + _frame(DATA, END_STREAM, 1, b"\x00" + struct.pack(">I", len(request)) + request))
        body = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            head = _recv_exact(s, 9)
            length = int.from_bytes(head[:3], "big")
            ftype, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = _recv_exact(s, length) if length else b""
            if ftype == SETTINGS and not flags & ACK:
                s.sendall(_frame(SETTINGS, ACK, 0))
            elif ftype == PING and not flags & ACK:
                s.sendall(_frame(PING, ACK, 0, payload))
            elif ftype == GOAWAY:
                raise CRIError("containerd sent GOAWAY")
            elif stream == 1 and ftype == RST_STREAM:
                raise CRIError(f"stream reset (error code {int.from_bytes(payload[:4], 'big')})")
            elif stream == 1 and ftype == DATA:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                body += payload
                if flags & END_STREAM:
                    break
            elif stream == 1 and ftype == HEADERS and flags & END_STREAM:
                break  # trailers (grpc-status); a failed call sends only these
        else:
            raise CRIError(f"no answer to {path} within {timeout}s")
    if len(body) < 5:
        raise CRIError(f"{path} failed: a gRPC error, no response message (a CRI still recovering "
                       "answers so: server is not initialized yet)")
    n = int.from_bytes(body[1:5], "big")
    return body[5:5 + n]


def runtime_version(sock_path: str, timeout: float = 5.0) -> dict:
    """The CRI's VersionResponse (version, runtime_name, runtime_version, runtime_api_version)."""
    fields = _strings(unary(sock_path, VERSION_PATH, timeout=timeout))
    out = {k: fields.get(i, "") for i, k in enumerate(
        ("version", "runtime_name", "runtime_version", "runtime_api_version"), start=1)}
    if not out["runtime_name"]:
        raise CRIError(f"unexpected Version response {fields!r}")
    return out
