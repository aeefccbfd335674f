"""The Python API (``import judgeopt``), in-process against the scripted endpoint: runs started from a mapping, read
back as typed values, judges exported and scored in memory, synchronous calls inside a running event loop, errors,
a lazy import, and the README's example, executed."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
import yaml
from helpers.eventually import wait_until
from helpers.fake_openai import Completion, FakeOpenAI, HttpError, RecordedRequest, Reply
from helpers.runs import BATCH, DATASET, run_settings, scripted_model
from helpers.scripts import SUMMEVAL, deterministic_handler, role_of

import judgeopt
import judgeopt.api
from judgeopt.cli import main
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import DatasetConfig

REPO = Path(__file__).resolve().parents[1]
STEPS = 2
README_ENDPOINT = "http://127.0.0.1:8000/v1"
README_MODEL = "Qwen/Qwen3-8B"


def config(base_url: str, **run: Any) -> dict[str, Any]:
    """A config as a mapping: every role on the scripted endpoint, a small SSS run (gate none) on SummEval."""
    return {"models": {"default": scripted_model(base_url)}, "run": run_settings(mode="SSS", **run)}


def service_processes(run_dir: Path) -> list[str]:
    """Command lines of the processes started for ``run_dir`` (their ledgers and logs live under it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if str(run_dir) in text:
            found.append(text)
    return found


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


@pytest.fixture(scope="module")
def finished(scripted: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> judgeopt.Run:
    """A 2-step SSS run, started synchronously from a mapping (no event loop running)."""
    return judgeopt.optimize(config(scripted.base_url), run_dir=tmp_path_factory.mktemp("api") / "run")


class TestOptimize:
    def test_a_run_from_a_mapping_finishes_and_reads_back_as_typed_values(self, finished: judgeopt.Run) -> None:
        """Steps, prompts and predictions come back with the run's structure: one track, steps 0..2, every
        criterion at every tested step, one prediction per sample of the split."""
        assert finished.status == "complete" and finished.summary["status"] == "complete"
        steps = finished.steps()
        assert all(isinstance(s, judgeopt.Step) for s in steps)
        assert [(s.step, s.track, s.accepted) for s in steps] == [(0, "all", None), (1, "all", True), (2, "all", True)]
        for s in steps:
            assert s.rho is not None and set(s.rho) == set(SUMMEVAL) and s.val_metric is not None
            assert s.macro_rho == pytest.approx(fmean(s.rho.values()))
        with pytest.raises(dataclasses.FrozenInstanceError):
            steps[0].step = 5  # type: ignore[misc]

        prompts = finished.prompts()
        assert list(prompts) == [0, 1, 2]
        assert all(list(p) == list(SUMMEVAL) and all(text.strip() for text in p.values()) for p in prompts.values())
        assert prompts[1] != prompts[0]  # gate none: the optimizer's candidate was taken
        assert finished.prompt("best") == prompts[finished.summary["best"]["step"]]
        assert finished.prompt("best_oracle") == prompts[finished.summary["best_oracle"]["step"]]
        assert finished.prompt(2) == prompts[2]

        test = finished.predictions("test", step=0)
        assert len(test) == DATASET["test_size"] and len({p.sample_id for p in test}) == DATASET["test_size"]
        assert all(p.split == "test" and p.step == 0 and p.track == "all" for p in test)
        assert all(set(p.scores) == set(SUMMEVAL) and None not in p.scores.values() for p in test)
        assert len(finished.predictions("test")) == (STEPS + 1) * DATASET["test_size"]  # tested at every step
        assert len(finished.predictions("val", step="best")) == DATASET["val_size"]
        # Training samples were judged by the prompt in effect before each step: the last prompt judged none.
        assert [len(finished.predictions("train", step=n)) for n in range(STEPS + 1)] == [BATCH, BATCH, 0]

    def test_the_summary_is_computed_from_the_store_when_the_file_is_missing(
        self, finished: judgeopt.Run, tmp_path: Path
    ) -> None:
        copy = tmp_path / "copy"
        shutil.copytree(finished.path, copy)
        (copy / "summary.json").unlink()
        assert judgeopt.open_run(copy).summary == json.loads((finished.path / "summary.json").read_text())

    async def test_the_synchronous_call_works_inside_a_running_event_loop(
        self, scripted: FakeOpenAI, tmp_path: Path
    ) -> None:
        """As in a Jupyter cell: the loop is running, ``optimize`` runs the run on a loop of its own in a worker
        thread, and the caller's loop is usable afterwards. The config's ``tracking`` section logs it to MLflow."""
        from mlflow import MlflowClient

        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        experiment = MlflowClient(uri).create_experiment("api", artifact_location=(tmp_path / "artifacts").as_uri())
        tracked = {
            **config(scripted.base_url, steps=1),
            "tracking": {"mlflow": {"tracking_uri": uri, "experiment": "api"}},
        }
        loop = asyncio.get_running_loop()
        run = judgeopt.optimize(tracked, run_dir=tmp_path / "run")
        assert run.status == "complete" and [s.step for s in run.steps()] == [0, 1]
        (logged,) = MlflowClient(uri).search_runs([experiment])
        assert [m.step for m in MlflowClient(uri).get_metric_history(logged.info.run_id, "val_metric")] == [0, 1]
        assert (
            logged.info.status == "FINISHED"
            and logged.data.metrics["best.macro_rho"] == run.summary["best"]["macro_rho"]
        )
        assert asyncio.get_running_loop() is loop and await asyncio.sleep(0, "still running") == "still running"

    async def test_the_coroutine_runs_on_the_callers_loop(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        run = await judgeopt.optimize_async(config(scripted.base_url, steps=0), run_dir=tmp_path / "run")
        assert run.status == "complete" and [s.step for s in run.steps()] == [0]

    def test_an_interrupted_call_inside_a_loop_stops_the_services_it_started(self, tmp_path: Path) -> None:
        """Ctrl-C (a notebook's "interrupt") while the worker thread runs: the run is cancelled, its services are
        stopped before KeyboardInterrupt reaches the caller, and the run stays resumable."""
        handler = deterministic_handler()

        def slow(request: RecordedRequest) -> Reply:
            reply = handler(request)
            return dataclasses.replace(reply, delay=0.5) if isinstance(reply, Completion) else reply

        run_dir = tmp_path / "run"
        with FakeOpenAI(slow) as endpoint:

            def interrupt_once_calls_arrive() -> None:
                wait_until(lambda: bool(endpoint.requests), timeout=120)
                os.kill(os.getpid(), signal.SIGINT)  # what a notebook's interrupt sends

            async def cell() -> None:
                judgeopt.optimize(config(endpoint.base_url), run_dir=run_dir)

            # A notebook kernel's state, whatever an earlier test in this process left: Python's own SIGINT handler,
            # and the signal not blocked (threads inherit the mask; a blocked SIGINT would stay pending).
            previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
            mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            threading.Thread(target=interrupt_once_calls_arrive, daemon=True).start()
            loop = asyncio.new_event_loop()
            try:
                with pytest.raises(KeyboardInterrupt):
                    loop.run_until_complete(cell())
            finally:
                loop.close()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                signal.signal(signal.SIGINT, previous_handler)
        assert service_processes(run_dir) == []
        assert not any(t.name == "judgeopt-api" for t in threading.enumerate())
        assert judgeopt.open_run(run_dir).status == "running"  # `judgeopt resume` goes on with it


class TestFrames:
    def test_without_pandas_the_frames_say_what_is_missing(
        self, finished: judgeopt.Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
        for frame in (finished.steps_frame, finished.predictions_frame):
            with pytest.raises(judgeopt.MissingDependencyError, match="pandas is not installed"):
                frame()

    def test_with_pandas_the_frames_hold_the_same_values(self, finished: judgeopt.Run) -> None:
        pytest.importorskip("pandas")
        steps = finished.steps_frame()
        assert list(steps["step"]) == [0, 1, 2] and {f"rho_{c}" for c in SUMMEVAL} <= set(steps.columns)
        predictions = finished.predictions_frame("test", step=0)
        assert len(predictions) == DATASET["test_size"] and set(SUMMEVAL) <= set(predictions.columns)


class TestJudge:
    def test_an_exported_judge_scores_rows_as_the_run_did(
        self, finished: judgeopt.Run, tmp_path: Path, scripted: FakeOpenAI
    ) -> None:
        """``judgeopt export`` → ``load_judge`` → ``score(rows)`` on the run's test samples gives one result per row
        with every criterion, equal to the run's own predictions at the exported step."""
        path = tmp_path / "judge.yaml"
        assert main(["export", str(finished.path), "--step", "best", "--out", str(path), "--no-measure"]) == 0
        judge = judgeopt.load_judge(path)
        assert judge.criteria == SUMMEVAL and judge.text_fields == ("article", "summary")
        assert judge.instructions == finished.prompt("best") == finished.judge("best").instructions

        expected = finished.predictions("test", step="best")
        records = {r.id: r for r in load_dataset(DatasetConfig.model_validate(DATASET)).records}
        rows = [dict(records[p.sample_id].fields) for p in expected]
        scripted.clear()
        scored = judge.score(rows)
        assert len(scored) == len(rows) == DATASET["test_size"]
        for result, prediction in zip(scored, expected, strict=True):
            assert result == pytest.approx(prediction.scores)
        assert {role_of(r) for r in scripted.requests} == {"judge"} and len(scripted.requests) == len(rows)

        saved = tmp_path / "saved.yaml"
        judge.save(saved)
        assert judgeopt.load_judge(saved).instructions == judge.instructions
        assert judge.score([]) == []

    def test_a_failed_judge_call_gives_none_for_every_criterion(self, finished: judgeopt.Run, tmp_path: Path) -> None:
        with FakeOpenAI(lambda _request: HttpError(400, "context length exceeded")) as refusing:
            path = tmp_path / "judge.yaml"
            exported = finished.judge("best")
            exported.save(path)
            data = yaml.safe_load(path.read_text())
            data["model"]["base_url"] = refusing.base_url
            path.write_text(yaml.safe_dump(data))
            scored = judgeopt.load_judge(path).score([{"article": "A text.", "summary": "A summary."}])
        assert scored == [dict.fromkeys(SUMMEVAL)]

    def test_a_row_without_a_text_field_is_refused_naming_the_row(self, finished: judgeopt.Run) -> None:
        rows = [{"article": "A text.", "summary": "A summary."}, {"article": "Another text."}]
        with pytest.raises(judgeopt.DataError, match=r"^rows: row 2: missing column 'summary'"):
            finished.judge("best").score(rows)

    def test_a_row_with_a_lone_surrogate_is_refused_naming_the_row(self, finished: judgeopt.Run) -> None:
        """Half a UTF-16 pair is no text any request could carry: a DataError naming row and column, not a
        UnicodeEncodeError."""
        rows = [{"article": "A text.", "summary": "A summary."}, {"article": "A text.", "summary": "Half \ud800."}]
        with pytest.raises(judgeopt.DataError, match=r"^rows: row 2: column 'summary': a lone surrogate"):
            finished.judge("best").score(rows)


class TestErrors:
    @pytest.mark.parametrize(
        ("given", "named"),
        [
            ({"run": {"steps": "many"}}, "run.steps"),
            ({"run": {"gate": "accuracy"}}, "unknown gate 'accuracy'"),
            ({"runs": {"steps": 2}}, "runs: Extra inputs are not permitted"),
            ({"models": {"judge": {"temperature": 9}}}, "models.judge: temperature"),
            (42, "config must be a mapping or a config file's path"),
        ],
    )
    def test_a_bad_config_is_a_config_error_naming_the_problem(self, given: Any, named: str, tmp_path: Path) -> None:
        with pytest.raises(judgeopt.ConfigError, match=re.escape(named)):
            judgeopt.optimize(given, run_dir=tmp_path / "run")
        assert not (tmp_path / "run").exists()

    def test_a_config_file_is_read_and_checked_as_the_command_line_does(self, tmp_path: Path) -> None:
        path = tmp_path / "judgeopt.yaml"
        path.write_text(yaml.safe_dump({"run": {"batch_size": 0}}))
        with pytest.raises(judgeopt.ConfigError, match=rf"^{re.escape(str(path))}: run.batch_size"):
            judgeopt.optimize(path, run_dir=tmp_path / "run")
        with pytest.raises(judgeopt.ConfigError, match="cannot read config file"):
            judgeopt.optimize(str(tmp_path / "missing.yaml"))

    def test_addresses_are_all_roles_or_none(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        with pytest.raises(judgeopt.ConfigError, match="addresses: no address for 'loss'"):
            judgeopt.optimize(config(scripted.base_url), addresses={"judge": "127.0.0.1:1"})

    def test_reading_refuses_what_is_not_there(self, finished: judgeopt.Run, tmp_path: Path) -> None:
        with pytest.raises(judgeopt.ConfigError, match="holds no run"):
            judgeopt.open_run(tmp_path)
        with pytest.raises(judgeopt.ConfigError, match="already holds a run"):
            judgeopt.optimize({}, run_dir=finished.path)
        for bad in ("worst", 99, True):
            with pytest.raises(judgeopt.ConfigError, match="step must be 'best', 'best_oracle' or a complete step"):
                finished.prompt(bad)  # type: ignore[arg-type]
        with pytest.raises(judgeopt.ConfigError, match="split must be one of train, val, test"):
            finished.predictions("dev")  # type: ignore[arg-type]
        with pytest.raises(judgeopt.ConfigError, match="not a judge exported by `judgeopt export`"):
            judgeopt.load_judge(finished.path / "summary.json")

    def test_every_error_is_a_judgeopt_error(self, finished: judgeopt.Run, tmp_path: Path) -> None:
        for name in ("ConfigError", "DataError", "RunFailed", "ServiceStartError", "StorageError"):
            assert issubclass(getattr(judgeopt, name), judgeopt.JudgeoptError)
        with pytest.raises(judgeopt.StorageError, match="No such file or directory"):
            finished.judge("best").save(tmp_path / "no-such-dir" / "judge.yaml")


class TestImport:
    def test_importing_judgeopt_loads_nothing_heavy(self) -> None:
        probe = "import json, sys, judgeopt; print(json.dumps(sorted(sys.modules)))"
        loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout)
        heavy = ("pydantic", "grpc", "yaml", "structlog", "judgeopt.api", "judgeopt.orchestrator")
        assert "judgeopt" in loaded and [m for m in loaded if m.startswith(heavy)] == []

    def test_the_api_names_load_on_first_use(self) -> None:
        assert set(judgeopt.__all__) <= set(dir(judgeopt))
        assert (
            judgeopt.optimize is judgeopt.api.optimize and judgeopt.JudgeoptError.__module__ == "judgeopt.core.errors"
        )
        with pytest.raises(AttributeError, match="no attribute 'optimise'"):
            judgeopt.optimise  # type: ignore[attr-defined]  # noqa: B018


def readme_example() -> str:
    """The python block of the README's "Python API" section."""
    section = (REPO / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's Python API section has no python block"
    return match.group(1)


def test_the_readme_example_runs(
    scripted: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example, verbatim but for the endpoint and model it names, pointed at the scripted endpoint."""
    code = readme_example()
    assert README_ENDPOINT in code and README_MODEL in code
    code = code.replace(README_ENDPOINT, scripted.base_url).replace(README_MODEL, "fake-model")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Python API)", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("complete ")
    assert judgeopt.open_run(tmp_path / "runs" / "api-demo").status == "complete"
    scores = ast.literal_eval(printed[-1])
    assert len(scores) == 1 and set(scores[0]) == set(SUMMEVAL)


def test_the_readme_example_as_an_unguarded_script_runs_once(scripted: FakeOpenAI, tmp_path: Path) -> None:
    """The README's example saved as a script without `if __name__ == "__main__":` and run with python: the
    services forked for it do not run the script again (multiprocessing would re-import it in each child)."""
    code = readme_example().replace(README_ENDPOINT, scripted.base_url).replace(README_MODEL, "fake-model")
    script = tmp_path / "example.py"
    script.write_text('with open("ran.txt", "a") as ran:\n    ran.write("ran\\n")\n' + code)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("complete ")
    assert (tmp_path / "ran.txt").read_text() == "ran\n"
