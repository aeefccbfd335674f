"""The border between the ``judgeopt.v1`` contract and the agents' domain types: pure functions only.

``*_from_proto`` validate as they build (domain constructors raise ``InvalidRequestError``), so a malformed
request never reaches an agent; ``*_to_proto`` never fail.
"""

from __future__ import annotations

from judgeopt.agents.errors import InvalidRequestError
from judgeopt.agents.evaluator import AdherenceTask, Rating, SpecificityTask
from judgeopt.agents.types import (
    ArbitrateTask,
    Arbitration,
    Conversation,
    Criterion,
    CriterionEvidence,
    CriterionScore,
    Critique,
    CritiqueTask,
    Gradient,
    GradientTask,
    Instruction,
    JudgeLayout,
    JudgePrompt,
    ParseStatus,
    Prediction,
    PromptProtocol,
    Routing,
    Sample,
    ScoreTask,
    ScoringMethod,
    StepResult,
    StepTask,
    Usage,
)
from judgeopt.v1 import (
    common_pb2,
    evaluator_pb2,
    gradient_pb2,
    judge_pb2,
    loss_pb2,
    optimizer_pb2,
)

# --- contract → domain ---------------------------------------------------------------------------------------


def routing_from_proto(value: common_pb2.Routing.ValueType) -> Routing:
    match value:
        case common_pb2.ROUTING_PER_CRITERION:
            return Routing.PER_CRITERION
        case common_pb2.ROUTING_JOINT:
            return Routing.JOINT
        case _:
            raise InvalidRequestError("routing is unspecified: send ROUTING_PER_CRITERION or ROUTING_JOINT")


def layout_from_proto(value: judge_pb2.JudgeLayout.ValueType) -> JudgeLayout:
    match value:
        case judge_pb2.JUDGE_LAYOUT_UNSPECIFIED:
            return JudgeLayout.CRITERIA_FIRST
        case judge_pb2.JUDGE_LAYOUT_PREFIX_SHARED:
            return JudgeLayout.PREFIX_SHARED
        case _:
            raise InvalidRequestError(f"unknown judge layout {value} (JUDGE_LAYOUT_PREFIX_SHARED or unset)")


def protocol_from_proto(meta: common_pb2.RequestMeta) -> PromptProtocol:
    match meta.prompt_protocol:
        case "" | "judgeopt":
            return "judgeopt"
        case "study":
            return "study"
        case other:
            raise InvalidRequestError(f"unknown prompt protocol {other!r} (judgeopt, study)")


def parse_status_from_proto(value: common_pb2.ParseStatus.ValueType) -> ParseStatus:
    if value == common_pb2.PARSE_STATUS_UNSPECIFIED:
        raise InvalidRequestError("parse status is unspecified")
    return ParseStatus(int(value))


def criterion_from_proto(c: common_pb2.Criterion) -> Criterion:
    return Criterion(
        name=c.name,
        description=c.description,
        min_score=c.min_score,
        max_score=c.max_score,
        integer_scores=c.integer_scores,
    )


def criteria_from_proto(items: list[common_pb2.Criterion]) -> tuple[Criterion, ...]:
    return tuple(criterion_from_proto(c) for c in items)


def sample_from_proto(sample: common_pb2.Sample) -> Sample:
    if not sample.id:
        raise InvalidRequestError("sample id is empty")
    return Sample(id=sample.id, fields=tuple((f.name, f.text) for f in sample.fields))


def prompt_from_proto(prompt: common_pb2.JudgePrompt) -> JudgePrompt:
    return JudgePrompt(
        instructions=tuple(Instruction(i.criterion, i.text) for i in prompt.instructions),
        task_description=prompt.task_description,
        omit_output_format=prompt.omit_output_format,
    )


def evidence_from_proto(item: common_pb2.CriterionEvidence) -> CriterionEvidence:
    return CriterionEvidence(
        criterion=item.criterion,
        instruction=item.instruction if item.HasField("instruction") else None,
        prediction=item.prediction if item.HasField("prediction") else None,
        ground_truth=item.ground_truth if item.HasField("ground_truth") else None,
        verdict=item.verdict if item.HasField("verdict") else None,
        critique=item.critique if item.HasField("critique") else None,
    )


def gradient_from_proto(gradient: common_pb2.Gradient) -> Gradient:
    return Gradient(
        criteria=tuple(gradient.criteria),
        sample_id=gradient.sample_id,
        keep=gradient.keep,
        problem=gradient.problem,
        fix=gradient.fix,
        status=parse_status_from_proto(gradient.status),
        raw_output=gradient.raw_output,
    )


def score_task_from_proto(request: judge_pb2.ScoreRequest) -> ScoreTask:
    if not request.HasField("sample"):
        raise InvalidRequestError("score: no sample given")
    return ScoreTask(
        routing=routing_from_proto(request.routing),
        criteria=criteria_from_proto(list(request.criteria)),
        prompt=prompt_from_proto(request.prompt),
        sample=sample_from_proto(request.sample),
        protocol=protocol_from_proto(request.meta),
        layout=layout_from_proto(request.layout),
    )


def critique_task_from_proto(request: loss_pb2.CritiqueRequest) -> CritiqueTask:
    return CritiqueTask(
        routing=routing_from_proto(request.routing),
        criteria=criteria_from_proto(list(request.criteria)),
        sample_id=request.sample_id,
        evidence=tuple(evidence_from_proto(e) for e in request.evidence),
        sample=sample_from_proto(request.sample) if request.HasField("sample") else None,
        judge_output=request.judge_output if request.HasField("judge_output") else None,
        protocol=protocol_from_proto(request.meta),
    )


def gradient_task_from_proto(request: gradient_pb2.GradientRequest) -> GradientTask:
    return GradientTask(
        routing=routing_from_proto(request.routing),
        criteria=criteria_from_proto(list(request.criteria)),
        sample_id=request.sample_id,
        evidence=tuple(evidence_from_proto(e) for e in request.evidence),
        prompt=prompt_from_proto(request.prompt) if request.HasField("prompt") else None,
        sample=sample_from_proto(request.sample) if request.HasField("sample") else None,
        judge_output=request.judge_output if request.HasField("judge_output") else None,
        protocol=protocol_from_proto(request.meta),
    )


def step_task_from_proto(request: optimizer_pb2.StepRequest) -> StepTask:
    return StepTask(
        routing=routing_from_proto(request.routing),
        criteria=criteria_from_proto(list(request.criteria)),
        prompt=prompt_from_proto(request.prompt),
        gradients=tuple(gradient_from_proto(g) for g in request.gradients),
        conversations=tuple(Conversation(sample_from_proto(c.sample), c.output) for c in request.conversations),
        protocol=protocol_from_proto(request.meta),
        resolution=request.resolution if request.HasField("resolution") else None,
        max_tokens=dict(request.instruction_max_tokens),
    )


def arbitrate_task_from_proto(request: optimizer_pb2.ArbitrateRequest) -> ArbitrateTask:
    return ArbitrateTask(
        criteria=criteria_from_proto(list(request.criteria)),
        gradients=tuple(gradient_from_proto(g) for g in request.gradients),
    )


def specificity_task_from_proto(request: evaluator_pb2.SpecificityRequest) -> SpecificityTask:
    return SpecificityTask(
        criterion=criterion_from_proto(request.criterion),
        others=criteria_from_proto(list(request.other_criteria)),
        gradients=tuple(gradient_from_proto(g) for g in request.gradients),
        protocol=protocol_from_proto(request.meta),
    )


def adherence_task_from_proto(request: evaluator_pb2.AdherenceRequest) -> AdherenceTask:
    return AdherenceTask(
        criterion=criterion_from_proto(request.criterion),
        old_instruction=request.old_instruction,
        new_instruction=request.new_instruction,
        gradients=tuple(gradient_from_proto(g) for g in request.gradients),
        protocol=protocol_from_proto(request.meta),
    )


# --- domain → contract ---------------------------------------------------------------------------------------


def usage_to_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        llm_calls=usage.llm_calls,
        model_seconds=usage.model_seconds,
        model=usage.model,
        truncated_calls=usage.truncated_calls,
        cached_prompt_tokens=usage.cached_prompt_tokens,
    )


def parse_status_to_proto(status: ParseStatus) -> common_pb2.ParseStatus.ValueType:
    return common_pb2.ParseStatus.ValueType(int(status))


def _method_to_proto(method: ScoringMethod) -> common_pb2.ScoringMethod.ValueType:
    match method:
        case ScoringMethod.SAMPLED:
            return common_pb2.SCORING_METHOD_SAMPLED
        case ScoringMethod.LOGPROB_WEIGHTED:
            return common_pb2.SCORING_METHOD_LOGPROB_WEIGHTED
        case _:
            raise AssertionError(f"unhandled scoring method {method!r}")


def _score_to_proto(score: CriterionScore) -> common_pb2.CriterionScore:
    message = common_pb2.CriterionScore(
        criterion=score.criterion,
        status=parse_status_to_proto(score.status),
        method=_method_to_proto(score.method),
    )
    if score.value is not None:
        message.value = score.value
    return message


def score_response_to_proto(prediction: Prediction, usage: Usage) -> judge_pb2.ScoreResponse:
    return judge_pb2.ScoreResponse(
        prediction=common_pb2.Prediction(
            sample_id=prediction.sample_id,
            scores=[_score_to_proto(s) for s in prediction.scores],
            raw_output=prediction.raw_output,
            status=parse_status_to_proto(prediction.status),
        ),
        usage=usage_to_proto(usage),
    )


def critique_response_to_proto(critique: Critique, usage: Usage) -> loss_pb2.CritiqueResponse:
    return loss_pb2.CritiqueResponse(
        critique=common_pb2.Critique(
            criteria=list(critique.criteria),
            sample_id=critique.sample_id,
            text=critique.text,
            status=parse_status_to_proto(critique.status),
            raw_output=critique.raw_output,
        ),
        usage=usage_to_proto(usage),
    )


def gradient_to_proto(gradient: Gradient) -> common_pb2.Gradient:
    return common_pb2.Gradient(
        criteria=list(gradient.criteria),
        sample_id=gradient.sample_id,
        keep=gradient.keep,
        problem=gradient.problem,
        fix=gradient.fix,
        status=parse_status_to_proto(gradient.status),
        raw_output=gradient.raw_output,
    )


def gradient_response_to_proto(gradient: Gradient, usage: Usage) -> gradient_pb2.GradientResponse:
    return gradient_pb2.GradientResponse(gradient=gradient_to_proto(gradient), usage=usage_to_proto(usage))


def step_response_to_proto(result: StepResult, usage: Usage) -> optimizer_pb2.StepResponse:
    return optimizer_pb2.StepResponse(
        instructions=[common_pb2.Instruction(criterion=i.criterion, text=i.text) for i in result.instructions],
        status=parse_status_to_proto(result.status),
        raw_output=result.raw_output,
        usage=usage_to_proto(usage),
        length_rejected=list(result.length_rejected),
    )


def arbitrate_response_to_proto(result: Arbitration, usage: Usage) -> optimizer_pb2.ArbitrateResponse:
    return optimizer_pb2.ArbitrateResponse(
        conflicts=[optimizer_pb2.Conflict(criteria=list(c.criteria), issue=c.issue) for c in result.conflicts],
        resolution=result.resolution,
        status=parse_status_to_proto(result.status),
        raw_output=result.raw_output,
        usage=usage_to_proto(usage),
    )


def rating_response_to_proto(rating: Rating, usage: Usage) -> evaluator_pb2.RatingResponse:
    reply = evaluator_pb2.RatingResponse(
        status=parse_status_to_proto(rating.status),
        rationale=rating.rationale,
        raw_output=rating.raw_output,
        usage=usage_to_proto(usage),
    )
    if rating.score is not None:
        reply.score = rating.score
    return reply
