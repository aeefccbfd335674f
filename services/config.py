"""Settings of one agent service process (transport only; the model settings are ``agents.config``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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
    ledger_path: Path | None = None
    """If set, every request's criteria and fields are appended here as JSON lines (what ``audit`` checks)."""
    deadline_margin_seconds: float = Field(default=0.05, ge=0)
    """A call whose deadline leaves less than this is refused before any model call."""
