"""Each agent service as its own OS process over real gRPC, backed by the scripted OpenAI endpoint."""

from __future__ import annotations

import dataclasses
import json
import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers.fake_openai import Completion, FakeOpenAI, Garbage, Hang, HttpError, Reset, TokenLogprob, static
from helpers.messages import criteria, critique_request, meta, prompt, sample
from helpers.scripts import JUDGE_SCORES, SUMMEVAL, agent_roles_handler

from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.errors import AgentCallError
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.v1 import common_pb2, gradient_pb2, judge_pb2, optimizer_pb2

OK = common_pb2.PARSE_STATUS_OK


def score_request(routing: common_pb2.Routing.ValueType = common_pb2.ROUTING_JOINT) -> judge_pb2.ScoreRequest:
    return judge_pb2.ScoreRequest(meta=meta(), routing=routing, criteria=criteria(), prompt=prompt(), sample=sample())


class TestHealthAndReflection:
    async def test_every_service_answers_serving(self, fleet: ServiceFleet) -> None:
        """The standard grpc.health.v1 check answers SERVING for the server and for the role's own service."""
        names = {
            "judge": "judgeopt.v1.JudgeService",
            "loss": "judgeopt.v1.LossService",
            "gradient": "judgeopt.v1.GradientService",
            "optimizer": "judgeopt.v1.OptimizerService",
        }
        for role, address in fleet.addresses.items():
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", names[role]):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING, (role, service)

    async def test_reflection_lists_the_role_service(self, fleet: ServiceFleet) -> None:
        """Server reflection names the role's service, so grpcurl and friends can call it."""
        async with grpc.aio.insecure_channel(fleet.addresses["gradient"]) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            reply = await call.read()
            services = {s.name for s in reply.list_services_response.service}
        assert "judgeopt.v1.GradientService" in services
        assert "grpc.health.v1.Health" in services


class TestJudgeService:
    async def test_joint_call_scores_every_criterion_in_one_request(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """Joint routing: one model call, one in-range score per criterion, usage reported."""
        reply = await clients.score(score_request())
        assert [(s.criterion, s.value, s.status) for s in reply.prediction.scores] == [
            (n, JUDGE_SCORES[n], OK) for n in SUMMEVAL
        ]
        assert reply.prediction.sample_id == "s1"
        assert reply.usage.llm_calls == 1
        assert reply.usage.prompt_tokens == 120
        assert len(endpoint.requests) == 1

    async def test_judge_asks_for_schema_constrained_json(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """With the json_schema dialect the request carries a schema allowing only each criterion's scale."""
        await clients.score(score_request())
        fmt = endpoint.requests[0].body["response_format"]
        assert fmt["type"] == "json_schema"
        schema = fmt["json_schema"]["schema"]
        assert schema["required"] == list(SUMMEVAL)
        assert schema["properties"]["fluency"]["enum"] == [1, 2, 3, 4, 5]

    async def test_per_criterion_routing_makes_one_call_per_criterion_each_seeing_its_own_instruction(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """Per-criterion routing: K calls, and no call's prompt contains another criterion's instruction."""
        reply = await clients.score(score_request(common_pb2.ROUTING_PER_CRITERION))
        assert [s.criterion for s in reply.prediction.scores] == list(SUMMEVAL)
        assert all(s.status == OK for s in reply.prediction.scores)
        assert len(endpoint.requests) == len(SUMMEVAL)
        for request in endpoint.requests:
            seen = [n for n in SUMMEVAL if f"[{n}]" in request.last_user_text]
            assert len(seen) == 1
        assert reply.usage.llm_calls == len(SUMMEVAL)

    async def test_prefix_shared_layout_makes_k_calls_and_reports_cached_tokens(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """A joint request laid out prefix-shared: one model call per criterion, each asking for its criterion only,
        and the cached prompt tokens the endpoint reported, summed in the reply's usage."""
        script = agent_roles_handler()
        endpoint.set_handler(lambda request: dataclasses.replace(script(request), cached_tokens=50))
        request = score_request()
        request.layout = judge_pb2.JUDGE_LAYOUT_PREFIX_SHARED
        reply = await clients.score(request)
        assert [(s.criterion, s.status) for s in reply.prediction.scores] == [(n, OK) for n in SUMMEVAL]
        assert reply.usage.llm_calls == len(endpoint.requests) == len(SUMMEVAL)
        assert reply.usage.cached_prompt_tokens == 50 * len(SUMMEVAL)
        asked = sorted(r.body["response_format"]["json_schema"]["schema"]["required"][0] for r in endpoint.requests)
        assert asked == sorted(SUMMEVAL)

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            ("lorem ipsum dolor", [common_pb2.PARSE_STATUS_INVALID] * 4),
            ('{"coherence": 4, "consistency": 9, "fluency": 3}', [OK, common_pb2.PARSE_STATUS_OUT_OF_RANGE, OK, 4]),
            ('Sure!\n```json\n{"coherence": 4, "consistency": 5, "fluency": 3, "relevance": 2}\n```', [2] * 4),
        ],
        ids=["garbage", "out-of-range-and-missing", "fenced-with-preamble"],
    )
    async def test_bad_model_output_becomes_typed_parse_statuses(
        self, clients: AgentClients, endpoint: FakeOpenAI, content: str, expected: list[int]
    ) -> None:
        """Whatever the model writes, the reply arrives with a status per criterion and the raw text."""
        endpoint.set_handler(static(content))
        reply = await clients.score(score_request())
        assert [s.status for s in reply.prediction.scores] == expected
        assert reply.prediction.raw_output == content
        for score in reply.prediction.scores:
            assert score.HasField("value") == (score.status in (OK, common_pb2.PARSE_STATUS_REPAIRED))

    async def test_an_empty_reply_is_an_unreadable_answer_not_a_failure(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """No text at all, ended normally: the model's answer, unreadable on every criterion; one model call, no
        endpoint failure for the caller to retry."""
        endpoint.set_handler(static(""))
        reply = await clients.score(score_request())
        assert [s.status for s in reply.prediction.scores] == [common_pb2.PARSE_STATUS_INVALID] * len(SUMMEVAL)
        assert len(endpoint.requests) == 1 and reply.usage.llm_calls == 1

    async def test_a_reply_at_the_output_cap_is_truncated_however_complete(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """finish_reason "length": no score is taken from the reply, even a complete-looking one, and its usage
        counts the truncated call."""
        endpoint.set_handler(lambda _r: Completion(json.dumps(JUDGE_SCORES), finish_reason="length"))
        reply = await clients.score(score_request())
        assert [s.status for s in reply.prediction.scores] == [common_pb2.PARSE_STATUS_TRUNCATED] * len(SUMMEVAL)
        assert not any(s.HasField("value") for s in reply.prediction.scores)
        assert reply.usage.truncated_calls == 1

    async def test_truncated_json_keeps_what_was_written(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """A reply cut off mid-JSON yields the scores it contains and marks the rest as not parsed."""
        endpoint.set_handler(static('{"coherence": 4, "consistency": 5, "flu'))
        reply = await clients.score(score_request())
        statuses = {s.criterion: s.status for s in reply.prediction.scores}
        assert statuses["fluency"] == statuses["relevance"] == common_pb2.PARSE_STATUS_INVALID
        values = {s.criterion: s.value for s in reply.prediction.scores if s.HasField("value")}
        assert values == {"coherence": 4, "consistency": 5}

    async def test_logprobs_give_probability_weighted_scores(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """With logprobs on, a score is the probability-weighted mean over the allowed score tokens."""
        tokens = ['{"', "fluency", '":', " ", "4", "}"]
        top = {"4": [("4", math.log(0.6)), ("3", math.log(0.3)), ("x", math.log(0.1))]}
        logprobs = [TokenLogprob(t, 0.0, top.get(t, [(t, 0.0)])) for t in tokens]
        endpoint.set_handler(lambda _r: Completion('{"fluency": 4}', logprobs=logprobs))
        request = judge_pb2.ScoreRequest(
            meta=meta(),
            routing=common_pb2.ROUTING_JOINT,
            criteria=criteria(["fluency"]),
            prompt=prompt(["fluency"]),
            sample=sample(),
        )
        reply = await clients.score(request)
        (score,) = reply.prediction.scores
        assert score.method == common_pb2.SCORING_METHOD_LOGPROB_WEIGHTED
        assert score.value == pytest.approx((4 * 0.6 + 3 * 0.3) / 0.9)
        assert endpoint.requests[0].body["logprobs"] is True


class TestLossGradientOptimizer:
    async def test_per_criterion_critique_sees_only_what_it_was_sent(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """The loss prompt holds the prediction, truth and verdict, and no sample text or instruction."""
        reply = await clients.critique(critique_request())
        assert reply.critique.status == OK
        assert reply.critique.text
        assert list(reply.critique.criteria) == ["fluency"]
        text = endpoint.requests[0].last_user_text
        assert "Predicted score: 4" in text and "Correct score: 2" in text and "INCORRECT (difference: +2)" in text
        assert "Instruction" not in text and "<sample>" not in text

    async def test_joint_critique_covers_all_criteria(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """A joint loss call covers every criterion in one critique."""
        reply = await clients.critique(critique_request(SUMMEVAL))
        assert list(reply.critique.criteria) == list(SUMMEVAL)
        assert len(endpoint.requests) == 1
        assert all(f"[{n}]" in endpoint.requests[0].last_user_text for n in SUMMEVAL)

    async def test_gradient_returns_three_parts(self, clients: AgentClients, endpoint: FakeOpenAI) -> None:
        """The gradient answers keep / problem / fix and never a rewritten instruction."""
        request = gradient_pb2.GradientRequest(
            meta=meta(),
            routing=common_pb2.ROUTING_PER_CRITERION,
            criteria=criteria(["fluency"]),
            prompt=prompt(["fluency"]),
            sample=sample(),
            sample_id="s1",
            evidence=[common_pb2.CriterionEvidence(criterion="fluency", prediction=4, critique="Too high.")],
        )
        reply = await clients.gradient(request)
        gradient = reply.gradient
        assert gradient.status == OK
        assert gradient.keep and gradient.problem and gradient.fix
        assert gradient.sample_id == "s1"
        assert endpoint.requests[0].body["response_format"]["json_schema"]["schema"]["required"] == [
            "keep",
            "problem",
            "fix",
        ]

    async def test_per_criterion_step_rewrites_one_instruction(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """The optimizer returns one new, non-empty instruction that differs from the old one."""
        request = optimizer_pb2.StepRequest(
            meta=meta(),
            routing=common_pb2.ROUTING_PER_CRITERION,
            criteria=criteria(["fluency"]),
            prompt=prompt(["fluency"]),
            gradients=[
                common_pb2.Gradient(criteria=["fluency"], sample_id="s1", keep="k", problem="p", fix="f", status=OK)
            ],
        )
        reply = await clients.step(request)
        assert reply.status == OK
        (instruction,) = reply.instructions
        assert instruction.criterion == "fluency"
        assert instruction.text and instruction.text != "Rate from 1 to 5. [fluency]"
        assert "Problem: p" in endpoint.requests[0].last_user_text

    async def test_joint_step_rewrites_the_whole_set(self, clients: AgentClients) -> None:
        """A joint optimizer call returns one new instruction per criterion, in criterion order."""
        request = optimizer_pb2.StepRequest(
            meta=meta(), routing=common_pb2.ROUTING_JOINT, criteria=criteria(), prompt=prompt(), gradients=[]
        )
        reply = await clients.step(request)
        assert reply.status == OK
        assert [i.criterion for i in reply.instructions] == list(SUMMEVAL)
        assert all(i.text.startswith(f"Rate {i.criterion}") for i in reply.instructions)

    async def test_unusable_optimizer_reply_keeps_the_old_instruction(
        self, clients: AgentClients, endpoint: FakeOpenAI
    ) -> None:
        """A reply with no usable instruction is a parse status, and the caller's instruction comes back."""
        endpoint.set_handler(static('{"instruction": "<your improved instruction>"}'))
        request = optimizer_pb2.StepRequest(
            meta=meta(),
            routing=common_pb2.ROUTING_PER_CRITERION,
            criteria=criteria(["fluency"]),
            prompt=prompt(["fluency"]),
        )
        reply = await clients.step(request)
        assert reply.status == common_pb2.PARSE_STATUS_INVALID
        assert reply.instructions[0].text == "Rate from 1 to 5. [fluency]"


class TestBadRequests:
    @pytest.mark.parametrize(
        ("mutate", "message"),
        [
            (lambda r: r.evidence.append(common_pb2.CriterionEvidence(criterion="humour")), "not defined"),
            (lambda r: r.ClearField("criteria"), "no criteria given"),
            (lambda r: r.criteria[0].MergeFrom(common_pb2.Criterion(min_score=5, max_score=1)), "inverted"),
            (lambda r: setattr(r, "routing", common_pb2.ROUTING_UNSPECIFIED), "routing"),
        ],
        ids=["unknown-criterion", "no-criteria", "inverted-range", "no-routing"],
    )
    async def test_malformed_loss_request_is_invalid_argument(
        self, clients: AgentClients, endpoint: FakeOpenAI, mutate: object, message: str
    ) -> None:
        """A malformed request is refused with INVALID_ARGUMENT naming the problem, before any model call."""
        request = critique_request()
        mutate(request)  # type: ignore[operator]
        with pytest.raises(AgentCallError) as caught:
            await clients.critique(request)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(caught.value)
        assert endpoint.requests == []

    async def test_empty_instruction_and_foreign_instruction_are_refused(self, clients: AgentClients) -> None:
        """The judge refuses an empty instruction and an instruction for a criterion the request does not define."""
        empty = score_request()
        empty.prompt.instructions[0].text = "  "
        foreign = score_request()
        foreign.prompt.instructions.append(common_pb2.Instruction(criterion="humour", text="Be funny."))
        for request, message in ((empty, "is empty"), (foreign, "not defined")):
            with pytest.raises(AgentCallError) as caught:
                await clients.score(request)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert message in str(caught.value)

    async def test_optimizer_gradient_for_unknown_criterion_is_refused(self, clients: AgentClients) -> None:
        """A gradient naming a criterion outside the request is INVALID_ARGUMENT."""
        request = optimizer_pb2.StepRequest(
            meta=meta(),
            routing=common_pb2.ROUTING_PER_CRITERION,
            criteria=criteria(["fluency"]),
            prompt=prompt(["fluency"]),
            gradients=[common_pb2.Gradient(criteria=["humour"], status=OK)],
        )
        with pytest.raises(AgentCallError) as caught:
            await clients.step(request)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


class TestEndpointFailures:
    @pytest.mark.parametrize(
        ("reply", "code"),
        [
            (HttpError(500, "boom"), grpc.StatusCode.UNAVAILABLE),
            (HttpError(429, "slow down", headers={"Retry-After": "0"}), grpc.StatusCode.UNAVAILABLE),
            (HttpError(400, "context length exceeded"), grpc.StatusCode.FAILED_PRECONDITION),
            (Reset(), grpc.StatusCode.UNAVAILABLE),
            (Garbage(b"<html>bad gateway</html>"), grpc.StatusCode.UNAVAILABLE),
            (Hang(4.0), grpc.StatusCode.DEADLINE_EXCEEDED),
        ],
        ids=["http-500", "http-429", "http-400", "connection-reset", "non-json-body", "timeout"],
    )
    async def test_endpoint_failure_maps_to_status_and_service_keeps_serving(
        self, clients: AgentClients, endpoint: FakeOpenAI, reply: object, code: grpc.StatusCode
    ) -> None:
        """An endpoint failure becomes the documented status code; the next call on the service succeeds."""
        endpoint.set_handler(lambda _r: reply)  # type: ignore[arg-type, return-value]
        with pytest.raises(AgentCallError) as caught:
            await clients.critique(critique_request())
        assert caught.value.code == code
        endpoint.set_handler(static("A fine critique."))
        recovered = await clients.critique(critique_request())
        assert recovered.critique.text == "A fine critique."

    async def test_caller_deadline_is_honoured(self, fleet: ServiceFleet, endpoint: FakeOpenAI) -> None:
        """A call whose gRPC deadline is shorter than the model's answer ends in DEADLINE_EXCEEDED on time."""
        endpoint.set_handler(lambda _r: Hang(1.5))
        async with grpc.aio.insecure_channel(fleet.addresses["loss"]) as channel:
            from judgeopt.v1 import loss_pb2_grpc

            stub = loss_pb2_grpc.LossServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Critique(critique_request(), timeout=0.3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


class TestServiceLogs:
    async def test_json_log_line_per_rpc_carries_the_request_id_and_no_document(
        self, clients: AgentClients, fleet: ServiceFleet, endpoint: FakeOpenAI
    ) -> None:
        """Each RPC logs one JSON line with its request id, code and latency; sample text never appears."""
        request = score_request()
        request.sample.fields[0].text = "SECRET-ARTICLE-TEXT " * 20
        await clients.score(request)
        log_text = (fleet.log_dir / "judge.log").read_text()
        events = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
        mine = [e for e in events if e.get("request_id") == request.meta.request_id]
        assert any(e["event"] == "rpc" and e["code"] == "OK" and "latency_ms" in e for e in mine)
        assert "SECRET-ARTICLE-TEXT" not in log_text
