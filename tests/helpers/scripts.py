"""Scripted replies that make the fake OpenAI endpoint behave like each agent role's model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from typing import Any

from helpers.fake_openai import Completion, Handler, HttpError, RecordedRequest, Reply, by_system_prompt
from judgeopt.core.models import ModelsConfig

SUMMEVAL = ("coherence", "consistency", "fluency", "relevance")
JUDGE_SCORES = {"coherence": 4, "consistency": 5, "fluency": 3, "relevance": 2}

# Distinctive phrases of each role's system prompt (agents/prompts/*_system.txt).
JUDGE_MARK = "careful, consistent evaluator"
LOSS_MARK = "You evaluate the output of an automatic judge"
GRADIENT_MARK = "You give feedback on the instructions"
OPTIMIZER_MARK = "You improve the instructions"
EVALUATOR_MARK = "You assess the outputs of an automatic prompt-optimization process"
ARBITER_MARK = "You arbitrate between feedback"  # the optimizer service's conflict arbiter
# ...and of the study protocol's templates (agents/prompts/study_*_system.txt); the loss and the gradient share the
# study's backward system prompt and differ in their user message.
STUDY_JUDGE_MARK = "careful, calibrated evaluator"
STUDY_BACKWARD_MARK = "You are the gradient (feedback) engine"
STUDY_LOSS_MARK = "<INPUTS_TO_FUNCTION>"
STUDY_OPTIMIZER_MARK = "You are part of an optimization system that improves text"
STUDY_EVALUATOR_MARK = "You are an expert assessor of the feedback"
SPECIFIC_RATING = 9
DILUTED_RATING = 4
ADHERENCE_RATING = 7


def role_of(request: RecordedRequest) -> str:
    for role, mark in (
        ("judge", JUDGE_MARK),
        ("loss", LOSS_MARK),
        ("gradient", GRADIENT_MARK),
        ("optimizer", OPTIMIZER_MARK),
        ("evaluator", EVALUATOR_MARK),
        ("arbiter", ARBITER_MARK),
    ):
        if mark in request.system_text:
            return role
    return study_role_of(request) or "unknown"


def study_role_of(request: RecordedRequest) -> str | None:
    """The role of a request rendered from the study protocol's templates; ``None`` for any other request."""
    system = request.system_text
    if STUDY_JUDGE_MARK in system:
        return "judge"
    if STUDY_BACKWARD_MARK in system:
        return "loss" if STUDY_LOSS_MARK in request.last_user_text else "gradient"
    if STUDY_OPTIMIZER_MARK in system:
        return "optimizer"
    if STUDY_EVALUATOR_MARK in system:
        return "evaluator"
    return None


def _judge(_request: RecordedRequest) -> Reply:
    return Completion(json.dumps(JUDGE_SCORES), prompt_tokens=120, completion_tokens=20)


def _loss(_request: RecordedRequest) -> Reply:
    return Completion("The prediction is one point too high: the judge overrated the summary.")


def _gradient(_request: RecordedRequest) -> Reply:
    feedback = {
        "keep": "The 1-5 scale.",
        "problem": "The instruction does not say what a low score means.",
        "fix": "Describe the anchors of the scale.",
    }
    return Completion(json.dumps(feedback))


def _optimizer(request: RecordedRequest) -> Reply:
    if "Criteria and their current instructions" in request.last_user_text:
        return Completion(
            json.dumps({"instructions": {c: f"Rate {c} from 1 (poor) to 5 (excellent)." for c in SUMMEVAL}})
        )
    return Completion(json.dumps({"instruction": "Rate from 1 (poor) to 5 (excellent), anchoring each level."}))


def agent_roles_handler() -> Handler:
    """Answers each role's request the way a well-behaved model would, keyed on the role's system prompt."""
    return by_system_prompt(
        {JUDGE_MARK: _judge, LOSS_MARK: _loss, GRADIENT_MARK: _gradient, OPTIMIZER_MARK: _optimizer},
        default=_loss,
    )


def fake_models(base_url: str, **role_overrides: dict[str, object]) -> ModelsConfig:
    """Every role on ``base_url`` with no client retries and short timeouts, so failures show at once."""
    default = {
        "base_url": base_url,
        "model": "fake-model",
        "structured_output": "json_schema",
        "max_retries": 0,
        "timeout": 2.0,
    }
    return ModelsConfig(default=default, **role_overrides)


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12], 16)


def _schema(request: RecordedRequest) -> dict[str, Any]:
    fmt = request.body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    return schema if isinstance(schema, dict) else {}


def _score(spec: dict[str, Any], digest: int, *, lowest: bool) -> float:
    """A score on the criterion's own scale (its enum, or its min..max), picked by ``digest``."""
    if "enum" in spec:
        values: list[float] = spec["enum"]
        return values[0] if lowest else values[digest % len(values)]
    low, high = float(spec.get("minimum", 1)), float(spec.get("maximum", 5))
    return low if lowest else round(low + (digest % 101) / 100 * (high - low), 2)


def _rating_parts(text: str) -> tuple[str, list[str], str] | None:
    """A specificity request's target criterion, every criterion it names and its feedback text (judgeopt's or the
    study's rubric); ``None`` for an adherence request."""
    if "Target criterion:" in text:  # judgeopt's rubric
        target = text.split("Target criterion:", 1)[1].split("(", 1)[0].strip()
        others = text.split("Other criteria of the same task:", 1)[1].splitlines()[0]
        names = [target, *(n.strip() for n in others.split(","))]
        feedback = "\n".join(re.findall(r"<feedback n=\d+>(.*?)</feedback>", text, re.DOTALL))
        return target, names, feedback
    if "Possible tasks:" in text:  # the study's rubric
        target = text.split("Target task:", 1)[1].splitlines()[0].strip()
        names = [n.strip() for n in text.split("Possible tasks:", 1)[1].splitlines()[0].split(",")]
        feedback = text.split("Feedback:", 1)[1].split("Rate from 1 to 10", 1)[0]
        return target, names, feedback
    return None


def _rating(text: str) -> int:
    """Specificity 9 when the feedback speaks of the target criterion alone, 4 otherwise (read from the feedback's
    text, as an evaluator must: the request does not say which criteria a gradient was written for); adherence 7."""
    parts = _rating_parts(text)
    if parts is None:
        return ADHERENCE_RATING
    target, names, feedback = parts
    spoken_of = {n for n in names if re.search(rf"\b{re.escape(n)}\b", feedback)}
    return SPECIFIC_RATING if spoken_of == {target} else DILUTED_RATING


def _written_for(text: str) -> str:
    """The criteria a gradient request asks about, comma-separated: its <ROLE> (the study's templates) or its
    ``Criterion:`` / ``Criteria:`` header (judgeopt's)."""
    role = re.search(r"<ROLE>\n?(.*?)\n?</ROLE>", text, re.DOTALL)
    if role:
        named = re.search(r"'([^']+)' task", role.group(1)) or re.search(r"tasks \(([^)]*)\)", role.group(1))
        return named.group(1) if named else ""
    lines = text.splitlines()
    if lines and lines[0].startswith("Criterion: "):
        return lines[0].removeprefix("Criterion: ").split(" (", 1)[0]
    names = []
    for line in lines[1:]:
        if not line.startswith("- "):
            break
        names.append(line[2:].split(" (", 1)[0])
    return ", ".join(names)


def _judged_criteria(request: RecordedRequest) -> dict[str, Any]:
    """Per criterion the judge must score, its score's schema: from the response schema, or (free-text replies, as
    under the study profile) from the prompt's output-format block, else its instruction lines."""
    properties: dict[str, Any] = _schema(request).get("properties", {})
    if properties:
        return properties
    text = request.last_user_text
    formats = re.findall(r'^\s*"([A-Za-z0-9_-]+)": ([\d|.]+)', text, re.MULTILINE)
    if formats:
        return {name: {"enum": [int(v) for v in values.split("|")]} for name, values in formats}
    block = text.split("## Instructions:", 1)[-1].split("## Sample:", 1)[0]
    return {name: {} for name in re.findall(r"^- ([A-Za-z0-9_-]+): ", block, re.MULTILINE)}


def deterministic_handler(
    *, worse_marker: str | None = None, topical_gradients: bool = False, tie: bool = False
) -> Handler:
    """Replies that are pure functions of the request content, so a resumed run equals an undisturbed one.

    The judge scores each criterion from a hash of the whole prompt; an instruction containing ``worse_marker``
    makes the judge answer 1 everywhere (a candidate the gate must reject). With ``tie`` the judge answers the
    lowest score everywhere, whatever the prompt: every candidate ties with the prompt before it, so a gate accepts
    it, and since every accepted prompt is new, no judge call is ever served from the cache. The optimizer always
    proposes a new instruction derived from what it was shown (containing ``worse_marker`` when one is given). With
    ``topical_gradients`` a gradient names the criteria it was asked about, so that the scripted evaluator can tell
    a joint gradient from a per-criterion one by reading it. Replies are read from the response schema when there
    is one, else from the prompt (the study profile's free-text replies).
    """

    def handle(request: RecordedRequest) -> Reply:
        text = request.last_user_text
        role = role_of(request)
        study = study_role_of(request) is not None
        if role == "judge":
            bad = tie or (worse_marker is not None and worse_marker in text)
            scores = {n: _score(spec, _digest(text, n), lowest=bad) for n, spec in _judged_criteria(request).items()}
            return Completion(json.dumps(scores), prompt_tokens=len(text) // 4, completion_tokens=8)
        if role == "loss":
            return Completion(f"Critique {_digest(text) % 997}: the score is off.")
        if role == "gradient":
            h = f"{_digest(text) % 997}" + (f" about {_written_for(text)}" if topical_gradients else "")
            if study:  # the study's gradient answers in 3 plain paragraphs
                return Completion(f"keep {h}\n\nproblem {h}\n\nfix {h}")
            return Completion(json.dumps({"keep": f"keep {h}", "problem": f"problem {h}", "fix": f"fix {h}"}))
        if role == "optimizer":
            suffix = f" {worse_marker}" if worse_marker else ""
            schema = _schema(request)
            inner = schema.get("properties", {}).get("instructions", {})
            variable = re.search(r"<VARIABLE>\n?(.*?)\n?</VARIABLE>", text, re.DOTALL)
            if not inner and study and '{"instructions"' in text and variable:  # the study's joint ask, free text
                inner = {"required": list(json.loads(variable.group(1)))}
            if inner:
                names = inner.get("required", [])
                new = {n: f"Rate {n} from 1 to 5, revision {_digest(text, n) % 9973}.{suffix}" for n in names}
                return Completion(json.dumps({"instructions": new}))
            if study:  # the study's per-criterion optimizer answers in plain text
                return Completion(f"Rate from 1 to 5, revision {_digest(text) % 9973}.{suffix}")
            return Completion(
                json.dumps({"instruction": f"Rate from 1 to 5, revision {_digest(text) % 9973}.{suffix}"})
            )
        if role == "evaluator":
            if study:  # the study's evaluator answers a bare integer
                return Completion(str(_rating(text)))
            return Completion(json.dumps({"score": _rating(text), "rationale": "scripted"}))
        if role == "arbiter":  # compatible gradients: no conflict
            return Completion(json.dumps({"conflicts": [], "resolution": ""}))
        return HttpError(400, f"unknown role for system prompt {request.system_text[:40]!r}")

    return handle


def fail_first_time(handler: Handler, reply: Reply | None = None) -> Handler:
    """The first request with a given content fails (HTTP 500 by default); the same request again succeeds."""
    seen: set[str] = set()
    lock = threading.Lock()

    def handle(request: RecordedRequest) -> Reply:
        key = json.dumps(request.messages, sort_keys=True)
        with lock:
            first = key not in seen
            seen.add(key)
        return (reply or HttpError(500, "flaky")) if first else handler(request)

    return handle


def failing_role(handler: Handler, role: str) -> Handler:
    """Every request of ``role`` fails with HTTP 500; the others are answered by ``handler``."""

    def handle(request: RecordedRequest) -> Reply:
        return HttpError(500, f"{role} is down") if role_of(request) == role else handler(request)

    return handle


def with_latency(handler: Handler, seconds: float) -> Handler:
    """Every completion ``handler`` answers comes ``seconds`` late, as from a real model."""

    def handle(request: RecordedRequest) -> Reply:
        reply = handler(request)
        return dataclasses.replace(reply, delay=seconds) if isinstance(reply, Completion) else reply

    return handle
