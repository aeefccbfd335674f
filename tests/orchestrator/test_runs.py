"""Whole optimization runs through `judgeopt optimize`: the four services as separate processes, a scripted
OpenAI-compatible endpoint whose replies are pure functions of the request, a real SQLite store."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.eventually import wait_until
from helpers.fake_openai import Completion, FakeOpenAI, RecordedRequest, Reply
from helpers.runs import BATCH as B
from helpers.runs import assert_audited_every_call, final_prompts, outcome, train_calls, write_config
from helpers.scripts import deterministic_handler, fail_first_time, failing_role, role_of

from judgeopt.cli import main
from judgeopt.orchestrator.engine.store import RunStore

K = 4  # SummEval criteria


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


FORMULA = {  # training calls per step: judge, loss, gradient, optimizer (the budget module's formula)
    "SSS": {"judge": B, "loss": B * K, "gradient": B * K, "optimizer": K},
    "SSC": {"judge": B, "loss": B * K, "gradient": B * K, "optimizer": 1},
    "SCC": {"judge": B, "loss": B * K, "gradient": B, "optimizer": 1},
    "CCC": {"judge": B, "loss": B, "gradient": B, "optimizer": 1},
    "single": {"judge": B * K, "loss": B * K, "gradient": B * K, "optimizer": K},  # K independent tracks
}


class TestPresets:
    @pytest.mark.parametrize("mode", list(FORMULA))
    def test_preset_runs_end_to_end_with_the_call_formula_and_a_clean_audit(
        self, mode: str, scripted: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each preset completes, writes summary.json with its required keys, makes exactly the mode's number of
        calls per stage at every step, and passes the audit of what the services received."""
        config = write_config(tmp_path / "run.yaml", scripted.base_url, mode=mode)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["mode"] == mode and summary["gate"] == "none"
        for key in ("initial", "best", "best_oracle"):
            assert set(summary[key]) >= {"step", "macro_rho", "rho"}
            assert set(summary[key]["rho"]) == {"coherence", "consistency", "fluency", "relevance"}
        assert [s["step"] for s in summary["steps"]] == [0, 1, 2]
        assert all(set(s) >= {"step", "accepted", "val_metric", "macro_rho", "rho"} for s in summary["steps"])
        assert set(summary["llm_calls"]) == {"judge", "loss", "gradient", "optimizer"}
        assert summary["provenance"]["data_checksum"] and summary["provenance"]["models"]["gradient"] == "fake-model"
        calls = train_calls(run_dir)
        for step in (1, 2):
            assert {stage: calls[(step, stage)] for stage in FORMULA[mode]} == FORMULA[mode]
        capsys.readouterr()
        assert main(["audit", str(run_dir)]) == 0
        assert_audited_every_call(capsys.readouterr().out, run_dir)

    def test_rescoring_an_unchanged_prompt_costs_no_call(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """A rejected candidate leaves the prompt unchanged: its validation and test scores come from the cache."""
        with FakeOpenAI(deterministic_handler(worse_marker="ZZWORSE")) as worse:
            config = write_config(tmp_path / "run.yaml", worse.base_url, gate="mae", steps=2)
            run_dir = tmp_path / "run"
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            test_calls = db.execute("SELECT step, COUNT(*) FROM calls WHERE purpose = 'test' GROUP BY step").fetchall()
        assert dict(test_calls) == {0: 6}  # steps 1 and 2 re-score the unchanged prompt from the cache


class TestPrefixSharedJudge:
    def test_run_with_a_prefix_shared_judge_reports_its_calls_cache_scoring_and_halo(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A policy whose judge is prefix_shared: one judge RPC per sample and K model calls behind it, the cached
        prompt tokens the endpoint reported, the scores counted as sampled (no logprobs asked), the judge's and the
        humans' halo at every step, and a clean audit."""
        script = deterministic_handler()

        def handler(request: RecordedRequest) -> Reply:
            reply = script(request)
            cached = 40 if role_of(request) == "judge" and isinstance(reply, Completion) else None
            return dataclasses.replace(reply, cached_tokens=cached) if isinstance(reply, Completion) else reply

        policy = {
            "judge": {"routing": "prefix_shared", "fields": ["task_description", "instruction", "sample"]},
            "loss": {"routing": "joint", "fields": ["prediction", "ground_truth", "verdict"]},
            "gradient": {"routing": "joint", "fields": ["instruction", "prediction", "critique"]},
            "optimizer": {"routing": "joint", "fields": ["instruction", "gradient"]},
        }
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
        with FakeOpenAI(handler) as endpoint:
            config = write_config(tmp_path / "run.yaml", endpoint.base_url, steps=1)
            run_dir = tmp_path / "run"
            args = ["optimize", "--config", str(config), "--run-dir", str(run_dir)]
            assert main([*args, "--policy", str(tmp_path / "policy.yaml")]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert train_calls(run_dir)[(1, "judge")] == B
        assert summary["llm_calls"]["judge"] == K * summary["rpc_attempts"]["judge"] > 0
        assert summary["tokens"]["judge"]["cached_prompt"] == 40 * summary["llm_calls"]["judge"]
        assert summary["tokens"]["loss"]["cached_prompt"] == 0
        scoring = summary["judge_scoring"]
        assert scoring["asked"] == "sampled" and scoring["logprob_weighted"] == 0 and scoring["sampled"] > 0
        for step in summary["steps"]:
            assert set(step["halo"]) == {"judge", "human"} and -1 <= step["halo"]["human"] <= 1
        capsys.readouterr()
        assert main(["audit", str(run_dir)]) == 0


class TestGate:
    def test_gate_rolls_back_a_worsening_candidate(self, tmp_path: Path) -> None:
        """With the MAE gate, candidates that make validation worse are rejected and the prompt stays initial."""
        with FakeOpenAI(deterministic_handler(worse_marker="ZZWORSE")) as worse:
            config = write_config(tmp_path / "run.yaml", worse.base_url, gate="mae", steps=2)
            run_dir = tmp_path / "run"
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [s["status"] for s in summary["steps"]] == ["initial", "rejected", "rejected"]
        assert [s["accepted"] for s in summary["steps"][1:]] == [False, False]
        assert "ZZWORSE" not in final_prompts(run_dir)["all"]
        assert summary["best"]["step"] == 0

    def test_without_gate_the_worse_candidate_is_kept_but_best_is_chosen_on_validation(self, tmp_path: Path) -> None:
        """With gate none every candidate is accepted; validation is still scored, so best stays at step 0."""
        with FakeOpenAI(deterministic_handler(worse_marker="ZZWORSE")) as worse:
            config = write_config(tmp_path / "run.yaml", worse.base_url, gate="none", steps=2)
            run_dir = tmp_path / "run"
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [s["accepted"] for s in summary["steps"][1:]] == [True, True]
        assert all(s["val_metric"] is not None for s in summary["steps"])
        assert "ZZWORSE" in final_prompts(run_dir)["all"]
        assert summary["best"]["step"] == 0


class TestOverlap:
    def test_a_samples_loss_calls_do_not_wait_for_another_samples_judge_answer(self, tmp_path: Path) -> None:
        """Step 1's two training samples: the judge answer of one is held back 1.5 s, and the other sample's loss
        calls reach the endpoint before it is answered (each sample's chain goes on as soon as it can)."""
        held: list[float] = []
        handler = deterministic_handler()
        judge_requests = 0
        lock = threading.Lock()

        def hold_first_training_judge(request: RecordedRequest) -> Reply:
            nonlocal judge_requests
            reply = handler(request)
            if role_of(request) == "judge" and isinstance(reply, Completion):
                with lock:
                    judge_requests += 1
                    first_training = judge_requests == 4 + 6 + 1  # after step 0's validation and test calls
                if first_training:
                    held.append(request.received_at + 1.5)
                    return dataclasses.replace(reply, delay=1.5)
            return reply

        with FakeOpenAI(hold_first_training_judge) as endpoint:
            # steps not pipelined: step 1's first judge request is then the one after all of step 0's
            config = write_config(tmp_path / "run.yaml", endpoint.base_url, mode="SSS", steps=1, pipeline_steps=False)
            assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 0
            losses = sorted(r.received_at for r in endpoint.requests if role_of(r) == "loss")
        assert len(held) == 1 and len(losses) == B * K
        assert sum(at < held[0] for at in losses) == K  # the other sample's four critiques, while the judge waits


class TestResume:
    def test_run_killed_mid_step_resumes_to_the_same_result(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """SIGKILL the orchestrator (and its services) during step 2; `resume` ends with the same prompts and
        metrics as an undisturbed run, with every step stored exactly once."""
        config = write_config(tmp_path / "run.yaml", scripted.base_url, mode="SSS", steps=3, concurrency=1)
        reference = tmp_path / "reference"
        assert main(["optimize", "--config", str(config), "--run-dir", str(reference)]) == 0

        killed = tmp_path / "killed"
        process = subprocess.Popen(
            [sys.executable, "-m", "judgeopt", "optimize", "--config", str(config), "--run-dir", str(killed)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:

            def in_step_two() -> bool:
                if not (killed / "run.sqlite").exists():
                    return False
                try:
                    with sqlite3.connect(f"file:{killed / 'run.sqlite'}?mode=ro", uri=True) as db:
                        query = "SELECT COUNT(*) FROM calls WHERE step = 2 AND stage = 'loss'"
                        return bool(db.execute(query).fetchone()[0] > 0)
                except sqlite3.OperationalError:  # the store's tables are being created
                    return False

            wait_until(in_step_two, timeout=120, interval=0.01, message="the run never reached step 2")
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with sqlite3.connect(killed / "run.sqlite") as db:
            # step 2 was in flight (and step 1 too when its test evaluation still ran alongside step 2's training)
            assert db.execute("SELECT MAX(step) FROM steps").fetchone()[0] in (0, 1)

        assert main(["resume", str(killed)]) == 0
        assert outcome(killed) == outcome(reference)
        with sqlite3.connect(killed / "run.sqlite") as db:
            assert db.execute("SELECT step FROM steps ORDER BY step").fetchall() == [(0,), (1,), (2,), (3,)]
            duplicates = db.execute(
                "SELECT COUNT(*) FROM (SELECT request_id, attempt FROM calls GROUP BY 1, 2 HAVING COUNT(*) > 1)"
            )
            assert duplicates.fetchone()[0] == 0

    def test_resume_refuses_a_run_whose_prompt_templates_changed(
        self, scripted: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The manifest records every template the services used; when a service now reports another hash for one
        (planted here in the manifest, as after an upgrade), `resume` refuses in one line naming it, before any
        model call."""
        config = write_config(tmp_path / "run.yaml", scripted.base_url, mode="SSS", steps=1, max_calls=1)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        store = RunStore(run_dir)
        manifest = store.manifest()
        roles = {name.split("/")[0] for name in manifest.templates}
        assert roles == {"judge", "loss", "gradient", "optimizer"} and len(manifest.templates) >= 8
        planted = {**manifest.templates, "gradient/gradient_system": "0" * 64}
        store.write_manifest(manifest.model_copy(update={"templates": planted}))
        store.close()
        capsys.readouterr()
        before = len(scripted.requests)
        assert main(["resume", str(run_dir), "--max-calls", "1000"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's line
        assert err.startswith("ConfigError: prompt template gradient/gradient_system changed")
        assert len(scripted.requests) == before


class TestModelSwap:
    def test_only_gradient_calls_reach_the_gradient_endpoint(self, scripted: FakeOpenAI, tmp_path: Path) -> None:
        """With --gradient-endpoint set, the second endpoint sees gradient calls only, and the first none of them."""
        scripted.clear()
        with FakeOpenAI(deterministic_handler()) as second:
            config = write_config(tmp_path / "run.yaml", scripted.base_url, steps=1)
            args = ["optimize", "--config", str(config), "--run-dir", str(tmp_path / "run")]
            args += ["--gradient-endpoint", second.base_url, "--gradient-model", "gradient-model"]
            assert main(args) == 0
            second_roles = {role_of(r) for r in second.requests}
            models = {r.model for r in second.requests}
        main_roles = [role_of(r) for r in scripted.requests]
        assert second_roles == {"gradient"} and models == {"gradient-model"}
        assert "gradient" not in main_roles and {"judge", "loss", "optimizer"} <= set(main_roles)
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["provenance"]["models"]["gradient"] == "gradient-model"
        assert summary["provenance"]["models"]["judge"] == "fake-model"


class TestBadInput:
    def test_bad_policy_file_is_one_line_naming_the_stage(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A policy with a separate stage after a combined one is refused before any service starts."""
        policy = tmp_path / "bad.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "judge": {"routing": "joint", "fields": ["instruction", "sample"]},
                    "loss": {"routing": "joint", "fields": ["prediction", "ground_truth", "verdict"]},
                    "gradient": {"routing": "per_criterion", "fields": ["instruction", "critique"]},
                    "optimizer": {"routing": "joint", "fields": ["instruction", "gradient"]},
                }
            )
        )
        code = main(
            [
                "optimize",
                "--policy",
                str(policy),
                "--endpoint",
                "http://127.0.0.1:9/v1",
                "--run-dir",
                str(tmp_path / "r"),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1
        assert err[0].startswith("PolicyError: ") and "'gradient'" in err[0]
        assert not (tmp_path / "r").exists()

    def test_bad_dataset_is_one_line_naming_file_row_and_field(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A dataset row with a score outside its criterion's range is refused before any model call."""
        data = tmp_path / "reviews.csv"
        data.write_text("comment,correctness\nfine,0.5\nbad,7\n")
        config = tmp_path / "run.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "run": {
                        "dataset": {
                            "name": "file",
                            "path": str(data),
                            "text_fields": ["comment"],
                            "criteria": [
                                {"name": "correctness", "min_score": 0, "max_score": 1, "integer_scores": False}
                            ],
                        }
                    },
                    "models": {"default": {"base_url": "http://127.0.0.1:9/v1"}},
                }
            )
        )
        code = main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "r")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1
        assert (
            err[0].startswith("DataError: ")
            and "reviews.csv" in err[0]
            and "row 2" in err[0]
            and "correctness" in err[0]
        )

    def test_unknown_mode_and_gate(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """An unknown --mode or --gate is one line with the valid choices."""
        assert (
            main(["optimize", "--mode", "XYZ", "--endpoint", "http://127.0.0.1:9/v1", "--run-dir", str(tmp_path / "a")])
            == 2
        )
        assert "SSS" in capsys.readouterr().err
        assert (
            main(
                [
                    "optimize",
                    "--gate",
                    "accuracy",
                    "--endpoint",
                    "http://127.0.0.1:9/v1",
                    "--run-dir",
                    str(tmp_path / "b"),
                ]
            )
            == 2
        )
        assert "unknown gate" in capsys.readouterr().err

    def test_existing_run_directory_is_not_overwritten(
        self, scripted: FakeOpenAI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Starting a run in a directory that holds one is refused and points at `resume`."""
        config = write_config(tmp_path / "run.yaml", scripted.base_url, steps=0)
        run_dir = tmp_path / "run"
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        capsys.readouterr()
        assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 2
        assert "judgeopt resume" in capsys.readouterr().err


class TestFailures:
    def test_failed_calls_are_retried_and_the_result_equals_the_undisturbed_run(
        self, scripted: FakeOpenAI, tmp_path: Path
    ) -> None:
        """Every distinct model request fails once with HTTP 500; the retry budget absorbs it, every attempt is
        stored, and prompts and metrics equal the undisturbed run's."""
        config = write_config(tmp_path / "clean.yaml", scripted.base_url, steps=2)
        assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "clean")]) == 0
        with FakeOpenAI(fail_first_time(deterministic_handler())) as flaky:
            config = write_config(tmp_path / "flaky.yaml", flaky.base_url, steps=2)
            assert main(["optimize", "--config", str(config), "--run-dir", str(tmp_path / "flaky")]) == 0
        assert outcome(tmp_path / "flaky") == outcome(tmp_path / "clean")
        clean = json.loads((tmp_path / "clean" / "summary.json").read_text())
        flaky_summary = json.loads((tmp_path / "flaky" / "summary.json").read_text())
        assert sum(flaky_summary["failed_attempts"].values()) > 0
        assert flaky_summary["llm_calls"] == clean["llm_calls"]
        for role, attempts in flaky_summary["rpc_attempts"].items():
            assert attempts == clean["rpc_attempts"][role] + flaky_summary["failed_attempts"][role]

    def test_step_with_too_many_failures_is_retried_then_rolled_back(self, tmp_path: Path) -> None:
        """When every loss call fails, each step is retried once and then recorded as failed, prompt unchanged."""
        with FakeOpenAI(failing_role(deterministic_handler(), "loss")) as broken:
            config = write_config(tmp_path / "run.yaml", broken.base_url, steps=2, call_attempts=2)
            run_dir = tmp_path / "run"
            assert main(["optimize", "--config", str(config), "--run-dir", str(run_dir)]) == 0
        summary = json.loads((run_dir / "summary.json").read_text())
        assert [s["status"] for s in summary["steps"]] == ["initial", "failed", "failed"]
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            attempts = db.execute("SELECT step, attempts FROM steps WHERE step > 0 ORDER BY step").fetchall()
            prompts = {p for (p,) in db.execute("SELECT prompt_id FROM steps")}
        assert attempts == [(1, 2), (2, 2)]
        assert len(prompts) == 1
