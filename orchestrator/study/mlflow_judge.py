"""An exported judge as MLflow judges (``mlflow.genai``; the optional ``mlflow`` extra): one per criterion.

    judgeopt export RUN_DIR --format mlflow --out judges.json

Each judge is built with MLflow's own ``make_judge`` (which validates it) and written in MLflow's serialized
scorer form, so ``mlflow.genai.scorers.Scorer.model_validate(entry)`` loads it back. Its instructions are the
optimized prompt for its criterion: the task description, the criterion's instruction and scale, then the sample:
``{{ inputs }}`` (the source fields, as a dict) and ``{{ outputs }}`` (the last text field, the text judged). The
model is ``openai:/<the run's judge model>``. MLflow's serialized form keeps no endpoint, so the file keeps it
beside the judges (``endpoint``) and :func:`load_mlflow_judges` gives it back to each judge; the key is read from
the environment (``OPENAI_API_KEY``), never written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from judgeopt.core.errors import ConfigError
from judgeopt.core.private_files import write_private_text
from judgeopt.orchestrator.study.export import ExportedJudge

FORMAT_KEY = "judgeopt_mlflow_judges"
FORMAT = 1


def _plain(text: str) -> str:
    """``text`` with no MLflow template variable in it (an instruction quoting ``{{`` would be refused)."""
    return text.replace("{{", "{ {").replace("}}", "} }")


def judge_instructions(judge: ExportedJudge, criterion: str) -> str:
    spec, head = judge.rubric_head(criterion, _plain)
    scale = f"from {spec.min_score:g} to {spec.max_score:g}" + (" in whole numbers" if spec.integer_scores else "")
    sources = ", ".join(judge.text_fields[:-1])
    return "\n\n".join(
        part
        for part in (
            *head,
            (f"Inputs ({sources}): {{{{ inputs }}}}\n" if sources else "")
            + f"Output ({judge.text_fields[-1]}): {{{{ outputs }}}}",
            f"Rate the output on {criterion} {scale}.",
        )
        if part
    )


def _require_mlflow() -> None:
    try:
        import mlflow.genai  # noqa: F401
    except ImportError:
        raise ConfigError("MLflow judges need the mlflow extra: pip install 'judgeopt[mlflow]'") from None


def mlflow_judges(judge: ExportedJudge) -> list[Any]:
    """One MLflow judge per criterion (``mlflow.genai.judges.make_judge``), without an endpoint."""
    _require_mlflow()
    from mlflow.genai.judges import make_judge

    return [
        make_judge(
            name=spec.name,
            instructions=judge_instructions(judge, spec.name),
            model=f"openai:/{judge.model.model}",
            description=spec.description or None,
            feedback_value_type=int if spec.integer_scores else float,
            inference_params={"temperature": judge.model.temperature},
        )
        for spec in judge.criteria
    ]


def write_mlflow_judges(judge: ExportedJudge, out: Path) -> None:
    endpoint = None if judge.model.base_url is None else str(judge.model.base_url)
    document = {
        FORMAT_KEY: FORMAT,
        "endpoint": endpoint,
        "source": judge.source,
        "judges": [j.model_dump() for j in mlflow_judges(judge)],
    }
    write_private_text(out, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def load_mlflow_judges(path: Path) -> list[Any]:
    """The judges of an export file, loaded by MLflow, each sent to the file's endpoint (when it names one)."""
    _require_mlflow()
    from mlflow.genai.judges import make_judge
    from mlflow.genai.judges.instructions_judge import InstructionsJudge
    from mlflow.genai.scorers import Scorer

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable as JSON ({exc})") from None
    if not isinstance(document, dict) or document.get(FORMAT_KEY) != FORMAT:
        raise ConfigError(f"{path}: not MLflow judges exported by `judgeopt export --format mlflow`")
    loaded = [Scorer.model_validate(entry) for entry in document["judges"]]
    other = [s.name for s in loaded if not isinstance(s, InstructionsJudge)]
    if other:
        raise ConfigError(f"{path}: {other[0]!r} is not an instructions judge")
    judges = [s for s in loaded if isinstance(s, InstructionsJudge)]
    if document.get("endpoint") is None:
        return judges
    return [
        make_judge(
            name=j.name,
            instructions=j.instructions,
            model=j.model,
            description=j.description,
            feedback_value_type=j.feedback_value_type,
            inference_params=j.inference_params,
            base_url=document["endpoint"],
        )
        for j in judges
    ]
