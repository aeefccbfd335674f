"""Settings of one agent service process (transport only; the model settings are ``judgeopt.core.models``).

Secrets never live in a config: ``tls_key`` is a path and ``token_env`` the *name* of a variable, as a role's
``api_key_env`` is; ``judgeopt.core.credentials`` reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address to bind; ``0.0.0.0`` in a container. Any address but loopback needs TLS and ``token_env`` (``serve``
    refuses it otherwise, unless ``--insecure``)."""
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port (printed at start-up)."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    """Largest request or reply accepted, set explicitly on both directions."""
    max_concurrent_rpcs: int = Field(default=64, gt=0)
    """Most RPCs served at once (health and reflection included), eight times an orchestrator's default concurrency;
    one more is refused at once with RESOURCE_EXHAUSTED, before its request is read. So callers together hold at
    most this many requests (of ``max_message_bytes`` each) and model calls in the service."""
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
    """Name of the environment variable holding the bearer token every RPC must carry (``--token-env``), reflection
    included; only health stays open, so probes work."""
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
