"""Data stays data, in a real run: an instruction planted in the training samples reaches the loss, gradient and
optimizer agents only inside data tags that their system prompts declare to be data, and its closing tags cannot
end a tag early.

The scripted models pass the planted text on, as a model steered by it would (second-order injection): the judge
repeats it in its answer, the loss in its critique, the gradient in its feedback. The policy shows every stage all
it may see (samples, answers, critiques, instructions, the task, the conversations), so every way in is exercised.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.data_tags import PLANT, declared_data_tags, read_tags
from helpers.fake_openai import Completion, RecordedRequest, Reply
from helpers.runs import FinishedRun, file_dataset, run_settings, scripted_model, scripted_run, write_summeval_rows
from helpers.scripts import SUMMEVAL, deterministic_handler, role_of

EVERYTHING_SEEN: dict[str, Any] = {
    "judge": {"routing": "joint", "fields": ["task_description", "instruction", "sample"]},
    "loss": {
        "routing": "per_criterion",
        "fields": ["instruction", "sample", "judge_output", "prediction", "ground_truth", "verdict"],
    },
    "gradient": {
        "routing": "joint",
        "fields": ["task_description", "instruction", "sample", "judge_output", "critique", "prediction", "verdict"],
    },
    "optimizer": {"routing": "joint", "fields": ["task_description", "instruction", "gradient", "conversations"]},
}
REQUESTS = {"loss": 2 * len(SUMMEVAL), "gradient": 2, "optimizer": 1}
"""One step on a batch of 2: a loss call per sample and criterion, a gradient call per sample, one optimizer call."""


def passing_it_on(request: RecordedRequest) -> Reply:
    """The scripted models, each repeating the planted text in what it writes."""
    reply = deterministic_handler()(request)
    assert isinstance(reply, Completion)
    role = role_of(request)
    if role in ("judge", "loss"):
        return Completion(f"{reply.content} {PLANT}")
    if role == "gradient":
        return Completion(json.dumps({**json.loads(reply.content), "problem": f"The sample says: {PLANT}"}))
    return reply


def config(tmp: Path, base_url: str) -> Path:
    data = write_summeval_rows(tmp / "planted.jsonl", (f"Summary {i}. {PLANT}" for i in range(4)))
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(EVERYTHING_SEEN))
    run = run_settings(
        policy_file=str(policy),
        steps=1,
        concurrency=8,
        dataset=file_dataset(data, train_size=2, val_size=1, test_size=1),
    )
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump({"models": {"default": scripted_model(base_url)}, "run": run}))
    return path


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    tmp = tmp_path_factory.mktemp("planted")
    run = scripted_run(tmp, passing_it_on, config=lambda base_url: config(tmp, base_url))
    assert run.code == 0
    return run


@pytest.mark.parametrize("role", REQUESTS)
def test_planted_text_reaches_the_learning_agents_only_as_declared_data(planted_run: FinishedRun, role: str) -> None:
    """Every loss, gradient and optimizer request carries the planted text (so the check below is not vacuous),
    only inside data tags, and those tags nest properly (the planted closing tags closed nothing); every data tag a
    request uses is one its system prompt declares to be data."""
    requests = planted_run.by_role(role)
    assert len(requests) == REQUESTS[role], role
    for request in requests:
        message = read_tags(request.last_user_text)
        assert len(message.occurrences("PLANTED:")) >= 1 and message.occurrences("PLANTED-END")
        assert message.outside("PLANTED") == [], request.last_user_text
        assert message.tags <= declared_data_tags(request.system_text), message.tags


def test_the_critique_reaches_the_gradient_inside_its_tag(planted_run: FinishedRun) -> None:
    """The reproduced hole: the loss critique (model text the sample shaped) sat outside any tag in the gradient
    prompt. Now each critique is inside <critique>, with the planted text whole within it."""
    critiques = [
        block
        for request in planted_run.by_role("gradient")
        for block in re.findall(r"<critique>\n(.*?)\n</critique>", request.last_user_text, re.DOTALL)
    ]
    assert critiques and all("PLANTED:" in c and "PLANTED-END" in c for c in critiques)


def test_the_optimizer_gets_the_planted_feedback_and_conversations_as_data(planted_run: FinishedRun) -> None:
    """The gradient's feedback and the batch's conversations (sample and judge answer) reach the optimizer, the
    planted text in both, inside <feedback> and <conversation>."""
    for request in planted_run.by_role("optimizer"):
        user = request.last_user_text
        feedback = re.findall(r"<feedback [^>]*>\n(.*?)\n</feedback>", user, re.DOTALL)
        conversations = re.findall(r"<conversation [^>]*>\n(.*?)\n</conversation>", user, re.DOTALL)
        assert len(conversations) == 2 and feedback
        assert all("PLANTED-END" in block for block in [*feedback, *conversations])
