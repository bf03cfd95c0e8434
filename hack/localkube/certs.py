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


def generate_pki(d: Path, service_ip: str = "10.0.0.1") -> None:
    """Create CA, serving/client certs and the service-account key pair in ``d`` (idempotent)."""
    d.mkdir(parents=True, exist_ok=True)
    if (d / "complete").exists():
        return
    ca_key, ca_cert = make_ca(d)
    local = dict(dns=("localhost",), ips=("127.0.0.1",))
    make_cert(d, "etcd-server", ca_key, ca_cert, "etcd", server=True, client=True, **local)
    make_cert(d, "etcd-peer", ca_key, ca_cert, "etcd-peer", server=True, client=True, **local)
    make_cert(d, "apiserver-etcd-client", ca_key, ca_cert, "kube-apiserver-etcd-client", client=True)
    make_cert(d, "apiserver", ca_key, ca_cert, "kube-apiserver", server=True,
              dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"),
              ips=("127.0.0.1", service_ip))
    make_cert(d, "admin", ca_key, ca_cert, "schedgen-admin", orgs=("system:masters",), client=True)
    make_cert(d, "controller-manager", ca_key, ca_cert, "system:kube-controller-manager", client=True)
    make_cert(d, "controller-manager-serving", ca_key, ca_cert, "kube-controller-manager", server=True, **local)
    # The node agent stands in for kubelet *and* kube-scheduler (it binds pods), which no single
    # built-in identity may do, so it gets a cluster-admin identity of its own.
    make_cert(d, "node-agent", ca_key, ca_cert, "schedgen:node-agent", orgs=("system:masters",), client=True)
    make_sa_keypair(d)
    (d / "complete").write_text("ok\n")
