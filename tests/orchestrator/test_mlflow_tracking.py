"""MLflow tracking against a real local MLflow store (SQLite in a temporary folder), read back with MlflowClient."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.runs import run_settings, write_config
from mlflow import MlflowClient
from mlflow.entities import Run

from judgeopt.cli import main
from judgeopt.orchestrator.fleet import ServiceFleet
from judgeopt.orchestrator.tracking import PER_CRITERION_METRICS, TRACKING_FILE

STEPS = run_settings()["steps"]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite tracking store for the module (creating its tables takes seconds), with its experiments' artifacts
    beside it (MLflow's default is ./mlruns in the working directory)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    for experiment in ("single", "grid"):
        client.create_experiment(experiment, artifact_location=(folder / experiment).as_uri())
    return uri


def address_flags(fleet: ServiceFleet) -> list[str]:
    return [flag for role, address in fleet.addresses.items() for flag in (f"--{role}-addr", address)]


def only_run(client: MlflowClient, experiment: str) -> Run:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@pytest.fixture(scope="module")
def tracked_run(
    fake_endpoint: FakeOpenAI, fleet: ServiceFleet, tracking_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Run]]:
    """`judgeopt optimize --mlflow` on the module's services, `judgeopt resume` of the finished run (no flag: it
    stays tracked in its MLflow run), then `judgeopt report` of the run."""
    folder = tmp_path_factory.mktemp("tracked")
    run_dir = folder / "run"
    config = write_config(folder / "run.yaml", fake_endpoint.base_url)
    flags = ["--mlflow", "--mlflow-uri", tracking_uri, "--mlflow-experiment", "single"]
    assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir), *address_flags(fleet), *flags]) == 0
    assert main(["resume", str(run_dir), *address_flags(fleet)]) == 0
    assert main(["report", str(run_dir)]) == 0
    yield run_dir, only_run(MlflowClient(tracking_uri), "single")


class TestRunTracking:
    def test_params_name_the_run_and_hold_no_key(self, tracked_run: tuple[Path, Run]) -> None:
        run_dir, run = tracked_run
        params = run.data.params
        summary = json.loads((run_dir / "summary.json").read_text())
        assert params["mode"] == "SSS" and params["gate"] == "none" and params["seed"] == "0"
        assert params["run_id"] == summary["run_id"] and params["criteria"] == ",".join(summary["criteria"])
        assert params["model.judge"] == params["model.optimizer"] == "fake-model"
        assert {params["size.train"], params["size.val"], params["size.test"]} == {"12", "4", "6"}
        assert params["batch_size"] == "2" and params["dataset.name"] == "summeval"
        assert not [k for k in params if "api_key" in k] and not [v for v in params.values() if "http" in v]
        assert json.loads((run_dir / TRACKING_FILE).read_text())["run_id"] == run.info.run_id
        assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name

    def test_every_step_logs_each_criterions_figures_once(
        self, tracked_run: tuple[Path, Run], tracking_uri: str
    ) -> None:
        run_dir, run = tracked_run
        client = MlflowClient(tracking_uri)
        criteria = json.loads((run_dir / "summary.json").read_text())["criteria"]
        assert len(criteria) == 4
        for split in ("val", "test"):
            for figure in PER_CRITERION_METRICS:
                for criterion in criteria:
                    history = client.get_metric_history(run.info.run_id, f"{split}.{figure}.{criterion}")
                    assert [m.step for m in history] == list(range(STEPS + 1)), (split, figure, criterion)
        steps = json.loads((run_dir / "summary.json").read_text())["steps"]
        logged = client.get_metric_history(run.info.run_id, "test.macro_rho")
        assert [m.value for m in logged] == pytest.approx([s["macro_rho"] for s in steps])
        tokens = [m.value for m in client.get_metric_history(run.info.run_id, "tokens.judge")]
        assert len(tokens) == STEPS + 1 and tokens == sorted(tokens) and tokens[0] > 0  # spent so far, per step
        accepted = client.get_metric_history(run.info.run_id, "accepted")
        assert [m.step for m in accepted] == list(range(1, STEPS + 1))

    def test_the_end_logs_the_summarys_figures(self, tracked_run: tuple[Path, Run]) -> None:
        run_dir, run = tracked_run
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics = run.data.metrics
        assert metrics["best.macro_rho"] == pytest.approx(summary["best"]["macro_rho"])
        assert metrics["initial.macro_rho"] == pytest.approx(summary["initial"]["macro_rho"])
        assert metrics["hvi"] == pytest.approx(summary["hvi"])
        assert metrics["llm_calls.judge"] == summary["llm_calls"]["judge"] > 0
        assert metrics["tokens.optimizer.completion"] == summary["tokens"]["optimizer"]["completion"] > 0

    def test_resume_logs_into_the_same_mlflow_run(self, tracked_run: tuple[Path, Run], tracking_uri: str) -> None:
        """One MLflow run in the experiment (``only_run``), whose closing figures were logged twice: at the end of
        the run and at the end of its resumption (which had no step left to run)."""
        _run_dir, run = tracked_run
        history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "best.macro_rho")
        assert [m.step for m in history] == [STEPS, STEPS]

    def test_prompts_summary_and_report_are_artifacts(self, tracked_run: tuple[Path, Run], tracking_uri: str) -> None:
        run_dir, run = tracked_run
        client = MlflowClient(tracking_uri)
        prompts = sorted(f.path for f in client.list_artifacts(run.info.run_id, "prompts"))
        assert prompts == [f"prompts/step_{n:03d}.txt" for n in range(STEPS + 1)]
        first = Path(client.download_artifacts(run.info.run_id, prompts[0], str(run_dir.parent)))
        assert "Rate from 1 to 5." in first.read_text()  # the initial instruction, under each criterion
        top = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"summary.json", "report"} <= top
        report = {f.path for f in client.list_artifacts(run.info.run_id, "report")}
        assert report == {"report/report.md", "report/report.html"}


def test_grid_is_a_parent_run_with_a_child_per_cell(
    fake_endpoint: FakeOpenAI, fleet: ServiceFleet, tracking_uri: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "grid.yaml", fake_endpoint.base_url, steps=1)
    data = yaml.safe_load(config.read_text())
    data["grid"] = {"modes": ["SSS"], "gates": ["none"], "runs": 2, "diagnostics": False, "interference": False}
    data["tracking"] = {"mlflow": {"tracking_uri": tracking_uri, "experiment": "grid"}}
    config.write_text(yaml.safe_dump(data))
    directory = tmp_path / "exp"
    assert main(["experiment", "--grid", str(config), "--dir", str(directory), *address_flags(fleet)]) == 0
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("grid")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"exp", "SSS-none-run0", "SSS-none-run1"}
    parent = runs.pop("exp")
    assert parent.data.params["grid.runs"] == "2" and parent.info.status == "FINISHED"
    assert {f.path for f in client.list_artifacts(parent.info.run_id)} == {"experiment.json"}
    for name, child in runs.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["seed"] == name[-1]
        history = client.get_metric_history(child.info.run_id, "val_metric")
        assert [m.step for m in history] == [0, 1]


def test_a_store_that_fails_is_one_warning_and_the_run_goes_on(
    fake_endpoint: FakeOpenAI, fleet: ServiceFleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tracking store that cannot be opened: one warning, every later step skips MLflow, the run completes."""
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", fake_endpoint.base_url, steps=1)
    (tmp_path / "a-file").write_text("not a folder")
    unreachable = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    flags = ["--mlflow", "--mlflow-uri", unreachable]
    assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir), *address_flags(fleet), *flags]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("mlflow.failed") == 1
    assert not (run_dir / TRACKING_FILE).exists()
