"""How endpoint failures become agent errors: what is retried, and for how long the endpoint asked callers to wait."""

from __future__ import annotations

import email.utils
import time

import pytest
from helpers.fake_openai import Completion as Scripted
from helpers.fake_openai import FakeOpenAI, Garbage, HttpError, Reply

from judgeopt.agents.errors import ModelRequestError, ModelUnavailableError
from judgeopt.agents.model_client import Completion, ModelRunner, retry_after_seconds
from judgeopt.core.models import RoleModelConfig


class TestRetryAfter:
    def test_milliseconds_win_over_seconds(self) -> None:
        assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "7"}) == 0.25

    def test_seconds(self) -> None:
        assert retry_after_seconds({"retry-after": "3"}) == 3.0

    def test_http_date(self) -> None:
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        waited = retry_after_seconds({"retry-after": when})
        assert waited is not None and 25 <= waited <= 31

    @pytest.mark.parametrize("headers", [{}, {"retry-after": "soon"}, {"retry-after-ms": "x"}])
    def test_absent_or_unreadable_is_none(self, headers: dict[str, str]) -> None:
        assert retry_after_seconds(headers) is None

    def test_never_negative(self) -> None:
        assert retry_after_seconds({"retry-after": "-5"}) == 0.0


async def _complete(reply: Reply) -> tuple[Completion, int]:
    """What the runner made of ``reply``, and how many requests the endpoint received."""
    with FakeOpenAI(lambda _request: reply) as server:
        runner = ModelRunner("judge", RoleModelConfig(base_url=server.base_url, model="m", max_retries=0))
        try:
            return await runner.complete("system", "user"), len(server.requests)
        finally:
            await runner.close()


class TestEndpointFailures:
    async def test_rate_limit_carries_the_endpoints_wait(self) -> None:
        with pytest.raises(ModelUnavailableError) as failure:
            await _complete(HttpError(429, "slow down", headers={"Retry-After": "2"}))
        assert failure.value.status_code == 429 and failure.value.retry_after_seconds == 2.0

    @pytest.mark.parametrize(
        ("reply", "message"),
        [
            (Garbage(b"<html>502 Bad Gateway</html>", 200, "text/html"), "text/html"),
            (Garbage(b'{"choices": [{"mess'), "not JSON"),
            (HttpError(503, "overloaded"), "503"),
        ],
        ids=["html-page", "truncated-json", "503"],
    )
    async def test_unusable_replies_are_unavailable_so_they_are_retried(self, reply: Reply, message: str) -> None:
        with pytest.raises(ModelUnavailableError, match=message):
            await _complete(reply)

    async def test_a_refused_request_is_not_retried(self) -> None:
        with pytest.raises(ModelRequestError):
            await _complete(HttpError(400, "context length exceeded"))


class TestRepliesThatAreReplies:
    async def test_an_empty_reply_is_a_reply_not_a_failure(self) -> None:
        """An empty text that ended normally is the model's (useless) answer: returned once, for the role's parser,
        never raised as an endpoint failure to be retried."""
        completion, requests = await _complete(Scripted(""))
        assert (completion.text, completion.truncated, requests) == ("", False, 1)
        assert completion.usage.truncated_calls == 0

    async def test_a_reply_at_the_output_cap_is_marked_truncated(self) -> None:
        """finish_reason "length": the reply comes back marked, and its usage counts one truncated call."""
        completion, requests = await _complete(Scripted('{"fluency": 4}', finish_reason="length"))
        assert completion.truncated and completion.usage.truncated_calls == 1 and requests == 1
