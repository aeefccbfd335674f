"""Model configuration, one per role, so that one role's model can be swapped without touching the others."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from judgeopt.core.errors import ConfigError, ModelConfigError, describe_validation_error
from judgeopt.core.redact import redact_url
from judgeopt.core.roles import ALL_ROLES, ROLES, Role

FILE_KEY_VARIABLES = frozenset(
    {"JUDGEOPT_API_KEY", "OPENAI_API_KEY", *(f"JUDGEOPT_{role.upper()}_API_KEY" for role in ALL_ROLES)}
)
"""The API-key variables a file (a config file's ``models:``, an exported judge) may name. A role's key is sent to
the endpoint its ``base_url`` names, so a file naming any variable could send any secret of the environment to a
host of its choosing; another variable is named on the command line (``--api-key-env``, ``--<role>-api-key-env``)
by whoever runs the command."""


def check_file_key_variable(path: Path, field: str, name: str | None) -> None:
    """Refuse ``name`` as the API-key variable the file ``path`` gives in ``field``, unless it is judgeopt's own."""
    if name is not None and name not in FILE_KEY_VARIABLES:
        raise ConfigError(
            f"{path}: {field} names {name}; a file may name only JUDGEOPT_API_KEY, JUDGEOPT_<ROLE>_API_KEY or "
            "OPENAI_API_KEY (give another with --api-key-env on the command line)"
        )


class StructuredOutput(StrEnum):
    """The structured-output dialect an endpoint speaks."""

    JSON_SCHEMA = "json_schema"
    """OpenAI / vLLM: ``response_format={"type": "json_schema", "json_schema": {...}}``."""
    JSON_OBJECT_SCHEMA = "json_object_schema"
    """llama.cpp: ``response_format={"type": "json_object", "schema": {...}}``."""
    NONE = "none"
    """No constraint; replies are parsed tolerantly."""


class RoleModelConfig(BaseModel):
    """How one role reaches its model over the OpenAI-compatible chat API."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    base_url: HttpUrl | None = None
    """Endpoint, e.g. ``http://127.0.0.1:8080/v1``. ``None`` means the embedded local model."""
    model: str = "local"
    """Model name sent with each request."""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, gt=0)
    timeout: float = Field(default=120.0, gt=0)
    """Seconds for one HTTP request to the endpoint (a gRPC deadline may cut it shorter)."""
    max_retries: int = Field(default=0, ge=0, le=10)
    """Retries inside the service by the openai client. Leave 0 under the orchestrator: it retries every failed call
    within its own budget (honouring ``Retry-After``), and retries here would multiply that budget."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key (never the key itself)."""
    structured_output: StructuredOutput = StructuredOutput.NONE
    logprobs: bool = False
    """The endpoint returns token log-probabilities; the judge then scores as their probability-weighted mean."""
    top_logprobs: int = Field(default=10, ge=1, le=20)
    seed: int | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra request fields passed through verbatim (e.g. ``{"top_k": 40}`` for vLLM or llama.cpp)."""
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    """OpenAI's penalties on repeated tokens; ``None`` sends nothing (the endpoint's default). The judge sends 0:
    a penalty on tokens already written would push a joint answer's scores apart (digits repeat legitimately)."""
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    """llama.cpp's penalty on repeated tokens (its default is 1.1), sent as an extra body field; ``None`` sends
    nothing. OpenAI refuses unknown fields, so it is set by default only where the endpoint is llama.cpp: the
    judge's is 1.0 (no penalty) on the embedded model and wherever ``structured_output`` is llama.cpp's dialect."""
    requests_per_minute: int | None = Field(default=None, gt=0)
    """Limit on calls to this role's endpoint; roles on the same endpoint share the tightest limit."""
    tokens_per_minute: int | None = Field(default=None, gt=0)
    price_per_1k_tokens: float | None = Field(default=None, ge=0)
    """One price per 1,000 tokens, prompt and completion alike; runs then report their cost."""
    input_price_per_1k_tokens: float | None = Field(default=None, ge=0)
    """Price per 1,000 prompt tokens (overrides ``price_per_1k_tokens`` for them)."""
    output_price_per_1k_tokens: float | None = Field(default=None, ge=0)
    """Price per 1,000 completion tokens (overrides ``price_per_1k_tokens`` for them)."""

    def token_prices(self) -> tuple[float, float] | None:
        """(prompt, completion) price per 1,000 tokens, or ``None`` when the role is not priced at all; a side with
        no price of its own takes ``price_per_1k_tokens``, else costs nothing."""
        prompt = self.input_price_per_1k_tokens
        completion = self.output_price_per_1k_tokens
        if prompt is None and completion is None and self.price_per_1k_tokens is None:
            return None
        fallback = self.price_per_1k_tokens or 0.0
        return (fallback if prompt is None else prompt, fallback if completion is None else completion)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        prices = self.token_prices()
        return None if prices is None else (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1000

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_env_name(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError(f"api_key_env must name an environment variable, got {value!r}")
        return value

    def penalty_args(self) -> dict[str, float]:
        """The OpenAI penalty arguments of a request, those that are set."""
        penalties = {"frequency_penalty": self.frequency_penalty, "presence_penalty": self.presence_penalty}
        return {name: value for name, value in penalties.items() if value is not None}

    def extra_body_with_penalty(self) -> dict[str, Any]:
        """``extra_body`` with ``repeat_penalty`` when it is set (``extra_body``'s own value wins)."""
        penalty = {} if self.repeat_penalty is None else {"repeat_penalty": self.repeat_penalty}
        return penalty | dict(self.extra_body)

    def api_key(self) -> str:
        """The key from the named environment variable; local endpoints accept any placeholder."""
        if self.api_key_env is None:
            return "not-needed"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ModelConfigError(f"environment variable {self.api_key_env} (api_key_env) is not set")
        return key


ROLE_DEFAULTS: dict[Role, dict[str, Any]] = {
    # The study's settings: a near-deterministic judge, a creative optimizer.
    "judge": {"temperature": 0.1, "max_tokens": 128, "frequency_penalty": 0.0, "presence_penalty": 0.0},
    "loss": {"temperature": 0.7, "max_tokens": 256},
    "gradient": {"temperature": 0.7, "max_tokens": 512},
    "optimizer": {"temperature": 0.7, "max_tokens": 512},
    "evaluator": {"temperature": 0.0, "max_tokens": 256},
}

LLAMA_CPP_DEFAULTS: dict[Role, dict[str, Any]] = {"judge": {"repeat_penalty": 1.0}}
"""Role defaults only a llama.cpp endpoint takes: the judge's scores unpenalised (llama.cpp penalises repeats by
default, and a joint answer's digits repeat legitimately)."""

LOCAL_MAX_TOKENS: dict[Role, int] = {"judge": 64, "loss": 96, "gradient": 192, "optimizer": 160, "evaluator": 96}
"""The embedded 135M model rambles to the limit; short answers keep a run on two cores to minutes."""


def local_role_config(role: Role, base_url: str, *, logprobs: bool = False) -> RoleModelConfig:
    """The configuration of a role served by the embedded llama.cpp server."""
    return RoleModelConfig(
        base_url=HttpUrl(base_url),
        model="SmolLM2-135M-Instruct",
        structured_output=StructuredOutput.JSON_OBJECT_SCHEMA,
        logprobs=logprobs,
        **{**ROLE_DEFAULTS[role], **LLAMA_CPP_DEFAULTS.get(role, {}), "max_tokens": LOCAL_MAX_TOKENS[role]},
    )


class ModelsConfig(BaseModel):
    """Per-role model settings: ``default`` applies to every role, a role's own section overrides it field by field.

    In YAML::

        models:
          default: {base_url: "http://127.0.0.1:8080/v1", model: qwen3-8b}
          gradient: {base_url: "https://api.openai.com/v1", model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    default: dict[str, Any] = Field(default_factory=dict)
    judge: dict[str, Any] = Field(default_factory=dict)
    loss: dict[str, Any] = Field(default_factory=dict)
    gradient: dict[str, Any] = Field(default_factory=dict)
    optimizer: dict[str, Any] = Field(default_factory=dict)
    evaluator: dict[str, Any] = Field(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        for role in ALL_ROLES:  # refuse a bad section at load time, naming the role
            try:
                self._merged(role)
            except ValidationError as exc:
                raise ValueError(f"models.{role}: {describe_validation_error(exc)}") from None

    def _merged(self, role: Role) -> RoleModelConfig:
        given = {**self.default, **getattr(self, role)}
        speaks_llama_cpp = given.get("structured_output") == StructuredOutput.JSON_OBJECT_SCHEMA
        llama_cpp = LLAMA_CPP_DEFAULTS.get(role, {}) if speaks_llama_cpp else {}
        return RoleModelConfig(**{**ROLE_DEFAULTS[role], **llama_cpp, **given})

    def for_role(self, role: Role, *, local_base_url: str | None = None) -> RoleModelConfig:
        """The role's settings; a role with no endpoint gets the embedded local model at ``local_base_url``."""
        config = self._merged(role)
        if config.base_url is None and local_base_url is not None:
            local = local_role_config(role, local_base_url)
            overrides = {**self.default, **getattr(self, role)}
            return local.model_copy(update={k: v for k, v in overrides.items() if k != "base_url"})
        return config

    def needs_local_model(self, roles: tuple[Role, ...] = ROLES) -> bool:
        return any(self._merged(role).base_url is None for role in roles)

    def check_file_key_variables(self, path: Path) -> None:
        """These settings came from the file ``path``: refuse any API-key variable but judgeopt's own."""
        for section in ("default", *ALL_ROLES):
            check_file_key_variable(path, f"models.{section}.api_key_env", getattr(self, section).get("api_key_env"))

    def redacted(self) -> ModelsConfig:
        """A copy whose ``base_url`` credentials (``user:password@``) are ``REDACTED@``: what a run may store."""
        sections = {
            section: {k: redact_url(v) if k == "base_url" and isinstance(v, str) else v for k, v in values.items()}
            for section, values in self.model_dump().items()
        }
        return ModelsConfig.model_validate(sections)

    def with_role(self, role: Role | Literal["default"], **updates: Any) -> ModelsConfig:
        """A copy with some fields of one section replaced (how ``--gradient-model`` etc. apply)."""
        section = {**getattr(self, role), **{k: v for k, v in updates.items() if v is not None}}
        return ModelsConfig.model_validate({**self.model_dump(), role: section})
