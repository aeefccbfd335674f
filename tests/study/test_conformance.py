"""Conformance of the ``study`` prompt protocol with the study's per-call protocol, rule by rule.

Each preset runs one training step under ``prompt_protocol: study`` with its study policy (the preset plus the
optimizer's conversations; Single-Task in the joint forms on each one-criterion track) against the scripted
endpoint; every request the model endpoint received is checked section by section against
``docs/study-protocol.md`` (rule ids J1…O6 below are that page's). The checks are structural: tags, labels, order,
counts and which criteria and values appear, never the templates' wording. The default protocol fails them (see
``test_default_protocol_does_not_conform``), so the suite has teeth.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.fake_openai import Completion, FakeOpenAI, Handler, RecordedRequest, Reply
from helpers.runs import DATASET, final_prompts, write_config
from helpers.scripts import deterministic_handler, role_of, study_role_of

from judgeopt.cli import main
from judgeopt.orchestrator.data.records import SUMMEVAL_CRITERIA
from judgeopt.orchestrator.engine.policy import study_policy
from judgeopt.orchestrator.study.reporting import write_report
from judgeopt.v1 import common_pb2

PRESETS = ("SSS", "SSC", "SCC", "CCC", "single")
B = 3
CRITERIA = tuple(sorted(c.name for c in SUMMEVAL_CRITERIA))
K = len(CRITERIA)
INITIAL = "Rate from 1 to 5."
"""The initial instruction of every SummEval criterion (the study's too)."""
VERDICT = re.compile(r"CORRECT|INCORRECT \(difference: \d+(\.\d+)?\)|INCORRECT \(no valid score\)")
NUMBER = re.compile(r"\d+(\.\d+)?")
TRUNCATED = int(common_pb2.PARSE_STATUS_TRUNCATED)


@dataclass(frozen=True)
class Run:
    mode: str
    requests: dict[str, list[RecordedRequest]]
    """Per role, every request the model endpoint received (the judge's from training and evaluation alike)."""
    run_dir: Path


def run_study(
    tmp_path: Path, mode: str, *, handler: Handler | None = None, steps: int = 1, protocol: str = "study"
) -> Run:
    policy_file = tmp_path / f"{mode}.policy.yaml"
    policy_file.write_text(yaml.safe_dump(study_policy(mode).model_dump(mode="json")))
    with FakeOpenAI(handler or deterministic_handler()) as server:
        config = write_config(
            tmp_path / "run.yaml",
            server.base_url,
            steps=steps,
            batch_size=B,
            concurrency=1,
            prompt_protocol=protocol,
            policy_file=str(policy_file),
            dataset=DATASET,
        )
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        received = list(server.requests)
    requests: dict[str, list[RecordedRequest]] = {}
    for request in received:
        requests.setdefault(role_of(request), []).append(request)
    return Run(mode, requests, run_dir)


@pytest.fixture(scope="module", params=PRESETS)
def study_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    mode: str = request.param
    return run_study(tmp_path_factory.mktemp(mode), mode)


# --- reading a rendered prompt ------------------------------------------------------------------------------------


def tag(text: str, name: str) -> str:
    """The content of the first ``<name>`` block."""
    match = re.search(rf"<{name}>\n?(.*?)\n?</{name}>", text, re.DOTALL)
    assert match is not None, f"no <{name}> block"
    return match.group(1)


def tags(text: str, name: str) -> list[str]:
    return re.findall(rf"<{name}>\n?(.*?)\n?</{name}>", text, re.DOTALL)


def in_order(text: str, *marks: str) -> None:
    positions = [text.find(m) for m in marks]
    assert all(p >= 0 for p in positions), [m for m, p in zip(marks, positions, strict=True) if p < 0]
    assert positions == sorted(positions), marks


def instruction_lines(text: str) -> list[str]:
    """The criteria of the ``- <criterion>: <instruction>`` lines under ``## Instructions:``."""
    block = text.split("## Instructions:", 1)[1].split("## Sample:", 1)[0]
    return re.findall(r"^- ([a-z_]+): ", block, re.MULTILINE)


def check_sample_block(text: str) -> None:
    """J5: the Summary first, then the Source Text."""
    in_order(text, "Summary: ", "Source Text: ")


def check_judge_prompt(text: str, criteria: tuple[str, ...]) -> None:
    """J1–J6 on one judge user message."""
    in_order(text, "## Task", "\n1. ", "\n2. ", "## Output format", "## Instructions:", "## Sample:", "## Response:")
    assert text.rstrip().endswith("## Response:")
    output_format = text.split("## Output format", 1)[1].split("## Instructions:", 1)[0]
    assert re.findall(r'"([a-z_]+)":', output_format) == list(criteria)
    assert instruction_lines(text) == list(criteria)
    sample = text.split("## Sample:", 1)[1]
    check_sample_block(sample)


def no_definitions(request: RecordedRequest) -> None:
    whole = request.system_text + request.last_user_text
    for spec in SUMMEVAL_CRITERIA:
        assert spec.description not in whole, spec.name


def expected_tracks(mode: str) -> list[tuple[str, ...]]:
    return [(c,) for c in CRITERIA] if mode == "single" else [CRITERIA]


def letters(mode: str) -> str:
    """The forms of the loss, gradient and optimizer calls: Single-Task runs CCC on each one-criterion track."""
    return "CCC" if mode == "single" else mode


def joint_at(mode: str, stage: str) -> bool:
    return letters(mode)[("loss", "gradient", "optimizer").index(stage)] == "C"


def expected_calls(mode: str, stage: str) -> int:
    """One step's calls of ``stage`` over every track: per sample (loss, gradient) or per step (optimizer), once per
    track in the joint form, once per criterion in the per-criterion form."""
    per_call = 1 if stage == "optimizer" else B
    tracks = expected_tracks(mode)
    return per_call * (len(tracks) if joint_at(mode, stage) else sum(len(t) for t in tracks))


def named_in(text: str) -> tuple[str, ...]:
    """The criteria a text names, in track order."""
    return tuple(c for c in CRITERIA if re.search(rf"\b{c}\b", text))


# --- the judge ----------------------------------------------------------------------------------------------------


def test_judge_prompt_has_the_studys_sections_in_order(study_run: Run) -> None:
    """J1–J6: directive with the two-step procedure, output format, instructions, Summary before Source Text."""
    judge = study_run.requests["judge"]
    assert judge
    tracks = set(expected_tracks(study_run.mode))
    for request in judge:
        text = request.last_user_text
        criteria = tuple(instruction_lines(text))
        assert criteria in tracks
        check_judge_prompt(text, criteria)


def test_no_role_sees_criterion_definitions(study_run: Run) -> None:
    """Criteria are named, never defined, in every role's messages."""
    for requests in study_run.requests.values():
        for request in requests:
            no_definitions(request)
    assert set(study_run.requests) == {"judge", "loss", "gradient", "optimizer"}


# --- the loss -----------------------------------------------------------------------------------------------------


def test_loss_sees_prediction_truth_and_verdict_only(study_run: Run) -> None:
    """L1/L2: per-criterion K×B calls with one |d| verdict, or B joint calls with every criterion and an Overall
    line; never the sample, the judge's prompt or its output."""
    loss = study_run.requests["loss"]
    joint = joint_at(study_run.mode, "loss")
    assert len(loss) == expected_calls(study_run.mode, "loss")
    for request in loss:
        text = request.last_user_text
        for absent in ("Summary:", "Source Text:", "<LM_INPUT>", "<LM_SYSTEM_PROMPT>", INITIAL):
            assert absent not in text
        in_order(text, "<ROLE>", "<INPUTS_TO_FUNCTION>", "<OUTPUT_OF_FUNCTION>", "<OBJECTIVE_FUNCTION>", "<VARIABLE>")
        verdicts = tag(text, "OUTPUT_OF_FUNCTION").splitlines()
        if joint:
            track = named_in(tag(text, "ROLE"))
            assert track in expected_tracks(study_run.mode)
            assert tuple(line.split(":", 1)[0] for line in verdicts[:-1]) == track
            for line in verdicts[:-1]:
                assert VERDICT.fullmatch(line.split(": ", 1)[1])
            correct = sum(line.endswith(": CORRECT") for line in verdicts[:-1])
            assert verdicts[-1] == f"Overall: {correct} of {len(track)} correct"
        else:
            (line,) = verdicts
            assert VERDICT.fullmatch(line), line
            named = [c for c in CRITERIA if c in tag(text, "ROLE")]
            assert len(named) == 1
            inputs = tag(text, "INPUTS_TO_FUNCTION")
            assert len(NUMBER.findall(inputs)) == 2
        assert not re.search(r"difference: [+-]", "\n".join(verdicts))  # |d|: no sign


# --- the gradient -------------------------------------------------------------------------------------------------


def test_gradient_sees_the_conversation_in_textgrad_tags(study_run: Run) -> None:
    """G1–G3: tags in order, the system prompt filtered to the call's criterion (per-criterion) or whole (joint),
    Summary before Source Text, that criterion's score or the raw joint JSON, critiques labelled, 3 paragraphs."""
    gradient = study_run.requests["gradient"]
    joint = joint_at(study_run.mode, "gradient")
    assert len(gradient) == expected_calls(study_run.mode, "gradient")
    for request in gradient:
        text = request.last_user_text
        sections = ("<ROLE>", "<LM_SYSTEM_PROMPT>", "<LM_INPUT>", "<LM_OUTPUT>", "<OBJECTIVE_FUNCTION>", "<VARIABLE>")
        in_order(text, *sections)
        assert "exactly 3 paragraphs" in text
        assert "response_format" not in request.body
        check_sample_block(tag(text, "LM_INPUT"))
        system = tag(text, "LM_SYSTEM_PROMPT")
        shown = instruction_lines(system + "\n## Sample:")
        objective = tag(text, "OBJECTIVE_FUNCTION")
        if joint:
            track = named_in(tag(text, "ROLE"))
            assert track in expected_tracks(study_run.mode)
            assert shown == list(track)
            assert set(json.loads(tag(text, "LM_OUTPUT"))) == set(track)
            labels = re.findall(r"^Feedback for ([a-z_, ]+):", objective, re.MULTILINE)
            if letters(study_run.mode)[0] == "C":  # the one combined critique, deduplicated
                assert labels == [", ".join(track)]
            else:
                assert labels == list(track)
            assert re.findall(r"^- ([a-z_]+): ", tag(text, "VARIABLE"), re.MULTILINE) == list(track)
        else:
            assert len(shown) == 1
            (own,) = shown
            assert f"'{own}'" in tag(text, "ROLE")
            assert NUMBER.fullmatch(tag(text, "LM_OUTPUT"))
            assert "Feedback for" not in objective
            assert tag(text, "VARIABLE") == INITIAL


# --- the optimizer ------------------------------------------------------------------------------------------------


def feedback_groups(feedback: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for block in feedback.split("\n---\n"):
        header, _, body = block.partition("\n")
        match = re.fullmatch(r"Feedback for task '([a-z_]+)':", header)
        assert match is not None, header
        groups[match.group(1)] = re.split(r"\n(?=- )", body.strip())
    return groups


def test_optimizer_sees_conversations_and_feedback(study_run: Run) -> None:
    """O1–O4: role, variable, context with the system prompt, B conversations and the feedback; plain-text ask
    per criterion, one JSON object jointly, with the copied joint gradients under every task header."""
    optimizer = study_run.requests["optimizer"]
    joint = joint_at(study_run.mode, "optimizer")
    assert len(optimizer) == expected_calls(study_run.mode, "optimizer")
    for request in optimizer:
        text = request.last_user_text
        assert "specific to its own criterion" not in request.system_text + text  # O4
        in_order(text, "<ROLE>", "<VARIABLE>", "<CONTEXT>", "<LM_SYSTEM_PROMPT>", "<CONVERSATION>", "<FEEDBACK>")
        context = tag(text, "CONTEXT")
        conversations = tags(context, "CONVERSATION")
        assert len(conversations) == B
        for conversation in conversations:
            check_sample_block(tag(conversation, "LM_INPUT"))
        outputs = [tag(c, "LM_OUTPUT") for c in conversations]
        feedback = tag(text, "FEEDBACK")
        shown = instruction_lines(tag(text, "LM_SYSTEM_PROMPT") + "\n## Sample:")
        if joint:
            track = tuple(c for c in CRITERIA if c in json.loads(tag(text, "VARIABLE")))
            assert track in expected_tracks(study_run.mode)
            assert shown == list(track)
            assert all(set(json.loads(o)) == set(track) for o in outputs)
            assert '{"instructions":' in text.split("</CONTEXT>", 1)[1]
            assert "response_format" in request.body
            groups = feedback_groups(feedback)
            assert list(groups) == list(track)
            assert all(len(bullets) == B for bullets in groups.values())
            distinct = {tuple(bullets) for bullets in groups.values()}
            # SCC/CCC: the same B joint gradients repeated under every header; SSC: each criterion its own.
            assert len(distinct) == (1 if letters(study_run.mode)[1] == "C" else len(track))
        else:
            (own,) = shown
            assert f"'{own}'" in tag(text, "ROLE")
            assert all(NUMBER.fullmatch(o) for o in outputs)
            assert tag(text, "VARIABLE") == INITIAL
            assert "Feedback for" not in feedback
            assert len(re.findall(r"^- ", feedback, re.MULTILINE)) == B
            assert f"'{own}'" in text.split("</CONTEXT>", 1)[1]
            assert "response_format" not in request.body


def test_contract_carries_the_conversations(study_run: Run) -> None:
    """The optimizer's requests carried conversations: its own criterion's per criterion, shared when joint."""
    ledger = study_run.run_dir / "services"
    entries = [json.loads(line) for p in ledger.glob("optimizer*.ledger.jsonl") for line in p.read_text().splitlines()]
    joint = joint_at(study_run.mode, "optimizer")
    carried = sorted(f for e in entries for f in e["fields"] if f.endswith(":conversations"))
    tracks = len(expected_tracks(study_run.mode))
    assert carried == (["*:conversations"] * tracks if joint else sorted(f"{c}:conversations" for c in CRITERIA))


# --- reply handling -----------------------------------------------------------------------------------------------


def answering(change: Callable[[RecordedRequest, Reply], Reply]) -> Handler:
    scripted = deterministic_handler()
    return lambda request: change(request, scripted(request))


def test_plain_text_per_criterion_answers_are_taken(tmp_path: Path) -> None:
    """O2: the per-criterion optimizer answers in plain text, and that text becomes the instruction."""
    run = run_study(tmp_path, "SSS")
    replies = [r for r in run.requests["optimizer"] if "response_format" not in r.body]
    assert len(replies) == K
    (body,) = final_prompts(run.run_dir).values()
    instructions = json.loads(body)["instructions"]
    assert set(instructions) == set(CRITERIA)
    assert all(text != INITIAL and not text.startswith("{") for text in instructions.values())


def _second_optimizer_call(request: RecordedRequest) -> bool:
    """An optimizer call of step 2 (step 1 rewrote every instruction, so the variable no longer holds the initial)."""
    return study_role_of(request) == "optimizer" and INITIAL not in tag(request.last_user_text, "VARIABLE")


def _empty_for_fluency_second_time(request: RecordedRequest, reply: Reply) -> Reply:
    if _second_optimizer_call(request) and "'fluency'" in request.last_user_text:
        return Completion("")  # ended normally, with nothing in it
    return reply


def _fluency_cut_off_second_time(request: RecordedRequest, reply: Reply) -> Reply:
    """The scripted answer as it was, but stopped at the output cap: it reads as a complete answer."""
    if _second_optimizer_call(request) and "'fluency'" in request.last_user_text:
        assert isinstance(reply, Completion)
        return Completion(reply.content, finish_reason="length")
    return reply


def _joint_answer_cut_off_second_time(request: RecordedRequest, reply: Reply) -> Reply:
    if _second_optimizer_call(request):
        assert isinstance(reply, Completion)
        return Completion(reply.content, finish_reason="length")
    return reply


def _fluency_left_out_second_time(request: RecordedRequest, reply: Reply) -> Reply:
    if _second_optimizer_call(request):
        assert isinstance(reply, Completion)
        answer: dict[str, Any] = json.loads(reply.content)
        answer["instructions"].pop("fluency")
        return Completion(json.dumps(answer))
    return reply


@pytest.mark.parametrize(
    ("mode", "change"), [("SSS", _empty_for_fluency_second_time), ("SSC", _fluency_left_out_second_time)]
)
def test_a_missing_answer_falls_back_to_the_initial_instruction(
    tmp_path: Path, mode: str, change: Callable[[RecordedRequest, Reply], Reply]
) -> None:
    """O5: step 1 rewrites every instruction; at step 2 fluency's answer is empty (SSS) or left out of the joint
    answer (SSC), so fluency goes back to the initial instruction, not to step 1's; the empty answer is an answer,
    not an endpoint failure, so no call is retried."""
    run = run_study(tmp_path, mode, handler=answering(change), steps=2)
    (body,) = final_prompts(run.run_dir).values()
    instructions = json.loads(body)["instructions"]
    assert instructions["fluency"] == INITIAL
    assert all(instructions[c] != INITIAL for c in CRITERIA if c != "fluency")
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["failed_attempts"]["optimizer"] == 0  # an empty answer is an answer: no endpoint call retried
    optimizer_calls = 2 * expected_calls(mode, "optimizer")
    assert summary["rpc_attempts"]["optimizer"] == len(run.requests["optimizer"]) == optimizer_calls


@pytest.mark.parametrize(
    ("mode", "change", "truncated"),
    [("SSS", _fluency_cut_off_second_time, ("fluency",)), ("SSC", _joint_answer_cut_off_second_time, CRITERIA)],
    ids=["per-criterion", "joint"],
)
def test_an_answer_cut_off_at_the_cap_is_recorded_and_not_applied(
    tmp_path: Path, mode: str, change: Callable[[RecordedRequest, Reply], Reply], truncated: tuple[str, ...]
) -> None:
    """O6: a per-criterion and a joint optimizer answer that stopped at the output cap are treated alike: neither is
    applied (its criteria fall back to the initial instruction, the study's rule for a missing answer), each is
    recorded as TRUNCATED, and summary.json counts one truncated optimizer reply and none elsewhere."""
    run = run_study(tmp_path, mode, handler=answering(change), steps=2)
    (body,) = final_prompts(run.run_dir).values()
    instructions = json.loads(body)["instructions"]
    assert {c for c in CRITERIA if instructions[c] == INITIAL} == set(truncated)
    with sqlite3.connect(run.run_dir / "run.sqlite") as db:
        statuses = dict(
            db.execute("SELECT criteria, status FROM artifacts WHERE kind = 'optimizer_status' AND step = 2")
        )
    assert len(statuses) == K
    cut = {json.loads(criteria)[0] for criteria, status in statuses.items() if status == TRUNCATED}
    assert cut == set(truncated)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["truncated_replies"] == {"judge": 0, "loss": 0, "gradient": 0, "optimizer": 1}
    assert summary["failed_attempts"]["optimizer"] == 0
    markdown, _html = write_report(run.run_dir)
    assert spend_table(markdown.read_text())["optimizer"]["truncated replies"] == "1"


def spend_table(markdown: str) -> dict[str, dict[str, str]]:
    """The report's table of calls per role (the one with a "truncated replies" column), by role and column."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| role |") and "truncated replies" in line)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table: dict[str, dict[str, str]] = {}
    for line in itertools.takewhile(lambda row: row.startswith("|"), lines[start + 2 :]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[cells[0]] = dict(zip(header, cells, strict=True))
    return table


# --- teeth --------------------------------------------------------------------------------------------------------


def test_default_protocol_does_not_conform(tmp_path: Path) -> None:
    """Today's templates (protocol judgeopt) fail the judge's checks: the suite tells the two apart."""
    run = run_study(tmp_path, "SSS", protocol="judgeopt")
    request = run.requests["judge"][0]
    with pytest.raises(AssertionError):
        check_judge_prompt(request.last_user_text, CRITERIA)
    text = request.last_user_text
    summary = text.find('name="summary"')
    source = text.find('name="article"')
    assert 0 <= source < summary  # the source text comes first
