"""What the endpoint's HTTP reply says that autogen's ``CreateResult`` drops: the text of each top-logprob
alternative (autogen keeps only its log probability and bytes, and llama-cpp-python sends ``bytes: null``) and
``usage.prompt_tokens_details.cached_tokens`` (the prompt tokens an engine's prefix cache served).

The body is read by an httpx response hook on the shared HTTP client and handed to the request that is waiting
for it through a context variable: each request opens :func:`capture`, and the hook runs inside that request's
task (or a task it started, which inherits the variable), so concurrent requests never see each other's replies.
A body that is not a JSON object is left alone (other checks refuse it); nothing here raises on what a model or
endpoint sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, log probability, and top alternatives as ``(text, logprob)`` pairs."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class RawReply:
    """What one request's HTTP reply carried, filled in by the response hook."""

    body: dict[str, Any] | None = field(default=None)

    def logprobs(self) -> list[TokenLogprob] | None:
        """The first choice's token log probabilities with each token's text, or ``None`` when there are none."""
        return token_logprobs(self.body) if self.body is not None else None

    def cached_prompt_tokens(self) -> int:
        return cached_prompt_tokens(self.body) if self.body is not None else 0


_CURRENT: contextvars.ContextVar[RawReply | None] = contextvars.ContextVar("judgeopt_raw_reply", default=None)


@contextlib.contextmanager
def capture() -> Iterator[RawReply]:
    """Collect the HTTP reply of the request made inside this block."""
    reply = RawReply()
    token = _CURRENT.set(reply)
    try:
        yield reply
    finally:
        _CURRENT.reset(token)


async def keep_reply_body(response: httpx.Response) -> None:
    """httpx response hook: a successful JSON reply's body goes to the request that opened :func:`capture`."""
    reply = _CURRENT.get()
    if reply is None or not response.is_success or "json" not in response.headers.get("content-type", ""):
        return
    await response.aread()  # httpx keeps the content: the openai client reads the same bytes afterwards
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return
    if isinstance(body, dict):
        reply.body = body


def _token_text(entry: Mapping[str, Any]) -> str:
    """A logprob entry's text: its ``token`` string, else its ``bytes`` decoded (whichever the endpoint filled)."""
    token = entry.get("token")
    if isinstance(token, str) and token:
        return token
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw).decode("utf-8", errors="ignore")
    return ""


def _logprob(entry: Mapping[str, Any]) -> float | None:
    value = entry.get("logprob")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) or value == -math.inf else None


def token_logprobs(body: Mapping[str, Any]) -> list[TokenLogprob] | None:
    """``choices[0].logprobs.content`` of a chat-completion body as :class:`TokenLogprob`s; malformed entries are
    skipped, and ``None`` means the reply had no log probabilities at all."""
    choices = body.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    logprobs = first.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    tokens: list[TokenLogprob] = []
    for entry in content:
        if not isinstance(entry, dict) or (logprob := _logprob(entry)) is None:
            continue
        alternatives = entry.get("top_logprobs")
        top: list[tuple[str, float]] = []
        for alternative in alternatives if isinstance(alternatives, list) else ():
            if isinstance(alternative, dict) and (alt_logprob := _logprob(alternative)) is not None:
                top.append((_token_text(alternative), alt_logprob))
        tokens.append(TokenLogprob(_token_text(entry), logprob, tuple(top)))
    return tokens


def cached_prompt_tokens(body: Mapping[str, Any]) -> int:
    """``usage.prompt_tokens_details.cached_tokens``, 0 where the endpoint does not report it."""
    usage = body.get("usage")
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0 else 0
