"""Reading the secrets a config names, for both sides of the contract: PEM files for TLS and the bearer token's
environment variable. Each problem is one :class:`~judgeopt.core.errors.CredentialError` line naming the flag and the
path (or variable), never a secret's value."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from judgeopt.core.errors import CredentialError
from judgeopt.core.service_config import ServiceConfig

PemKind = Literal["certificate", "private key"]


def read_pem(path: Path, *, flag: str, kind: PemKind) -> bytes:
    """The bytes of a PEM file holding at least one ``kind``; a missing, unreadable or foreign file is refused."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CredentialError(f"{flag}: cannot read {path} ({exc.strerror or exc})") from None
    text = data.decode("ascii", errors="replace")
    if kind == "private key":
        if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
            raise CredentialError(f"{flag}: {path} holds no PEM private key")
        if "ENCRYPTED" in text:
            raise CredentialError(f"{flag}: {path} holds an encrypted private key; gRPC needs it unencrypted")
        return data
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        raise CredentialError(f"{flag}: {path} holds no PEM certificate") from None
    return data


def check_key_pair(cert: Path, key: Path, *, cert_flag: str, key_flag: str) -> None:
    """Refuse a key that does not belong to the certificate (found at start-up, not at the first handshake)."""
    try:
        # A password that cannot decrypt anything: OpenSSL must never prompt on the terminal for one.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as exc:
        reason = exc.reason or "unusable"
        raise CredentialError(f"{key_flag}: {key} is not the private key of {cert_flag} {cert} ({reason})") from None
    except OSError as exc:
        raise CredentialError(f"{key_flag}: cannot read {key} ({exc.strerror or exc})") from None


def read_token(env_name: str, *, flag: str = "--token-env") -> str:
    """The bearer token held by ``env_name``; its value is never part of an error message."""
    token = os.environ.get(env_name, "")
    if not token:
        raise CredentialError(f"{flag}: environment variable {env_name} is not set")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise CredentialError(f"{flag}: the value of {env_name} is not a usable token (printable ASCII, no spaces)")
    return token


@dataclass(frozen=True)
class ServerTLS:
    """The PEM material of a TLS server; ``client_ca`` set means client certificates are required."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    def __repr__(self) -> str:  # the private key must not reach a log through a repr
        return f"ServerTLS(mutual={self.client_ca is not None})"


def server_tls(config: ServiceConfig) -> ServerTLS | None:
    """Read and check the service's TLS files, or ``None`` for plaintext."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = read_pem(config.tls_cert, flag="--tls-cert", kind="certificate")
    key = read_pem(config.tls_key, flag="--tls-key", kind="private key")
    check_key_pair(config.tls_cert, config.tls_key, cert_flag="--tls-cert", key_flag="--tls-key")
    client_ca = None
    if config.tls_client_ca is not None:
        client_ca = read_pem(config.tls_client_ca, flag="--tls-client-ca", kind="certificate")
    return ServerTLS(cert, key, client_ca)


def service_token(config: ServiceConfig) -> str | None:
    """The token callers must present, or ``None`` when the service takes no token."""
    return None if config.token_env is None else read_token(config.token_env)
