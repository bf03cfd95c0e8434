"""An OCI registry for the local cluster, as users have one: TLS, a login, images by digest.

CNCF distribution v3.1.2 (``registry``) is built once with ``go install`` from the Go module
proxy into ``~/.cache/schedgen/registry-v3.1.2/bin/registry`` (``hack/cluster build`` builds it
too). :meth:`Registry.start` runs it as one more process of a started
:class:`~localkube.cluster.LocalCluster` (``state.json`` key ``registry``, stopped with the
cluster), with everything under ``<state-dir>/registry/``:

* storage: the filesystem driver in ``registry/data`` (gone with the cluster's state dir);
* address: the cluster's host address (``10.200.<slot>.1``, the host end of the node network)
  on a free port: the nodes' containerds (inside the cluster's network namespace) and this
  machine's podman/helm both reach it there, nothing else does;
* TLS: a serving cert for that IP signed by the cluster's own CA (``pki/ca.crt``, certs.py). TLS
  rather than plain HTTP because that is what users' registries speak: the nodes trust the CA
  through containerd's ``config_path`` (``<state-dir>/registry-hosts/<host:port>/hosts.toml``
  with ``ca = ...``, node.py), podman through ``--cert-dir``, Helm through ``SSL_CERT_FILE``
  (:meth:`Registry.trust_env`); nothing is configured "insecure";
* auth: htpasswd (bcrypt) with one user and a random password, so a pull without
  credentials is refused (401) and ``imagePullSecrets`` is really exercised
  (:meth:`Registry.pull_secret` is the ``kubernetes.io/dockerconfigjson`` Secret).

    >>> reg = Registry(cluster).start()
    >>> reg.address                      # '10.200.3.1:40123'
    >>> reg.credentials                  # ('schedgen', '...')
    >>> reg.pull_secret("team-a", "regcred")   # a Secret object for the API
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .gotool import GoTool
from .node import registry_hosts_dir

REGISTRY_VERSION = "v3.1.2"
REGISTRY_PACKAGE = "github.com/distribution/distribution/v3/cmd/registry"
PROCESS_KEY = "registry"
USERNAME = "schedgen"
# bcrypt cost of the htpasswd entry: the registry checks it on every request (each pull makes
# several); 4 is bcrypt's minimum, fine for a random 32-byte password on a local test registry.
BCRYPT_ROUNDS = 4
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _log(msg: str) -> None:
    print(f"[localkube] {msg}", file=sys.stderr, flush=True)


class RegistryError(RuntimeError):
    pass


TOOL = GoTool("registry", REGISTRY_PACKAGE, REGISTRY_VERSION, "registry", minutes=2)


def build(force: bool = False, log=_log) -> Path:
    """Build (once) the registry from the Go module proxy; return the binary (2 to 7 min cold)."""
    return TOOL.build(force=force, log=log)


def config(address: str, root: Path, htpasswd: Path, cert: Path, key: Path, http_secret: str) -> dict:
    """The registry's configuration (distribution's config.yml, as a dict: JSON is YAML)."""
    return {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": address, "secret": http_secret, "tls": {"certificate": str(cert), "key": str(key)},
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": {"htpasswd": {"realm": "schedgen-local-registry", "path": str(htpasswd)}},
    }


def hosts_toml(address: str, ca_file: Path) -> str:
    """containerd's hosts.toml for the registry: pull and resolve over TLS with the cluster CA."""
    return (f'server = "https://{address}"\n\n'
            f'[host."https://{address}"]\n'
            f'  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{ca_file}"\n')


def docker_config_json(address: str, username: str, password: str) -> str:
    """What ``kubectl create secret docker-registry`` writes (``.dockerconfigjson``)."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {address: {"username": username, "password": password, "auth": auth}}})


def htpasswd_line(username: str, password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    import bcrypt

    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()}\n"


class Registry:
    """The registry of one started :class:`LocalCluster` (one per cluster; its settings live in
    the cluster's ``state.json`` under ``registry``, so another process finds it)."""

    def __init__(self, cluster, log=None):
        self.cluster = cluster
        self.log = log or cluster.log
        self.dir = cluster.state_dir / "registry"

    # ------------------------------------------------------------------ facts
    @property
    def _state(self) -> dict:
        found = self.cluster.state.get("registry")
        if not found:
            raise RegistryError(f"no registry in the cluster of {self.cluster.state_dir}: start it first")
        return found

    @property
    def address(self) -> str:
        """``host:port`` as nodes and this machine reach it (image refs start with it)."""
        return self._state["address"]

    @property
    def credentials(self) -> tuple[str, str]:
        return self._state["username"], self._state["password"]

    @property
    def ca_file(self) -> Path:
        """The CA that signed the registry's serving cert (the cluster's)."""
        return self.cluster.pki / "ca.crt"

    @property
    def cert_dir(self) -> Path:
        """A directory with only the CA, for ``podman push --cert-dir``."""
        return self.dir / "client-certs"

    @property
    def running(self) -> bool:
        return self.cluster.process_alive(PROCESS_KEY)

    def trust_env(self) -> dict[str, str]:
        """The environment for a child (Helm's Go TLS) that must trust the registry: this
        process's, with ``SSL_CERT_FILE`` = the system CAs plus the cluster CA."""
        bundle = self.dir / "ca-bundle.crt"
        system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.is_file() else ""
        bundle.write_text(system + self.ca_file.read_text())
        return {**os.environ, "SSL_CERT_FILE": str(bundle)}

    def docker_config_json(self) -> str:
        return docker_config_json(self.address, *self.credentials)

    def authfile(self) -> Path:
        """The credentials as a docker config.json file (mode 0600), for ``podman push --authfile``."""
        path = self.dir / "auth.json"
        path.write_text(self.docker_config_json())
        path.chmod(0o600)
        return path

    def pull_secret(self, namespace: str, name: str) -> dict:
        """The ``kubernetes.io/dockerconfigjson`` Secret for pulls from this registry."""
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": {".dockerconfigjson": self.docker_config_json()}}

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60.0) -> "Registry":
        """Start the registry (once per cluster: a running one is reused)."""
        if self.cluster.state.get("registry") and self.running:
            return self
        binary = build(log=self.log)
        host = self.cluster.host_address
        from .cluster import free_port

        address = f"{host}:{free_port()}"
        password = secrets.token_urlsafe(32)
        cfg = self._write_files(address, password)
        self.cluster.start_process(PROCESS_KEY, [str(binary), "serve", str(cfg)],
                                   env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
        self.cluster.state["registry"] = {"address": address, "username": USERNAME, "password": password,
                                          "version": REGISTRY_VERSION}
        self.cluster.save_state()
        self.cluster.wait_until(f"registry on {address}", self._answers, timeout, watch=(PROCESS_KEY,))
        self._write_hosts_toml()
        self.log(f"registry {REGISTRY_VERSION} on https://{address} (TLS: cluster CA; htpasswd user {USERNAME})")
        return self

    def _write_files(self, address: str, password: str) -> Path:
        from .certs import load_ca, make_cert

        for d in (self.dir, self.dir / "data", self.cert_dir):
            d.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = load_ca(self.cluster.pki)
        host = address.rsplit(":", 1)[0]
        make_cert(self.dir, "serving", ca_key, ca_cert, "schedgen-local-registry", server=True, ips=(host,))
        (self.cert_dir / "ca.crt").write_bytes(self.ca_file.read_bytes())
        htpasswd = self.dir / "htpasswd"
        htpasswd.write_text(htpasswd_line(USERNAME, password))
        htpasswd.chmod(0o600)
        cfg = self.dir / "config.yml"
        cfg.write_text(json.dumps(config(address, self.dir / "data", htpasswd, self.dir / "serving.crt",
                                         self.dir / "serving.key", secrets.token_hex(16)), indent=2))
        cfg.chmod(0o600)
        return cfg

    def _write_hosts_toml(self) -> None:
        d = registry_hosts_dir(self.cluster.state_dir) / self.address
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(hosts_toml(self.address, self.ca_file))

    def _answers(self) -> bool:
        """``/v2/`` answers 401 without credentials (TLS checked against the cluster CA)."""
        return self.get("/v2/", auth=False)[0] == 401

    def get(self, path: str, auth: bool = True, accept: str | None = None) -> tuple[int, bytes]:
        """A GET of the registry API (status, body), verifying TLS with the cluster CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(f"https://{self.address}{path}")
        if auth:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        if accept:
            req.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        self.cluster.stop_process(PROCESS_KEY)
