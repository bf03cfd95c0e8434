"""Generate the PKI for the local control plane with the ``cryptography`` package."""

from __future__ import annotations

import datetime as _dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = _dt.timedelta(days=3650)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _now():
    return _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)


def make_ca(d: Path, name: str = "ca", cn: str = "schedgen-local-ca"):
    key = _key()
    subject = _name(cn)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(d / f"{name}.key", key)
    _write_cert(d / f"{name}.crt", cert)
    return key, cert


def make_cert(d: Path, name: str, ca_key, ca_cert, cn: str, orgs: tuple[str, ...] = (),
              server: bool = False, client: bool = False, dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = ()) -> None:
    key = _key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    b = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                      crl_sign=False, content_commitment=False, data_encipherment=False,
                                      key_agreement=False, encipher_only=False, decipher_only=False),
                        critical=True)
         .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    if dns or ips:
        sans = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    _write_key(d / f"{name}.key", key)
    _write_cert(d / f"{name}.crt", cert)


def make_sa_keypair(d: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(d / "sa.key", key)
    (d / "sa.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def load_ca(d: Path):
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    return key, cert


APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
_APISERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                  "kubernetes.default.svc.cluster.local")


def generate_pki(d: Path, service_ip: str = "10.0.0.1", apiserver_ips: tuple[str, ...] = ()) -> None:
    """Create CA, serving/client certs and the service-account key pair in ``d`` (idempotent:
    existing files are kept, missing ones are added).

    ``apiserver_ips`` are extra IP SANs of the apiserver's serving cert (besides 127.0.0.1 and
    the ``kubernetes`` Service IP); when they change on a later call (a restarted cluster got
    another host address) only that cert is reissued.
    """
    d.mkdir(parents=True, exist_ok=True)
    if (d / "ca.key").exists() and (d / "ca.crt").exists():
        ca_key, ca_cert = load_ca(d)
    else:
        for f in [*d.glob("*.crt"), *d.glob("*.key")]:  # anything signed by a lost CA
            f.unlink()
        ca_key, ca_cert = make_ca(d)
    local = dict(dns=("localhost",), ips=("127.0.0.1",))
    specs = {
        "etcd-server": dict(cn="etcd", server=True, client=True, **local),
        "etcd-peer": dict(cn="etcd-peer", server=True, client=True, **local),
        "apiserver-etcd-client": dict(cn="kube-apiserver-etcd-client", client=True),
        "admin": dict(cn="schedgen-admin", orgs=("system:masters",), client=True),
        "controller-manager": dict(cn="system:kube-controller-manager", client=True),
        "controller-manager-serving": dict(cn="kube-controller-manager", server=True, **local),
        "scheduler": dict(cn="system:kube-scheduler", client=True),
        "scheduler-serving": dict(cn="kube-scheduler", server=True, **local),
        "kube-proxy": dict(cn="system:kube-proxy", client=True),
        # the apiserver's identity towards kubelets (logs, exec, port-forward); RBAC binds it to
        # system:kubelet-api-admin (cluster.py); it is not in system:masters
        "apiserver-kubelet-client": dict(cn=APISERVER_KUBELET_CLIENT, client=True),
    }
    for name, kw in specs.items():
        if not (d / f"{name}.crt").exists():
            make_cert(d, name, ca_key, ca_cert, **kw)
    ips = tuple(dict.fromkeys(("127.0.0.1", service_ip, *apiserver_ips)))
    have = (d / "apiserver.ips").read_text().strip() if (d / "apiserver.ips").exists() else None
    if have != ",".join(ips) or not (d / "apiserver.crt").exists():
        make_cert(d, "apiserver", ca_key, ca_cert, "kube-apiserver", server=True, dns=_APISERVER_DNS, ips=ips)
        (d / "apiserver.ips").write_text(",".join(ips) + "\n")
    if not (d / "sa.key").exists():
        make_sa_keypair(d)
    (d / "complete").write_text("ok\n")


def node_certs(d: Path, node: str, node_ip: str) -> None:
    """A kubelet's client cert (``system:node:<node>`` in ``system:nodes``, so the Node authorizer
    and NodeRestriction apply to it) and its serving cert (IP SAN ``node_ip``), both signed by
    the cluster CA: ``node-<node>.{crt,key}`` and ``kubelet-<node>-serving.{crt,key}``."""
    ca_key, ca_cert = load_ca(d)
    make_cert(d, f"node-{node}", ca_key, ca_cert, f"system:node:{node}", orgs=("system:nodes",), client=True)
    make_cert(d, f"kubelet-{node}-serving", ca_key, ca_cert, node, server=True, dns=(node,), ips=(node_ip,))
