"""The one door from a role to its model: autogen-agentchat ``AssistantAgent`` over autogen-ext's
``OpenAIChatCompletionClient``.

A fresh ``AssistantAgent`` is made for every request, so no conversation carries over between requests; the
HTTP client underneath is shared (connection reuse). Per-request create arguments (a JSON schema, logprobs) and
the full ``CreateResult`` (logprobs are not kept on agent messages) pass through a small per-request wrapper.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import importlib
import json
import os
import ssl
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import openai
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from judgeopt.agents import raw_reply
from judgeopt.agents.errors import (
    ModelEndpointError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from judgeopt.agents.raw_reply import TokenLogprob
from judgeopt.agents.types import Usage
from judgeopt.core.errors import ModelConfigError
from judgeopt.core.models import RoleModelConfig, StructuredOutput
from judgeopt.core.redact import redact
from judgeopt.core.tracing import trace_http_client

# Local and unknown models: autogen needs to be told what they can do.
_UNKNOWN_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=False,
    json_output=True,
    structured_output=True,
    family=ModelFamily.UNKNOWN,
)


CUT_OFF = "length"
"""The finish reason of a reply that stopped at ``max_tokens``."""


@dataclass(frozen=True)
class Completion:
    """One model reply: its text, token log-probabilities when asked for, and what it cost.

    An empty text is a reply like any other (the role's parser finds nothing in it); a reply that stopped at the
    output cap is :attr:`truncated`, and every role treats it the same way: recorded, never used cut off."""

    text: str
    logprobs: list[TokenLogprob] | None
    """Read from the HTTP reply (``agents.raw_reply``): autogen's objects drop the alternatives' text."""
    usage: Usage
    finish_reason: str

    @property
    def truncated(self) -> bool:
        return self.finish_reason == CUT_OFF


class _PerRequestClient(ChatCompletionClient):
    """Adds this request's create arguments and keeps the last ``CreateResult`` (with its logprobs)."""

    def __init__(self, inner: ChatCompletionClient, extra_create_args: Mapping[str, Any]) -> None:
        self._inner = inner
        self._extra = dict(extra_create_args)
        self.last_result: CreateResult | None = None

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        result = await self._inner.create(
            messages,
            tools=tools,
            tool_choice=tool_choice,
            json_output=json_output,
            extra_create_args={**self._extra, **extra_create_args},
            cancellation_token=cancellation_token,
        )
        self.last_result = result
        return result

    def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = (),
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        raise NotImplementedError("judgeopt agents do not stream")

    async def close(self) -> None:
        """The shared inner client outlives the request; the runner closes it."""

    def actual_usage(self) -> RequestUsage:
        return self._inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self._inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return self._inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return self._inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> ModelCapabilities:
        return self._inner.capabilities

    @property
    def model_info(self) -> ModelInfo:
        return self._inner.model_info


def _response_format(dialect: StructuredOutput, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    match dialect:
        case StructuredOutput.JSON_SCHEMA:
            return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        case StructuredOutput.JSON_OBJECT_SCHEMA:
            return {"type": "json_object", "schema": schema}
        case StructuredOutput.NONE:
            return None
        case _:
            raise AssertionError(f"unhandled structured-output dialect {dialect!r}")


class NotJsonReplyError(Exception):
    """A successful HTTP status with a body that is not JSON (an HTML error page from a proxy, say)."""


async def _require_json_body(response: httpx.Response) -> None:
    """httpx response hook: the openai client would hand a non-JSON body on as a string, which nothing can read."""
    content_type = response.headers.get("content-type", "")
    if response.is_success and "json" not in content_type:
        raise NotJsonReplyError(f"model endpoint answered {response.status_code} with {content_type or 'no'} content")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait an endpoint asked for: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    return None


def _endpoint_said(exc: openai.APIStatusError) -> str:
    """The endpoint's status and its own message (not its whole body), redacted and at most 300 characters: an
    error body may echo the request's credentials, and the message goes on to logs, the run store and the caller."""
    body = exc.body
    said = body.get("message") if isinstance(body, dict) else None
    text = " ".join(str(said).split()) if said else exc.response.reason_phrase
    return f"HTTP {exc.status_code}: {redact(text)[:300]}" if text else f"HTTP {exc.status_code}"


def _map_endpoint_error(exc: Exception) -> ModelEndpointError:
    """Translate what the openai client raises into the agent error tree, keeping any ``Retry-After``; the message
    holds no secret the endpoint may have echoed (``judgeopt.core.redact``)."""
    match exc:
        case openai.APITimeoutError():
            return ModelTimeoutError(f"model endpoint timed out: {redact(str(exc))}")
        case openai.APIConnectionError() if isinstance(exc.__cause__, NotJsonReplyError):
            return ModelUnavailableError(str(exc.__cause__))
        case openai.APIConnectionError():
            return ModelUnavailableError(f"model endpoint unreachable: {redact(str(exc))}")
        case openai.APIStatusError() if exc.status_code == 429 or exc.status_code >= 500:
            return ModelUnavailableError(
                f"model endpoint failed: {_endpoint_said(exc)}",
                status_code=exc.status_code,
                retry_after_seconds=retry_after_seconds(exc.response.headers),
            )
        case openai.APIStatusError():
            return ModelRequestError(
                f"model endpoint refused the request: {_endpoint_said(exc)}", status_code=exc.status_code
            )
        case openai.APIError():
            return ModelUnavailableError(f"model endpoint returned an unreadable reply: {redact(str(exc))}")
        case _:
            raise AssertionError(f"not an endpoint error: {exc!r}")


_LAZY_MODULES = (
    "openai.resources",
    "openai.resources.chat.completions",
    "openai.lib.streaming.chat",
    "anyio._backends._asyncio",
)
"""What the openai client imports lazily, on creating a client (its resources, ~0.4 s) and on its first request
(~150 ms, some 250 modules). Imported with this module: a service forked from a fork server that imported it pays
nothing for them, and a service's first call is as fast as the others."""
for _module in _LAZY_MODULES:
    importlib.import_module(_module)


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default TLS context for the CA settings of the environment (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else
    certifi's bundle), built once per setting: building one reads the whole bundle (~0.15 s), which every client
    would otherwise repeat, and a forked service inherits the one its fork server built."""
    del cert_file, cert_dir  # the cache key; httpx reads them from the environment
    return httpx.create_ssl_context(trust_env=True)


def _environment_tls_context() -> ssl.SSLContext:
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


_environment_tls_context()


class ModelRunner:
    """Runs one chat completion for a role through a fresh ``AssistantAgent``."""

    def __init__(self, role: str, config: RoleModelConfig) -> None:
        if config.base_url is None:
            raise ModelConfigError(f"{role}: no model endpoint configured (base_url)")
        self.role = role
        self.config = config
        create_args: dict[str, Any] = {"temperature": config.temperature, "max_tokens": config.max_tokens}
        if config.seed is not None:
            create_args["seed"] = config.seed
        create_args |= config.penalty_args()
        if config.extra_body or config.repeat_penalty is not None:
            create_args["extra_body"] = config.extra_body_with_penalty()
        # Passed through to AsyncOpenAI (autogen forwards its init arguments).
        http_client = openai.DefaultAsyncHttpxClient(
            verify=_environment_tls_context(),
            event_hooks={"response": [_require_json_body, raw_reply.keep_reply_body]},
        )
        trace_http_client(http_client)  # with tracing on, each model request is a child span of the RPC's
        client_args: dict[str, Any] = {"http_client": http_client}
        self._client = OpenAIChatCompletionClient(
            model=config.model,
            base_url=str(config.base_url),
            api_key=config.api_key(),
            timeout=config.timeout,
            max_retries=config.max_retries,
            model_info=_UNKNOWN_MODEL_INFO,
            **client_args,
            **create_args,
        )

    async def complete(
        self,
        system: str,
        user: str,
        *,
        schema: dict[str, Any] | None = None,
        schema_name: str = "answer",
        logprobs: bool = False,
    ) -> Completion:
        """One request: ``system`` is the role's fixed text, ``user`` the per-call text (most shared first)."""
        extra: dict[str, Any] = {}
        if schema is not None and (fmt := _response_format(self.config.structured_output, schema_name, schema)):
            extra["response_format"] = fmt
        if logprobs:
            extra["logprobs"] = True
            extra["top_logprobs"] = self.config.top_logprobs
        client = _PerRequestClient(self._client, extra)
        agent = AssistantAgent(name=self.role, model_client=client, system_message=system)
        started = time.perf_counter()
        try:
            with raw_reply.capture() as seen:
                result = await agent.run(task=user)
        except openai.OpenAIError as exc:
            raise _map_endpoint_error(exc) from exc
        except json.JSONDecodeError as exc:  # the HTTP body itself was not JSON (the openai client lets it through)
            raise ModelUnavailableError(f"model endpoint returned a body that is not JSON: {exc}") from exc
        elapsed = time.perf_counter() - started
        created = client.last_result
        if created is None:
            raise ModelUnavailableError("model endpoint returned no completion")
        final = result.messages[-1]
        text = final.content if isinstance(final, TextMessage) else ""
        usage = Usage(
            prompt_tokens=created.usage.prompt_tokens,
            completion_tokens=created.usage.completion_tokens,
            llm_calls=1,
            model_seconds=elapsed,
            model=self.config.model,
            truncated_calls=int(created.finish_reason == CUT_OFF),
            cached_prompt_tokens=seen.cached_prompt_tokens(),
        )
        tokens = seen.logprobs() if logprobs else None
        return Completion(text=text, logprobs=tokens, usage=usage, finish_reason=created.finish_reason)

    async def close(self) -> None:
        await self._client.close()
