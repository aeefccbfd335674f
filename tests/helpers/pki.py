"""A throwaway PKI made in Python with the ``cryptography`` package (a dev dependency), so that no TLS test depends on
an ``openssl`` binary: a CA, a service certificate for the given names and addresses (usable as a client certificate
too, as a pod's own certificate is by its health probe), an orchestrator client certificate, and a second, unrelated
CA with its own client certificate for the "wrong CA" cases. Keys are EC P-256; certificates are valid for two days."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


@dataclass(frozen=True)
class _Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _make_ca(folder: Path, name: str) -> tuple[Path, _Issuer]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(subject, subject, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, _ = _write(folder, name, cert, key)
    return cert_path, _Issuer(subject, key)


def _issue(
    folder: Path,
    name: str,
    issuer: _Issuer,
    usages: Sequence[x509.ObjectIdentifier],
    alt_names: Sequence[x509.GeneralName] = (),
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), issuer.name, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(alt_names)), critical=False)
    return _write(folder, name, builder.sign(issuer.key, hashes.SHA256()), key)


def make_pki(folder: Path, *, names: Sequence[str] = ("localhost",), addresses: Sequence[str] = ("127.0.0.1",)) -> Pki:
    """The certificates in ``folder``; the service certificate holds ``names`` and ``addresses``."""
    ca_cert, ca = _make_ca(folder, "judgeopt-test-ca")
    alt_names = [
        *(x509.DNSName(n) for n in names),
        *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses),
    ]
    server = _issue(folder, "server", ca, [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], alt_names)
    client = _issue(folder, "orchestrator", ca, [ExtendedKeyUsageOID.CLIENT_AUTH])
    other_ca_cert, other_ca = _make_ca(folder, "unrelated-ca")
    other_client = _issue(folder, "stranger", other_ca, [ExtendedKeyUsageOID.CLIENT_AUTH])
    return Pki(ca_cert, *server, *client, other_ca_cert, *other_client)
