"""One writer per directory, and files replaced whole or not at all.

A second `judgeopt` process on a run, experiment or scoring directory that another holds is refused in one line
naming the holder's pid, before it starts anything. Summaries, experiment definitions, exported judges and the scores
CSV's header are written to a temporary file, flushed and renamed: a crash leaves the old file or the new one. A
scores CSV whose last row was torn by a crash is cut back to its last whole row, and that row is scored again.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.eventually import wait_until
from helpers.fake_openai import FakeOpenAI
from helpers.scripts import deterministic_handler, role_of

from judgeopt.cli import main
from judgeopt.core import files
from judgeopt.core.errors import DirectoryInUse
from judgeopt.core.files import LOCK_FILE, DirectoryLock, write_atomic
from judgeopt.core.models import ModelsConfig
from judgeopt.orchestrator.config import GridConfig, RunConfig
from judgeopt.orchestrator.engine.manifest import RunManifest
from judgeopt.orchestrator.engine.policy import PRESETS
from judgeopt.orchestrator.engine.store import RunStore
from judgeopt.orchestrator.engine.summary import SUMMARY_FILE, write_summary
from judgeopt.orchestrator.study.experiment import EXPERIMENT_FILE, create_experiment
from judgeopt.orchestrator.study.export import read_judge, write_judge

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "code_review"

_HOLD = """
import sys, time
from pathlib import Path
from judgeopt.core.files import DirectoryLock
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
with DirectoryLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """Another process holding ``tmp_path/held``: (the directory, its pid); killed when the test ends."""
    directory = tmp_path / "held"
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(directory)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "held"
        yield directory, process.pid
    finally:
        process.kill()
        process.wait()


def synthetic_run(run_dir: Path) -> None:
    """A run directory holding a manifest and no step (what `resume` opens)."""
    store = RunStore(run_dir)
    store.write_manifest(
        RunManifest(
            run_id="r1",
            config=RunConfig(),
            models=ModelsConfig(),
            model_names={},
            policy=PRESETS["SSS"],
            criteria=(),
            text_fields=("text",),
            tracks=("all",),
            data_checksum="",
            splits={},
        )
    )
    store.close()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- the lock ---------------------------------------------------------------------------------------------------


class TestDirectoryLock:
    def test_a_second_process_is_refused_naming_the_holder(self, holder: tuple[Path, int]) -> None:
        directory, pid = holder
        with pytest.raises(DirectoryInUse) as caught, DirectoryLock(directory):
            pass
        message = str(caught.value)
        assert f"pid {pid}" in message and str(directory) in message and "\n" not in message

    def test_the_lock_goes_with_its_holder(self, holder: tuple[Path, int]) -> None:
        """A killed holder leaves nothing to clean up: the kernel drops its lock, and the next holder records its
        own pid."""
        directory, pid = holder
        os.kill(pid, signal.SIGKILL)

        def free() -> bool:
            try:
                with DirectoryLock(directory):
                    return (directory / LOCK_FILE).read_text().strip() == str(os.getpid())
            except DirectoryInUse:
                return False

        wait_until(free, timeout=10, message="the lock outlived its holder")

    def test_re_entrant_within_one_process(self, tmp_path: Path) -> None:
        """A command that holds its directory may open the store, which takes the lock too."""
        outer, inner = DirectoryLock(tmp_path), DirectoryLock(tmp_path)
        with outer, inner:
            assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with DirectoryLock(tmp_path):  # released whole: takeable again
            pass

    def test_resume_refuses_a_run_another_process_writes(
        self, holder: tuple[Path, int], capsys: pytest.CaptureFixture[str]
    ) -> None:
        directory, pid = holder
        synthetic_run(directory)
        assert main(["resume", str(directory)]) == 1
        line = one_error_line(capsys)
        assert line.startswith("DirectoryInUse: ") and f"pid {pid}" in line

    def test_optimize_refuses_a_run_directory_another_process_writes(
        self, holder: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        directory, pid = holder
        config = tmp_path / "c.yaml"
        dataset = {"name": "file", "path": str(EXAMPLE / "reviews.csv"), "text_fields": ["change", "comment"]}
        dataset |= {"id_field": "id", "criteria": [{"name": "clarity", "max_score": 3}]}
        dataset |= {"train_size": 4, "val_size": 2, "test_size": 2}
        config.write_text(
            yaml.safe_dump({"models": {"default": {"base_url": "http://127.0.0.1:9/v1"}}, "run": {"dataset": dataset}})
        )
        assert main(["optimize", "--config", str(config), "--run-dir", str(directory)]) == 1
        line = one_error_line(capsys)
        assert line.startswith("DirectoryInUse: ") and f"pid {pid}" in line
        assert not (directory / "run.sqlite").exists()

    def test_experiment_refuses_a_directory_another_process_writes(
        self, holder: tuple[Path, int], capsys: pytest.CaptureFixture[str]
    ) -> None:
        directory, pid = holder
        create_experiment(directory, GridConfig(modes=("SSS",), gates=("none",), runs=1), RunConfig(), ModelsConfig())
        assert main(["experiment", "--resume", str(directory)]) == 1
        line = one_error_line(capsys)
        assert line.startswith("DirectoryInUse: ") and f"pid {pid}" in line
        assert not (directory / "services").exists()  # refused before any service started


# --- atomic writes ----------------------------------------------------------------------------------------------


def _crash_on_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(files.os, "replace", crash)


class TestAtomicWrites:
    def test_write_atomic_replaces_the_whole_file_owner_only(self, tmp_path: Path) -> None:
        path = tmp_path / "f.json"
        path.write_text("old content, longer than the new one")
        write_atomic(path, "new")
        assert path.read_text() == "new"
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]

    def test_a_crash_leaves_the_old_file_and_no_temporary(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "f.json"
        path.write_bytes(b"old")
        _crash_on_rename(monkeypatch)
        with pytest.raises(OSError, match="disk gone"):
            write_atomic(path, b"new")
        assert path.read_bytes() == b"old"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]

    def test_summary_experiment_and_judge_files_are_written_atomically(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each of them, interrupted at the rename, leaves what was there before."""
        run_dir = tmp_path / "run"
        synthetic_run(run_dir)
        store = RunStore(run_dir)
        try:
            write_summary(store, run_dir)
            summary = (run_dir / SUMMARY_FILE).read_text()
            experiment = tmp_path / "exp"
            create_experiment(
                experiment, GridConfig(modes=("SSS",), gates=("none",), runs=1), RunConfig(), ModelsConfig()
            )
            definition = (experiment / EXPERIMENT_FILE).read_text()
            judge_file = tmp_path / "judge.yaml"
            judge_file.write_text(yaml.safe_dump(_judge_file()))
            judge = read_judge(judge_file)
            _crash_on_rename(monkeypatch)
            with pytest.raises(OSError, match="disk gone"):
                write_summary(store, run_dir)
            with pytest.raises(OSError, match="disk gone"):
                write_judge(judge, judge_file)
            with pytest.raises(OSError, match="disk gone"):
                (experiment / EXPERIMENT_FILE).unlink()
                create_experiment(
                    experiment, GridConfig(modes=("SSS",), gates=("none",), runs=1), RunConfig(), ModelsConfig()
                )
        finally:
            store.close()
        assert (run_dir / SUMMARY_FILE).read_text() == summary
        assert yaml.safe_load(judge_file.read_text()) == _judge_file()
        assert not (experiment / EXPERIMENT_FILE).exists() and definition
        leftovers = [p.name for d in (run_dir, experiment, tmp_path) for p in d.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []


def _judge_file() -> dict[str, Any]:
    return {
        "judgeopt_judge": 1,
        "task_description": "Judge the comment.",
        "instructions": {"clarity": "Rate from 1 to 3."},
        "criteria": [{"name": "clarity", "max_score": 3}],
        "text_fields": ["change", "comment"],
        "routing": "joint",
        "model": {"base_url": "http://127.0.0.1:9/v1", "model": "fake-model"},
        "source": {"step": 0},
    }


# --- the scores CSV ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


@pytest.fixture
def judge_and_data(scripted: FakeOpenAI, tmp_path: Path) -> tuple[Path, Path]:
    """An exported judge on the scripted endpoint, and eight rows to score."""
    judge = tmp_path / "judge.yaml"
    content = _judge_file()
    content["model"] = {
        "base_url": scripted.base_url,
        "model": "fake-model",
        "structured_output": "json_schema",
        "max_retries": 0,
    }
    judge.write_text(yaml.safe_dump(content))
    data = tmp_path / "rows.csv"
    with (EXAMPLE / "reviews.csv").open(newline="") as source, data.open("w", newline="") as target:
        rows = list(csv.DictReader(source))[:8]
        writer = csv.DictWriter(target, fieldnames=["id", "change", "comment"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return judge, data


def score(judge: Path, data: Path, out: Path) -> int:
    return main(["judge", "--judge", str(judge), "--data", str(data), "--out", str(out), "--id-field", "id"])


class TestScoresCsv:
    @pytest.mark.parametrize(
        "torn",
        [lambda row: row[: len(row) // 2], lambda row: row.rstrip("\n"), lambda row: row.rsplit(",", 1)[0] + "\r\n"],
        ids=["cut-mid-row", "no-line-end", "a-column-short"],
    )
    def test_a_torn_last_row_is_cut_and_scored_again(
        self, torn: Any, judge_and_data: tuple[Path, Path], scripted: FakeOpenAI, tmp_path: Path
    ) -> None:
        judge, data = judge_and_data
        out = tmp_path / "scores.csv"
        assert score(judge, data, out) == 0
        header, *rows = out.read_bytes().decode().splitlines(keepends=True)
        assert len(rows) == 8
        last_id = rows[3].split(",", 1)[0]
        out.write_bytes((header + "".join(rows[:3]) + torn(rows[3])).encode())
        scripted.clear()
        assert score(judge, data, out) == 0
        rescored = [r for r in scripted.requests if role_of(r) == "judge"]
        assert len(rescored) == 0  # the prediction cache answers: the row is rescored, not re-asked
        with out.open(newline="", encoding="utf-8") as handle:
            ids = [row["id"] for row in csv.DictReader(handle)]
        assert sorted(ids) == sorted(r.split(",", 1)[0] for r in rows) and last_id in ids
        assert out.read_bytes().endswith(b"\r\n") and out.read_bytes().count(b"\r\n") == 9

    def test_a_torn_header_is_written_again(self, judge_and_data: tuple[Path, Path], tmp_path: Path) -> None:
        """A file holding only part of a header (a crash while creating it) is started afresh."""
        judge, data = judge_and_data
        out = tmp_path / "scores.csv"
        out.write_text("id,clar", encoding="utf-8")
        assert score(judge, data, out) == 0
        with out.open(newline="", encoding="utf-8") as handle:
            assert len(list(csv.DictReader(handle))) == 8

    def test_judge_refuses_a_state_directory_another_process_writes(
        self, judge_and_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        judge, data = judge_and_data
        out = tmp_path / "held" / "scores.csv"
        state = out.parent / f"{out.name}.state"
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(state)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "held"
            assert score(judge, data, out) == 1
            line = one_error_line(capsys)
            assert line.startswith("DirectoryInUse: ") and f"pid {process.pid}" in line
            assert not out.exists() and not (state / "services").exists()
        finally:
            process.kill()
            process.wait()
