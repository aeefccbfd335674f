"""`judgeopt export --format promptfoo|mlflow`: the optimized judge read back by the real tools (promptfoo's own
config validation, MLflow's judge deserialization)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.runs import write_config
from mlflow.genai.judges.instructions_judge import InstructionsJudge
from mlflow.genai.scorers import Scorer

from judgeopt.cli import main
from judgeopt.core.errors import ConfigError
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.orchestrator.study.export import ExportedJudge, read_judge
from judgeopt.orchestrator.study.mlflow_judge import load_mlflow_judges, mlflow_judges
from judgeopt.orchestrator.study.promptfoo import KEY_VARIABLE, promptfoo_config

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTFOO = REPO_ROOT / ".ci" / "node" / "node_modules" / ".bin" / "promptfoo"


@pytest.fixture(scope="module")
def run_dir(fake_endpoint: FakeOpenAI, fleet: ServiceFleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step run on the module's services (its step 1 rewrote every instruction)."""
    folder = tmp_path_factory.mktemp("exported")
    config = write_config(folder / "run.yaml", fake_endpoint.base_url, steps=1)
    addresses = [flag for role, address in fleet.addresses.items() for flag in (f"--{role}-addr", address)]
    assert main(["optimize", "--config", str(config), "--run-dir", str(folder / "run"), *addresses]) == 0
    return folder / "run"


def exported(run_dir: Path, out: Path, *flags: str) -> Path:
    assert main(["export", str(run_dir), "--step", "1", "--out", str(out), "--no-measure", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def judge(run_dir: Path) -> ExportedJudge:
    """The run's step-1 judge in judgeopt's own format, what the other formats are compared against."""
    return read_judge(exported(run_dir, run_dir.parent / "judge.yaml"))


def test_promptfoo_export_passes_promptfoos_own_validation(run_dir: Path, judge: ExportedJudge) -> None:
    out = exported(run_dir, run_dir.parent / "promptfooconfig.yaml", "--format", "promptfoo")
    config = yaml.safe_load(out.read_text())
    rubrics = config["defaultTest"]["assert"]
    assert [(a["type"], a["metric"]) for a in rubrics] == [("llm-rubric", c.name) for c in judge.criteria]
    for assertion, spec in zip(rubrics, judge.criteria, strict=True):
        assert judge.instructions[spec.name].strip() in assertion["value"]  # the optimized instruction
        assert all(f"{{{{{field}}}}}" in assertion["value"] for field in judge.text_fields[:-1])  # the sources
    provider = config["defaultTest"]["options"]["provider"]
    assert provider["id"] == "openai:chat:fake-model"
    assert provider["config"]["apiBaseUrl"] == str(judge.model.base_url)
    assert provider["config"]["apiKeyEnvar"] == KEY_VARIABLE and "apiKey" not in provider["config"]
    assert len(judge.text_fields) == 2 and config["prompts"] == [f"{{{{{judge.text_fields[-1]}}}}}"]
    if not PROMPTFOO.exists():
        pytest.fail(f"promptfoo is not installed at {PROMPTFOO}: run ./scripts/install.sh (it needs node and npm)")
    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1", "NO_COLOR": "1"}
    checked = subprocess.run(
        [str(PROMPTFOO), "validate", "config", "-c", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out.parent,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0 and "Configuration is valid" in checked.stdout, checked.stdout + checked.stderr


def test_mlflow_export_loads_as_mlflow_judges(run_dir: Path, judge: ExportedJudge) -> None:
    out = exported(run_dir, run_dir.parent / "judges.json", "--format", "mlflow")
    document = json.loads(out.read_text())
    loaded = [Scorer.model_validate(entry) for entry in document["judges"]]  # MLflow's own loader
    assert [j.name for j in loaded] == [c.name for c in judge.criteria]
    for mlflow_judge, spec in zip(loaded, judge.criteria, strict=True):
        assert isinstance(mlflow_judge, InstructionsJudge)
        assert mlflow_judge.model == "openai:/fake-model"
        assert mlflow_judge.feedback_value_type is (int if spec.integer_scores else float)
        assert judge.instructions[mlflow_judge.name].strip() in mlflow_judge.instructions
        assert mlflow_judge.template_variables == {"inputs", "outputs"}
    assert document["endpoint"] == str(judge.model.base_url) and "api_key" not in out.read_text()
    routed = load_mlflow_judges(out)
    assert [j.name for j in routed] == [j.name for j in loaded]
    assert all(f"base_url='{judge.model.base_url}'" in repr(j) for j in routed)


def test_template_syntax_in_an_instruction_stays_text(judge: ExportedJudge) -> None:
    """An optimized instruction that quotes template syntax: MLflow would refuse it as a custom variable, and
    promptfoo's Nunjucks would fill it in; both exports keep it as text."""
    name = judge.criteria[0].name
    quoting = judge.model_copy(update={"instructions": {**judge.instructions, name: "Compare {{ expected }} {% x %}"}})
    (first, *_) = mlflow_judges(quoting)
    assert first.template_variables == {"inputs", "outputs"}
    rubric = promptfoo_config(quoting)["defaultTest"]["assert"][0]["value"]
    assert "{% raw %}Compare {{ expected }} {% x %}{% endraw %}" in rubric


def test_without_mlflow_the_export_names_the_extra(judge: ExportedJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.genai", None)  # as if mlflow were not installed
    with pytest.raises(ConfigError, match=r"judgeopt\[mlflow\]"):
        mlflow_judges(judge)
