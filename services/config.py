"""Settings of one agent service process (transport only; the model settings are ``agents.config``), and the
reading of the secrets they name: PEM files for TLS and the bearer token's environment variable.

Secrets never live in a config: ``tls_key`` is a path and ``token_env`` the *name* of a variable, as a role's
``api_key_env`` is. The readers below are shared by the orchestrator's client side; each problem is one
:class:`CredentialError` line naming the flag and the path (or variable), never a secret's value.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class CredentialError(ValueError):
    """A TLS file or the token variable cannot be used; the message names the flag and the path or variable."""


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Address to bind; ``0.0.0.0`` in a container."""
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port (printed at start-up)."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    """Largest request or reply accepted, set explicitly on both directions."""
    grace_seconds: float = Field(default=10.0, ge=0)
    """How long in-flight calls may finish after SIGTERM."""
    max_connection_age_seconds: float = Field(default=300.0, gt=0)
    """Clients are asked to reconnect after this long, so ``dns:///`` round-robin finds new replicas."""
    max_connection_age_grace_seconds: float = Field(default=900.0, ge=0)
    """How long calls in flight on an aged connection may finish; longer than any call's deadline, so re-resolving
    replicas never cuts off a slow model call (which would cost it again)."""
    ledger_path: Path | None = None
    """If set, every request's criteria and fields are appended here as JSON lines (what ``audit`` checks)."""
    deadline_margin_seconds: float = Field(default=0.05, ge=0)
    """A call whose deadline leaves less than this is refused before any model call."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server (``--tls-cert``); with ``tls_key`` the service speaks only TLS."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (``--tls-key``)."""
    tls_client_ca: Path | None = None
    """PEM root(s) that client certificates must chain to (``--tls-client-ca``): set → mutual TLS, required."""
    token_env: str | None = None
    """Name of the environment variable holding the bearer token every agent RPC must carry (``--token-env``);
    health and reflection stay open so probes work."""
    replay_entries: int = Field(default=10_000, ge=0)
    """Successful replies remembered by (rpc, request id), so a retried call is answered without a second model
    call; 0 turns this off."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus endpoint ``http://host:PORT/metrics`` (``--metrics-port``; 0 picks a free one, logged
    at start-up), plain HTTP on the gRPC server's host; ``None`` serves no metrics."""

    @field_validator("token_env")
    @classmethod
    def _looks_like_env_name(cls, value: str | None) -> str | None:
        if value is not None and not (value.replace("_", "").isalnum() and value.isascii()):
            raise ValueError(f"token_env must name an environment variable, got {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_files_go_together(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key (--tls-cert, --tls-key) must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (--tls-client-ca) needs tls_cert and tls_key: mutual TLS is TLS first")
        if self.metrics_port and self.metrics_port == self.port:
            raise ValueError(f"metrics_port (--metrics-port) and port are both {self.port}: they need a port each")
        return self


# --- reading the secrets a config names ---------------------------------------------------------------------


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
