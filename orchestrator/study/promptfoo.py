"""An exported judge as a promptfoo config: one model-graded ``llm-rubric`` assertion per criterion.

    judgeopt export RUN_DIR --format promptfoo --out promptfooconfig.yaml

Each rubric is the optimized prompt for its criterion: the task description, the criterion's optimized
instruction and scale, and the sample's source fields as promptfoo variables (``{{document}}``); the output under
test is the last text field (the summary, say). promptfoo's grader answers with a score from 0 to 1, so the rubric
asks for the rating mapped onto that range. The grading provider is the run's judge model on its OpenAI-compatible
endpoint; its key is read from ``JUDGEOPT_API_KEY`` (an environment variable named, never a key written). As it
stands the config grades the texts of its tests as they are (the ``echo`` provider returns the prompt, which is the
output field); put a provider of your own under ``providers`` to grade what it writes, and the samples under
``tests`` (e.g. ``tests: file://samples.csv`` with one column per text field).
"""

from __future__ import annotations

from typing import Any

from judgeopt.orchestrator.study.export import ExportedJudge

KEY_VARIABLE = "JUDGEOPT_API_KEY"


def _literal(text: str) -> str:
    """``text`` shown verbatim by promptfoo's Nunjucks templates (an instruction may contain ``{{`` or ``{%``)."""
    return "{% raw %}" + text.replace("{% endraw %}", "{ % endraw % }") + "{% endraw %}"


def rubric(judge: ExportedJudge, criterion: str) -> str:
    """The grading instruction for one criterion, with the sample's source fields as promptfoo variables."""
    spec, head = judge.rubric_head(criterion, _literal)
    scale = f"{spec.min_score:g} to {spec.max_score:g}" + (" in whole numbers" if spec.integer_scores else "")
    sources = "\n".join(f"{field}: {{{{{field}}}}}" for field in judge.text_fields[:-1])
    span = spec.max_score - spec.min_score
    return "\n\n".join(
        part
        for part in (
            *head,
            f"The output is the {judge.text_fields[-1]}." + (f" Its sources:\n{sources}" if sources else ""),
            f"Rate the output on {criterion} from {scale}; give as score (rating - {spec.min_score:g}) / {span:g}.",
        )
        if part
    )


def promptfoo_config(judge: ExportedJudge) -> dict[str, Any]:
    model = judge.model
    provider_config: dict[str, Any] = {"apiKeyEnvar": KEY_VARIABLE, "temperature": model.temperature}
    if model.base_url is not None:
        provider_config["apiBaseUrl"] = str(model.base_url)
    source = judge.source
    return {
        "description": (
            f"judgeopt judge: step {source['step']} of run {source['run_id']} ({source['mode']}, chosen on "
            f"{source['chosen_on']})"
        ),
        "prompts": [f"{{{{{judge.text_fields[-1]}}}}}"],
        "providers": ["echo"],
        "defaultTest": {
            "options": {"provider": {"id": f"openai:chat:{model.model}", "config": provider_config}},
            "assert": [
                {"type": "llm-rubric", "metric": c.name, "value": rubric(judge, c.name)} for c in judge.criteria
            ],
        },
        "tests": [],
    }
