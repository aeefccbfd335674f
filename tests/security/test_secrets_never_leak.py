"""A planted API key and a planted bearer token are used, and appear nowhere a run writes or prints.

`judgeopt optimize` runs as its own process with every role's key in the variable ``--api-key-env`` names and the
services' token in the variable ``--token-env`` names. The scripted endpoint proves the key was really sent; then
every file under the run directory (run.sqlite and its journal, summary.json, services/*.log, the ledgers) and the
command's output are searched for both secrets. The services' config file lives outside the run, in a private
temporary folder removed when the services stop.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI
from helpers.scripts import deterministic_handler, role_of

KEY_ENV = "JUDGEOPT_PLANTED_KEY"
TOKEN_ENV = "JUDGEOPT_PLANTED_TOKEN"
KEY_SECRET = secrets.token_hex(16)
TOKEN_SECRET = secrets.token_hex(16)
KEY = f"sk-planted-{KEY_SECRET}"
TOKEN = f"tok-planted-{TOKEN_SECRET}"
SECRETS = (KEY, KEY_SECRET, KEY_SECRET[-8:], TOKEN, TOKEN_SECRET, TOKEN_SECRET[-8:])
"""The whole values, and their random parts (a masked form such as ``sk-pl…1a2b`` would still show the tail)."""


@pytest.fixture(scope="module")
def scripted() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(deterministic_handler()) as server:
        yield server


@pytest.fixture(scope="module")
def planted_run(scripted: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A short run whose roles all use the planted key, on services that require the planted token."""
    folder = tmp_path_factory.mktemp("planted")
    config = folder / "run.yaml"
    model = {"base_url": scripted.base_url, "model": "fake-model", "structured_output": "json_schema"}
    run = {
        "mode": "CCC",
        "steps": 1,
        "batch_size": 2,
        "gate": "mae",
        "bootstrap_resamples": 0,
        "concurrency": 4,
        "dataset": {"name": "summeval", "train_size": 6, "val_size": 2, "test_size": 2},
    }
    config.write_text(yaml.safe_dump({"models": {"default": {**model, "max_retries": 0, "timeout": 10}}, "run": run}))
    run_dir = folder / "run"
    scripted.clear()
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "judgeopt", "optimize", "--config", str(config), "--run-dir", str(run_dir)),
            *("--api-key-env", KEY_ENV, "--token-env", TOKEN_ENV),
        ],
        env={**os.environ, KEY_ENV: KEY, TOKEN_ENV: TOKEN},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return run_dir, completed.stdout + completed.stderr


class TestPlantedSecrets:
    def test_the_key_is_really_sent_to_the_endpoint_by_every_role(
        self, planted_run: tuple[Path, str], scripted: FakeOpenAI
    ) -> None:
        """Every model call of every role carries `Authorization: Bearer <planted key>`: the key was used, so its
        absence below means something."""
        assert scripted.requests
        assert {role_of(r) for r in scripted.requests} == {"judge", "loss", "gradient", "optimizer"}
        assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in scripted.requests)

    def test_the_token_never_reaches_the_model_endpoint(
        self, planted_run: tuple[Path, str], scripted: FakeOpenAI
    ) -> None:
        """The services' bearer token is for the orchestrator→service hop only."""
        for request in scripted.requests:
            assert TOKEN_SECRET not in json.dumps(request.headers) + json.dumps(request.body)

    def test_the_services_required_the_token(self, planted_run: tuple[Path, str]) -> None:
        """Each started service announced token authentication, and the run still completed: the orchestrator
        presented the token on every call."""
        run_dir, _ = planted_run
        for role in ("judge", "loss", "gradient", "optimizer"):
            lines = (run_dir / "services" / f"{role}.log").read_text().splitlines()
            ready = [json.loads(x) for x in lines if x.startswith("{") and '"service.ready"' in x]
            assert ready and ready[0]["token_auth"] is True, role
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"

    def test_no_file_of_the_run_holds_either_secret(self, planted_run: tuple[Path, str]) -> None:
        """run.sqlite, summary.json, the services' logs and ledgers: neither secret, in whole or in part. The store
        keeps the variable's name, which is all a resume needs; the services' config file is not left behind."""
        run_dir, _ = planted_run
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert {"run.sqlite", "summary.json", "judge.log", "loss.ledger.jsonl"} <= names
        assert "services.yaml" not in names
        for path in files:
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{path} holds a planted secret"
        assert KEY_ENV.encode() in (run_dir / "run.sqlite").read_bytes()

    def test_the_command_output_holds_neither_secret(self, planted_run: tuple[Path, str]) -> None:
        """Nothing the command printed (progress, tables, warnings) contains either secret."""
        _, output = planted_run
        assert "summary.json" in output  # the closing paragraph: something was printed and captured
        for secret in SECRETS:
            assert secret not in output
