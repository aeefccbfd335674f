"""Checks of the fake OpenAI server helper against the real ``openai`` client."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import openai
import pytest
from helpers.fake_openai import (
    Completion,
    FakeOpenAI,
    Garbage,
    Hang,
    HttpError,
    RecordedRequest,
    Reply,
    Reset,
    ScriptExhaustedError,
    TokenLogprob,
    by_system_prompt,
    sequence,
    static,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionContentPartTextParam, ChatCompletionMessageParam

MODEL = "judge-model"


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(static("hello")) as fake:
        yield fake


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=5.0) as oai:
        yield oai


def ask(client: openai.OpenAI, text: str = "hi", system: str | None = None) -> str | None:
    """Send one chat completion and return the answer text."""
    messages: list[ChatCompletionMessageParam] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    response = client.chat.completions.create(model=MODEL, messages=messages)
    return response.choices[0].message.content


class TestFakeOpenAI:
    def test_completion_round_trips(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """A Completion parses as a chat.completion with its content, model, finish reason and usage."""
        server.set_handler(lambda _r: Completion("the answer", prompt_tokens=7, completion_tokens=3))
        response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "q"}])
        choice = response.choices[0]
        assert response.object == "chat.completion"
        assert response.model == MODEL
        assert choice.message.role == "assistant"
        assert choice.message.content == "the answer"
        assert choice.finish_reason == "stop"
        assert choice.logprobs is None
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 3)
        assert response.usage.total_tokens == 10

    def test_logprobs_are_parsed_by_the_client(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """TokenLogprobs are served in OpenAI format; the client parses them, top_logprobs included."""
        tokens = [TokenLogprob("4", -0.1, [("4", -0.1), ("5", -2.3)]), TokenLogprob("é", -0.5, [])]
        server.set_handler(lambda _r: Completion("4é", logprobs=tokens, finish_reason="length"))
        response = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "score"}], logprobs=True, top_logprobs=2
        )
        choice = response.choices[0]
        assert choice.finish_reason == "length"
        assert choice.logprobs is not None and choice.logprobs.content is not None
        first, second = choice.logprobs.content
        assert (first.token, first.logprob, first.bytes) == ("4", -0.1, [52])
        assert [(t.token, t.logprob) for t in first.top_logprobs] == [("4", -0.1), ("5", -2.3)]
        assert second.bytes == list("é".encode())
        assert second.top_logprobs == []

    def test_http_500_raises_internal_server_error(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """HttpError(500) surfaces as openai.InternalServerError carrying the error message."""
        server.set_handler(lambda _r: HttpError(500, "boom"))
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client)
        assert caught.value.status_code == 500
        assert caught.value.message == "Error code: 500 - {'error': {'message': 'boom', " + (
            "'type': 'server_error', 'code': None, 'param': None}}"
        )

    def test_http_429_raises_rate_limit_error(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """HttpError(429, headers=...) surfaces as openai.RateLimitError and the headers reach the client."""
        server.set_handler(lambda _r: HttpError(429, "slow down", headers={"Retry-After": "0"}))
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client)
        assert caught.value.response.headers["retry-after"] == "0"
        assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "rate_limit_exceeded"

    def test_hang_times_out_the_client_and_stop_does_not_wait_for_it(self) -> None:
        """Hang outlasts a short client timeout (APITimeoutError), and stop() returns promptly mid-hang."""
        fake = FakeOpenAI(lambda _r: Hang(30)).start()
        try:
            oai = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0, timeout=0.3)
            started = time.monotonic()
            with pytest.raises(openai.APITimeoutError):
                ask(oai)
            assert time.monotonic() - started < 5
            oai.close()
        finally:
            started = time.monotonic()
            fake.stop()
            assert time.monotonic() - started < 2

    def test_short_hang_answers_empty_completion(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """A short Hang ends with a 200 and an empty completion."""
        server.set_handler(lambda _r: Hang(0.2))
        started = time.monotonic()
        assert ask(client) == ""
        assert time.monotonic() - started >= 0.2

    def test_garbage_body_makes_the_client_raise(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """Garbage(b"not json") labelled application/json makes the client raise a JSON decode error."""
        server.set_handler(lambda _r: Garbage(b"not json"))
        with pytest.raises(json.JSONDecodeError):
            ask(client)

    def test_reset_raises_connection_error(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """Reset drops the connection with no response, which the client reports as APIConnectionError."""
        server.set_handler(sequence([Reset()], then=Completion("back")))
        with pytest.raises(openai.APIConnectionError):
            ask(client)
        assert ask(client) == "back"

    def test_requests_are_recorded_with_bodies(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """Chat requests are recorded in order: path, lower-cased headers, JSON body and views on it."""
        ask(client, "first", system="You are a judge.")
        parts: list[ChatCompletionContentPartTextParam] = [
            {"type": "text", "text": "part one"},
            {"type": "text", "text": "2"},
        ]
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": parts},
            ],
            temperature=0.0,
        )
        first, second = server.requests
        assert first.path == "/v1/chat/completions"
        assert first.headers["authorization"] == "Bearer x"
        assert first.headers["content-type"] == "application/json"
        assert first.model == MODEL
        assert first.system_text == "You are a judge."
        assert first.last_user_text == "first"
        assert first.messages == first.body["messages"]
        assert second.body["temperature"] == 0.0
        assert second.system_text == ""
        assert second.last_user_text == "part one\n2"
        server.clear()
        assert server.requests == []

    def test_handler_exception_gives_500_and_server_keeps_serving(
        self, server: FakeOpenAI, client: openai.OpenAI
    ) -> None:
        """A raising handler yields a 500, is kept in handler_errors, and the next request is served."""

        def explode(_request: RecordedRequest) -> Reply:
            raise ValueError("script bug")

        server.set_handler(explode)
        with pytest.raises(openai.InternalServerError, match="ValueError: script bug"):
            ask(client)
        [error] = server.handler_errors
        assert isinstance(error, ValueError)
        server.set_handler(static("fine"))
        assert ask(client) == "fine"
        assert len(server.requests) == 2

    def test_sequence_replies_in_order_then_fallback(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """sequence gives the n-th request the n-th reply, then `then` for every later request."""
        script: list[Reply] = [Completion("one"), HttpError(503), Completion("three")]
        server.set_handler(sequence(script, then=Completion("x")))
        assert ask(client) == "one"
        with pytest.raises(openai.InternalServerError):
            ask(client)
        assert [ask(client) for _ in range(3)] == ["three", "x", "x"]

    def test_exhausted_sequence_without_then_fails(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """An exhausted sequence without `then` raises, which the server turns into a 500."""
        server.set_handler(sequence([Completion("only")]))
        assert ask(client) == "only"
        with pytest.raises(openai.InternalServerError):
            ask(client)
        [error] = server.handler_errors
        assert isinstance(error, ScriptExhaustedError)

    def test_by_system_prompt_routes_on_system_text(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """by_system_prompt picks the first route whose key occurs in the system message, else the default."""
        routes = {"critic": static("critique"), "judge": static("score")}
        server.set_handler(by_system_prompt(routes, default=static("other")))
        assert ask(client, system="You are a strict judge.") == "score"
        assert ask(client, system="You are a critic and a judge.") == "critique"
        assert ask(client, system="You write prompts.") == "other"
        assert ask(client) == "other"

    def test_models_endpoint_and_unknown_paths(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """GET /v1/models lists fake-model; any other path answers 404 with an error body."""
        assert [model.id for model in client.models.list()] == ["fake-model"]
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{server.base_url}/nothing-here", timeout=5)
        assert caught.value.code == 404
        assert "error" in json.loads(caught.value.read())
        assert server.requests == []

    def test_keep_alive_connection_serves_several_requests(self, server: FakeOpenAI) -> None:
        """One HTTP/1.1 connection carries several requests, each answered with a Content-Length body."""
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            for text in ("a", "b", "c"):
                body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]})
                connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                assert response.status == 200
                assert response.getheader("Content-Length") is not None
                assert json.loads(response.read())["choices"][0]["message"]["content"] == "hello"
                assert not response.will_close
        finally:
            connection.close()
        assert [r.last_user_text for r in server.requests] == ["a", "b", "c"]

    def test_delayed_replies_wait_before_answering(self, server: FakeOpenAI, client: openai.OpenAI) -> None:
        """Completion.delay and HttpError.delay hold the answer back by about that long."""
        server.set_handler(sequence([Completion("late", delay=0.2), HttpError(400, delay=0.2)]))
        started = time.monotonic()
        assert ask(client) == "late"
        with pytest.raises(openai.BadRequestError):
            ask(client)
        assert time.monotonic() - started >= 0.4
