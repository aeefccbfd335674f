"""Command-line flags both the services and the orchestrator take: the per-role model flags, applied over a config
file's ``models:`` section. Only argparse is imported here, so building the command line stays fast."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeopt.core.errors import ConfigError

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.core.roles import Role


def given(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The flags the user gave (argparse leaves the others ``None``), to lay over a config file's values."""
    return {name: value for name, value in flags.items() if value is not None}


def add_model_flags(parser: argparse.ArgumentParser, roles: Sequence[str]) -> None:
    """``--endpoint/--model/--api-key-env`` for every role, ``--<role>-…`` for one role, ``--local-model`` and
    ``--config``."""
    group = parser.add_argument_group("models (override the config file)")
    for role in ("", *roles):
        prefix = f"--{role}-" if role else "--"
        who = f"the {role} role" if role else "every role"
        group.add_argument(
            f"{prefix}endpoint",
            metavar="URL",
            help=f"OpenAI-compatible base URL for {who} (default: the config file's, else the embedded local model)",
        )
        group.add_argument(f"{prefix}model", metavar="NAME", help=f"model name for {who} (default: the config file's)")
        group.add_argument(
            f"{prefix}api-key-env",
            metavar="VAR",
            help=f"env variable holding the API key for {who} (default: none sent)",
        )
    add_local_model_flag(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="judgeopt YAML config file (default: none; `judgeopt config schema` prints its schema)",
    )


def add_local_model_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--local-model``: a GGUF file, or one on the Hugging Face Hub (downloaded once into its cache)."""
    from judgeopt.core.hub_model import HUB_EXAMPLE, parse_local_model

    parser.add_argument(
        "--local-model",
        type=parse_local_model,
        metavar="GGUF|REPO:FILE|REPO:TAG",
        help="GGUF file for the embedded local model, or one on the Hugging Face Hub, downloaded once into its cache "
        f"and verified, e.g. {HUB_EXAMPLE} (default: SmolLM2-135M-Instruct, a demo judge)",
    )


def apply_model_flags(args: argparse.Namespace, models: ModelsConfig, roles: Sequence[Role]) -> ModelsConfig:
    """``models`` with ``--endpoint/--model/--api-key-env`` (every role) and ``--<role>-…`` (one role) applied."""
    from pydantic import ValidationError

    from judgeopt.core.errors import describe_validation_error

    sections: list[tuple[str, str]] = [("default", ""), *((r, f"{r}_") for r in roles)]
    for section, prefix in sections:
        updates = given(
            {
                "base_url": getattr(args, f"{prefix}endpoint"),
                "model": getattr(args, f"{prefix}model"),
                "api_key_env": getattr(args, f"{prefix}api_key_env"),
            }
        )
        if updates:
            try:
                models = models.with_role(section, **updates)  # type: ignore[arg-type]
            except (ValidationError, ValueError) as exc:
                detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                raise ConfigError(f"--{prefix.replace('_', '-')}…: {detail}") from None
    return models
