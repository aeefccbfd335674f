"""The judgeopt config file (YAML): per-role models and service transport settings.

models:            # agents.config.ModelsConfig: default + per-role overrides
  default: {...}
  gradient: {...}
service: {...}     # services.config.ServiceConfig (for `judgeopt serve`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.config import ModelsConfig, describe_validation_error
from orchestrator.errors import ConfigError
from services.config import ServiceConfig


class JudgeoptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: ModelsConfig = Field(default_factory=ModelsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)


def load_config(path: Path | None) -> JudgeoptConfig:
    """Read and validate a config file; every problem becomes one ``ConfigError`` line naming the file."""
    if path is None:
        return JudgeoptConfig()
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return JudgeoptConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
