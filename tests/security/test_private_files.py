"""Files with data are the owner's alone: 0600, in directories judgeopt creates 0700, even under a umask of 0.

Every command here runs as its own process with ``umask 0``, where a plain ``open`` would make files 0666: a run
(store, summary, services' logs and ledgers), its report, its exported judge, and scores of new data with it. The
exported judge names no API-key variable and carries no URL credentials; ``judgeopt judge`` takes the key's
variable from the command line.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.runs import run_settings, scripted_model
from helpers.scripts import deterministic_handler, role_of

from judgeopt.core.private_files import open_private_text, private_dir
from judgeopt.orchestrator.engine.store import RunStore

KEY_ENV = "JUDGEOPT_PRIVATE_FILES_KEY"
KEY = "sk-private-files-0123456789"
URL_CREDENTIALS = "planted-user:planted-password"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def judgeopt(*argv: str) -> subprocess.CompletedProcess[str]:
    """`judgeopt ARGV` as its own process, with umask 0 and the key in its variable."""
    completed = subprocess.run(
        [sys.executable, "-m", "judgeopt", *argv],
        env={**os.environ, KEY_ENV: KEY},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        umask=0,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def assert_private_tree(root: Path) -> int:
    """Every file under ``root`` is 0600 and every folder (``root`` too) 0700; returns how many were checked."""
    entries = [root, *root.rglob("*")]
    for entry in entries:
        expected = 0o700 if entry.is_dir() else 0o600
        assert mode(entry) == expected, f"{entry} is {oct(mode(entry))}, expected {oct(expected)}"
    return len(entries)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("private")


@pytest.fixture(scope="module")
def finished_run(endpoint: FakeOpenAI, folder: Path) -> Path:
    """A one-step run into runs/run-1 (neither folder exists yet), the key's variable from the command line and the
    judge's endpoint with user:password@."""
    config = folder / "run.yaml"
    judge_url = endpoint.base_url.replace("http://", f"http://{URL_CREDENTIALS}@", 1)
    models = {"default": scripted_model(endpoint.base_url), "judge": {"base_url": judge_url}}
    config.write_text(yaml.safe_dump({"models": models, "run": run_settings(steps=1)}))
    run_dir = folder / "runs" / "run-1"
    judgeopt("optimize", "--config", str(config), "--run-dir", str(run_dir), "--api-key-env", KEY_ENV)
    return run_dir


@pytest.fixture(scope="module")
def exported(finished_run: Path, folder: Path) -> Path:
    out = folder / "judge.yaml"
    judgeopt("export", str(finished_run), "--out", str(out), "--no-measure")
    return out


class TestModes:
    def test_the_run_directory_is_private(self, finished_run: Path, folder: Path) -> None:
        """run.sqlite, summary.json, the services' logs and ledgers: 0600; runs/, run-1/, services/: 0700."""
        names = {p.name for p in finished_run.rglob("*")}
        assert {"run.sqlite", "summary.json", "services", "judge.log", "judge.ledger.jsonl"} <= names
        assert assert_private_tree(folder / "runs") >= 10

    def test_the_report_is_private(self, finished_run: Path) -> None:
        judgeopt("report", str(finished_run))
        assert mode(finished_run / "report.md") == mode(finished_run / "report.html") == 0o600
        figures = list((finished_run / "report_files").glob("*.png"))
        assert figures
        assert assert_private_tree(finished_run) >= 10 + len(figures)

    def test_the_exported_judge_is_private(self, exported: Path) -> None:
        assert mode(exported) == 0o600

    def test_scores_and_their_state_are_private(self, exported: Path, endpoint: FakeOpenAI, folder: Path) -> None:
        """`judgeopt judge` writes its scores CSV 0600 and its resumable state in a 0700 folder."""
        text_fields = yaml.safe_load(exported.read_text())["text_fields"]
        data = folder / "rows.jsonl"
        data.write_text("".join(json.dumps({f: f"{f} {n}" for f in text_fields}) + "\n" for n in range(2)))
        out = folder / "scores.csv"
        endpoint.clear()
        judgeopt("judge", "--judge", str(exported), "--data", str(data), "--out", str(out), "--api-key-env", KEY_ENV)
        assert len(out.read_text().splitlines()) == 3
        assert mode(out) == 0o600
        assert assert_private_tree(folder / "scores.csv.state") >= 3
        # The key's variable came from the command line, and the endpoint got the key.
        judged = [r for r in endpoint.requests if role_of(r) == "judge"]
        assert judged and all(r.headers["authorization"] == f"Bearer {KEY}" for r in judged)

    def test_the_store_and_its_journal_files_are_private(self, tmp_path: Path) -> None:
        """run.sqlite-wal and -shm exist while the store is open, with the database file's mode."""
        old = os.umask(0)
        try:
            store = RunStore(tmp_path / "store")
            try:
                store.set_meta("probe", 1)
                journal = [tmp_path / "store" / f"run.sqlite{suffix}" for suffix in ("", "-wal", "-shm")]
                assert [mode(p) for p in journal] == [0o600] * 3
            finally:
                store.close()
        finally:
            os.umask(old)
        assert mode(tmp_path / "store") == 0o700

    def test_an_existing_wider_file_is_narrowed_and_existing_folders_kept(self, tmp_path: Path) -> None:
        """Appending to a file made 0644 elsewhere narrows it; a folder judgeopt did not create keeps its mode."""
        tmp_path.chmod(0o755)
        target = tmp_path / "ledger.jsonl"
        target.write_text("{}\n")
        target.chmod(0o644)
        with open_private_text(target, append=True) as handle:
            handle.write("{}\n")
        assert mode(target) == 0o600 and target.read_text() == "{}\n{}\n"
        assert private_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
        assert (mode(tmp_path), mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o755, 0o700, 0o700)


class TestExportedJudge:
    def test_it_names_no_key_variable_and_no_url_credentials(self, exported: Path, endpoint: FakeOpenAI) -> None:
        """The run used --api-key-env and a judge endpoint with user:password@; the file keeps neither (the
        command that uses it gives the key's variable)."""
        model = yaml.safe_load(exported.read_text())["model"]
        assert model.get("api_key_env") is None
        assert model["base_url"] == endpoint.base_url
        text = exported.read_text()
        assert KEY_ENV not in text and "planted" not in text
