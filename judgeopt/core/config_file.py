"""The judgeopt config file (YAML), as far as the base layer reads it: per-role models and service transport.

models:            # judgeopt.core.models.ModelsConfig: default + per-role overrides
  default: {...}
  gradient: {...}
service: {...}     # judgeopt.core.service_config.ServiceConfig (for `judgeopt serve`)
run: {...}         # the orchestrator's sections, read by judgeopt.orchestrator.config
grid: {...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from judgeopt.core.errors import ConfigError, describe_validation_error
from judgeopt.core.models import ModelsConfig
from judgeopt.core.service_config import ServiceConfig
from judgeopt.core.yaml_files import read_yaml_mapping

SECTIONS = ("models", "service", "run", "grid")


class ServingConfig(BaseModel):
    """What a service reads of a config file; the orchestrator's sections are left to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: ModelsConfig = Field(default_factory=ModelsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    run: dict[str, Any] | None = None
    grid: dict[str, Any] | None = None


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's sections, unvalidated; an unknown top-level section is refused."""
    raw = read_yaml_mapping(path, what="config file")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})")
    return raw


def load_serving_config(path: Path | None) -> ServingConfig:
    """The ``models`` and ``service`` sections of a config file (defaults without one), validated; the file may name
    only judgeopt's own API-key variables (``judgeopt.core.models.FILE_KEY_VARIABLES``)."""
    from pydantic import ValidationError

    if path is None:
        return ServingConfig()
    try:
        config = ServingConfig.model_validate(read_config_file(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc)}") from None
    config.models.check_file_key_variables(path)
    return config
