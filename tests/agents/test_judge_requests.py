"""What the judge sends and reads over real HTTP (the scripted endpoint, in process): its penalty settings, the
prefix-shared layout, logprob weighting on llama.cpp- and OpenAI-style replies, and cached prompt tokens."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, TokenLogprob
from structlog.testing import capture_logs

from judgeopt.agents.judge import JudgeAgent
from judgeopt.agents.model_client import ModelRunner
from judgeopt.agents.types import (
    Criterion,
    Instruction,
    JudgeLayout,
    JudgePrompt,
    Routing,
    Sample,
    ScoreTask,
    ScoringMethod,
)
from judgeopt.core.models import ModelsConfig, RoleModelConfig

NAMES = ("coherence", "consistency", "fluency", "relevance")
CRITERIA = tuple(Criterion(n) for n in NAMES)
INSTRUCTIONS = {n: f"Instruction-{n}: judge the {n} of the summary." for n in NAMES}
PROMPT = JudgePrompt(tuple(Instruction(n, text) for n, text in INSTRUCTIONS.items()))
SAMPLE = Sample("s1", (("article", "The council met on Monday. " * 20), ("summary", "The council met.")))


def task(layout: JudgeLayout = JudgeLayout.CRITERIA_FIRST, routing: Routing = Routing.JOINT) -> ScoreTask:
    return ScoreTask(routing, CRITERIA, PROMPT, SAMPLE, layout=layout)


def _asked(request: RecordedRequest) -> list[str]:
    """The criteria a judge request's answer schema asks for (either structured-output dialect)."""
    fmt = request.body["response_format"]
    return list(fmt.get("json_schema", fmt)["schema"]["required"])


def scores_reply(request: RecordedRequest, **completion: Any) -> Completion:
    """``{"<criterion>": 3, ...}`` for the criteria the request asks for, one token per piece, 60/40 between 3 and 4
    at every score token."""
    tokens = [TokenLogprob("{", 0.0)]
    for index, name in enumerate(_asked(request)):
        tokens += [TokenLogprob(f'{", " if index else ""}"{name}": ', 0.0)]
        tokens += [TokenLogprob("3", math.log(0.6), [("3", math.log(0.6)), ("4", math.log(0.4))])]
    tokens.append(TokenLogprob("}", 0.0))
    return Completion("".join(t.token for t in tokens), logprobs=tokens, **completion)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(scores_reply) as running:
        yield running


def judge_config(server: FakeOpenAI, **judge: Any) -> RoleModelConfig:
    default = {"base_url": server.base_url, "model": "m", "structured_output": "json_schema", "max_retries": 0}
    return ModelsConfig(default=default, judge=judge).for_role("judge")


@pytest.fixture
async def runner(server: FakeOpenAI) -> AsyncIterator[ModelRunner]:
    running = ModelRunner("judge", judge_config(server, logprobs=True))
    yield running
    await running.close()


class TestPenalties:
    async def test_judge_turns_repetition_penalties_off_where_the_endpoint_is_llama_cpp(
        self, server: FakeOpenAI
    ) -> None:
        """llama.cpp's dialect: the judge sends repeat_penalty 1.0 and zero frequency/presence penalties."""
        config = judge_config(server, structured_output="json_object_schema")
        runner = ModelRunner("judge", config)
        try:
            await JudgeAgent(runner).score(task())
        finally:
            await runner.close()
        (request,) = server.requests
        assert request.body["repeat_penalty"] == 1.0
        assert request.body["frequency_penalty"] == 0.0 and request.body["presence_penalty"] == 0.0

    async def test_openai_dialect_gets_no_llama_cpp_field(self, runner: ModelRunner, server: FakeOpenAI) -> None:
        """Elsewhere no repeat_penalty is sent (OpenAI refuses unknown fields); the OpenAI penalties are 0."""
        await JudgeAgent(runner).score(task())
        (request,) = server.requests
        assert "repeat_penalty" not in request.body
        assert request.body["frequency_penalty"] == 0.0 and request.body["presence_penalty"] == 0.0

    def test_penalties_are_set_per_role(self) -> None:
        """A role's own section overrides the judge's defaults; other roles send no penalty unless told."""
        models = ModelsConfig(
            default={"structured_output": "json_object_schema"},
            judge={"repeat_penalty": 1.1, "frequency_penalty": 0.2},
        )
        judge, loss = models.for_role("judge"), models.for_role("loss")
        assert (judge.repeat_penalty, judge.frequency_penalty, judge.presence_penalty) == (1.1, 0.2, 0.0)
        assert (loss.repeat_penalty, loss.frequency_penalty, loss.presence_penalty) == (None, None, None)
        assert judge.extra_body_with_penalty() == {"repeat_penalty": 1.1}

    def test_embedded_model_judge_is_unpenalised(self) -> None:
        judge = ModelsConfig().for_role("judge", local_base_url="http://127.0.0.1:1/v1")
        assert judge.repeat_penalty == 1.0


class TestLogprobWeighting:
    @pytest.mark.parametrize("with_bytes", [False, True], ids=["llama.cpp-bytes-null", "openai-token-and-bytes"])
    async def test_weighted_scores_from_reply_token_text(
        self, runner: ModelRunner, server: FakeOpenAI, with_bytes: bool
    ) -> None:
        """Each score is 0.6*3 + 0.4*4 = 3.4, whether the alternatives carry bytes or only their token text."""
        server.set_handler(lambda request: scores_reply(request, logprob_bytes=with_bytes))
        prediction, _ = await JudgeAgent(runner).score(task())
        assert [s.method for s in prediction.scores] == [ScoringMethod.LOGPROB_WEIGHTED] * len(NAMES)
        assert [s.value for s in prediction.scores] == pytest.approx([3.4] * len(NAMES))

    async def test_reply_without_logprobs_stays_sampled_and_warns_once(
        self, runner: ModelRunner, server: FakeOpenAI
    ) -> None:
        server.set_handler(lambda request: Completion(scores_reply(request).content))
        agent = JudgeAgent(runner)
        with capture_logs() as logs:
            first, _ = await agent.score(task())
            await agent.score(task())
        assert [s.method for s in first.scores] == [ScoringMethod.SAMPLED] * len(NAMES)
        assert [s.value for s in first.scores] == [3.0] * len(NAMES)
        warnings = [entry for entry in logs if entry["event"] == "judge.logprobs_unusable"]
        assert len(warnings) == 1 and warnings[0]["criteria"] == sorted(NAMES)


class TestPrefixSharedLayout:
    async def test_shared_prefix_is_byte_identical_and_the_criterion_comes_last(
        self, runner: ModelRunner, server: FakeOpenAI
    ) -> None:
        """K calls for one row: the same system message, a user message identical up to the end of the sample,
        and after it one criterion's instruction and output field, no other criterion's."""
        prediction, usage = await JudgeAgent(runner).score(task(JudgeLayout.PREFIX_SHARED))
        assert [s.criterion for s in prediction.scores] == list(NAMES)
        assert usage.llm_calls == len(NAMES) == len(server.requests)
        assert len({r.system_text for r in server.requests}) == 1
        by_criterion = {_asked(r)[0]: r.last_user_text for r in server.requests}
        assert sorted(by_criterion) == sorted(NAMES) and all(len(_asked(r)) == 1 for r in server.requests)
        texts = list(by_criterion.values())
        shared = texts[0][: next(i for i, chars in enumerate(zip(*texts, strict=False)) if len(set(chars)) > 1)]
        assert shared.endswith("</sample>\n\nCriterion:\n## ")
        assert SAMPLE.fields[0][1].strip() in shared
        for name, text in by_criterion.items():
            own = text[len(shared) - len("## ") :]
            assert INSTRUCTIONS[name] in own and f'"{name}"' in own
            assert [n for n in NAMES if INSTRUCTIONS[n] in text] == [name]

    async def test_first_call_is_answered_before_the_others_are_sent(
        self, runner: ModelRunner, server: FakeOpenAI
    ) -> None:
        """The first criterion's call goes alone, so the endpoint has cached the prefix when the rest arrive."""
        server.set_handler(lambda request: scores_reply(request, delay=0.3 if _asked(request) == ["coherence"] else 0))
        await JudgeAgent(runner).score(task(JudgeLayout.PREFIX_SHARED))
        first, *rest = sorted(server.requests, key=lambda r: r.received_at)
        assert _asked(first) == ["coherence"]
        assert all(r.received_at - first.received_at >= 0.25 for r in rest)

    async def test_criteria_first_layout_puts_criteria_before_the_sample(
        self, runner: ModelRunner, server: FakeOpenAI
    ) -> None:
        """The default layout is unchanged: per-criterion routing puts the criterion before the sample."""
        await JudgeAgent(runner).score(task(routing=Routing.PER_CRITERION))
        assert len(server.requests) == len(NAMES)
        for request in server.requests:
            text = request.last_user_text
            assert text.index(INSTRUCTIONS[_asked(request)[0]]) < text.index("<sample>")


class TestCachedTokens:
    async def test_cached_prompt_tokens_are_summed_where_reported(
        self, runner: ModelRunner, server: FakeOpenAI
    ) -> None:
        """The endpoint reports cached tokens for every call after the first: the usage adds them up."""
        server.set_handler(
            lambda request: scores_reply(request, cached_tokens=0 if _asked(request) == ["coherence"] else 80)
        )
        _, usage = await JudgeAgent(runner).score(task(JudgeLayout.PREFIX_SHARED))
        assert usage.cached_prompt_tokens == 80 * (len(NAMES) - 1)

    async def test_endpoint_that_does_not_report_counts_zero(self, runner: ModelRunner) -> None:
        _, usage = await JudgeAgent(runner).score(task(JudgeLayout.PREFIX_SHARED))
        assert usage.cached_prompt_tokens == 0 and usage.llm_calls == len(NAMES)
