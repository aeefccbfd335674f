"""Endpoint errors reach logs, the run store and gRPC statuses as their status and a redacted message; a
``base_url`` with ``user:password@`` is never logged or stored in clear.

The scripted endpoint echoes the ``Authorization`` header it received in its error bodies (as endpoints reporting a
wrong key do): the loss role's key (Bearer) in a 401 that is not retried, and the judge's URL credentials (Basic) in
a 503 the first time each request is sent (retried, then answered). Every place the echo could land is searched.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.fake_openai import FakeOpenAI, Handler, HttpError, RecordedRequest, Reply, echo_authorization
from helpers.messages import critique_request
from helpers.runs import run_settings, scripted_model
from helpers.scripts import deterministic_handler, role_of
from helpers.services import served

from judgeopt.core.errors import ConfigError
from judgeopt.core.models import ModelsConfig
from judgeopt.core.redact import is_redacted_url, redact, redact_url, strip_url_credentials
from judgeopt.orchestrator.agent_clients import AgentClients
from judgeopt.orchestrator.engine.run import agent_clients
from judgeopt.orchestrator.errors import AgentCallError

KEY_ENV = "JUDGEOPT_REDACTION_TEST_KEY"
KEY_SECRET = secrets.token_hex(12)
KEY = f"sk-planted-{KEY_SECRET}"
URL_USER = "planted-user"
URL_PASSWORD = f"pw{secrets.token_hex(10)}"
BASIC = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
SECRETS = (KEY, KEY_SECRET, URL_PASSWORD, BASIC)


class TestRedact:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("Authorization: Bearer abc.def-123456", "Authorization: REDACTED"),
            ("{'authorization': 'Basic dXNlcjpwdw==', 'x': 1}", "{'authorization': 'REDACTED', 'x': 1}"),
            ('"Authorization":"token-zzz-99999"}', '"Authorization":"REDACTED"}'),
            ("Incorrect API key provided: Bearer tok-1234567890", "Incorrect API key provided: Bearer REDACTED"),
            ("Incorrect API key provided: Basic dXNlcjpwdw==", "Incorrect API key provided: Basic REDACTED"),
            ("key sk-proj-AbC_123-xyz is invalid", "key sk-REDACTED is invalid"),
            ("POST http://bob:hunter2@llm:8080/v1 failed", "POST http://REDACTED@llm:8080/v1 failed"),
            ("see https://tok123@example.com/x", "see https://REDACTED@example.com/x"),
        ],
    )
    def test_secrets_are_replaced_and_the_rest_kept(self, text: str, expected: str) -> None:
        assert redact(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "model endpoint refused the request: HTTP 400: context length exceeded",
            "the task-specific instruction is too long (disk-backed cache at http://llm:8080/v1)",
            "--token-env: environment variable JUDGEOPT_TOKEN is not set",
        ],
    )
    def test_ordinary_text_is_left_alone(self, text: str) -> None:
        assert redact(text) == text

    def test_urls(self) -> None:
        url = "https://bob:hunter2@api.example.com:8443/v1"
        assert redact_url(url) == "https://REDACTED@api.example.com:8443/v1"
        assert is_redacted_url(redact_url(url)) and not is_redacted_url(url)
        assert strip_url_credentials(url) == "https://api.example.com:8443/v1"
        plain = "http://llm:8080/v1"
        assert redact_url(plain) == strip_url_credentials(plain) == plain


# --- end to end -----------------------------------------------------------------------------------------------


def echoing_handler() -> tuple[Handler, list[str]]:
    """Loss: 401 echoing the header, always. Judge: 503 echoing the header the first time a request is sent. The
    rest answered by the deterministic script. Returns the handler and the list of bodies it echoed."""
    answer = deterministic_handler()
    refuse, unavailable = echo_authorization(401), echo_authorization(503)
    seen: set[str] = set()
    lock = threading.Lock()
    echoed: list[str] = []

    def handle(request: RecordedRequest) -> Reply:
        role = role_of(request)
        key = json.dumps(request.messages, sort_keys=True)
        with lock:
            first = key not in seen
            seen.add(key)
        if role == "loss" or (role == "judge" and first):
            reply = (refuse if role == "loss" else unavailable)(request)
            assert isinstance(reply, HttpError)
            echoed.append(reply.message)
            return reply
        return answer(request)

    return handle, echoed


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[FakeOpenAI, list[str]]]:
    handler, echoed = echoing_handler()
    with FakeOpenAI(handler) as server:
        yield server, echoed


def with_credentials(base_url: str) -> str:
    return base_url.replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@", 1)


@pytest.fixture(scope="module")
def echoed_run(echo: tuple[FakeOpenAI, list[str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A one-step run: every role's key from --api-key-env, the judge's endpoint with user:password@."""
    server, _ = echo
    folder = tmp_path_factory.mktemp("echoed")
    config = folder / "run.yaml"
    models = {"default": scripted_model(server.base_url), "judge": {"base_url": with_credentials(server.base_url)}}
    config.write_text(yaml.safe_dump({"models": models, "run": run_settings(steps=1, mode="SSS")}))
    run_dir = folder / "run"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "judgeopt", "optimize", "--config", str(config), "--run-dir", str(run_dir)),
            *("--api-key-env", KEY_ENV),
        ],
        env={**os.environ, KEY_ENV: KEY},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return run_dir, completed.stdout + completed.stderr


class TestEchoedSecrets:
    def test_the_endpoint_received_and_echoed_both_secrets(
        self, echoed_run: tuple[Path, str], echo: tuple[FakeOpenAI, list[str]]
    ) -> None:
        """The key (loss, Bearer) and the URL credentials (judge, Basic) were sent and came back in error bodies:
        their absence below means something."""
        _, echoed = echo
        assert any(f"Bearer {KEY}" in body for body in echoed)
        assert any(f"Basic {BASIC}" in body for body in echoed)

    def test_the_store_keeps_status_and_redacted_message(self, echoed_run: tuple[Path, str]) -> None:
        """The calls table records each failed attempt with its code and the endpoint's status, the echoed header
        shown as REDACTED."""
        run_dir, _ = echoed_run
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            failed = db.execute("SELECT stage, code, error FROM calls WHERE outcome = 'failed'").fetchall()
        loss = [(code, error) for stage, code, error in failed if stage == "loss"]
        judge = [(code, error) for stage, code, error in failed if stage == "judge"]
        assert loss and judge
        for code, error in loss:
            assert code == "FAILED_PRECONDITION"
            assert "HTTP 401" in error and "Incorrect API key provided: Bearer REDACTED" in error, error
        for code, error in judge:
            assert code == "UNAVAILABLE"
            assert "HTTP 503" in error and "Incorrect API key provided: Basic REDACTED" in error, error

    def test_no_file_of_the_run_and_no_output_holds_a_secret(self, echoed_run: tuple[Path, str]) -> None:
        """Service logs, run.sqlite (and any journal), summary.json, ledgers: none holds the key, the password or
        their Basic encoding; nor does what the command printed."""
        run_dir, output = echoed_run
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert {"run.sqlite", "summary.json", "loss.log", "judge.log"} <= {p.name for p in files}
        for path in files:
            data = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in data, f"{path} holds {secret[:6]}…"
        for secret in SECRETS:
            assert secret not in output

    def test_the_url_is_kept_redacted_where_it_is_recorded(self, echoed_run: tuple[Path, str]) -> None:
        """The judge's endpoint is logged and stored as http://REDACTED@host…, still telling which host it was."""
        run_dir, _ = echoed_run
        ready = [
            json.loads(line)
            for line in (run_dir / "services" / "judge.log").read_text().splitlines()
            if '"service.ready"' in line
        ]
        assert ready and ready[0]["endpoint"].startswith("http://REDACTED@127.0.0.1:")
        with sqlite3.connect(run_dir / "run.sqlite") as db:
            (manifest,) = db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        stored = json.loads(manifest)["models"]["judge"]["base_url"]
        assert stored.startswith("http://REDACTED@127.0.0.1:") and is_redacted_url(stored)


class TestGrpcStatus:
    async def test_the_status_the_client_sees_is_redacted(
        self, echo: tuple[FakeOpenAI, list[str]], tmp_path: Path
    ) -> None:
        """The loss service, on an endpoint that echoes the key in a 401: the client's error and the raw gRPC
        status details carry the status and the redacted message, never the key; nor does the service's log."""
        server, echoed = echo
        log = tmp_path / "loss.log"
        before = len(echoed)
        with served(log, "--api-key-env", KEY_ENV, endpoint=server.base_url, env={KEY_ENV: KEY}) as service:
            async with AgentClients({"loss": service.address}) as clients:
                with pytest.raises(AgentCallError) as caught:
                    await clients.critique(critique_request())
        assert any(f"Bearer {KEY}" in body for body in echoed[before:])
        details = caught.value.__cause__.details()  # type: ignore[union-attr]
        assert details == "model endpoint refused the request: HTTP 401: Incorrect API key provided: Bearer REDACTED"
        assert details in str(caught.value)
        for text in (str(caught.value), log.read_text()):
            for secret in SECRETS:
                assert secret not in text


class TestStoredCredentials:
    async def test_services_are_not_started_from_an_endpoint_stored_redacted(self, tmp_path: Path) -> None:
        """A run stores `user:password@` as REDACTED@; continuing it needs running services, since services started
        from the stored settings would call the endpoint without its credentials. One line, nothing started."""
        models = ModelsConfig(default={"base_url": with_credentials("http://127.0.0.1:9/v1")}).redacted()
        assert str(models.for_role("loss").base_url) == "http://REDACTED@127.0.0.1:9/v1"
        services = tmp_path / "services"
        with pytest.raises(ConfigError) as caught:
            async with agent_clients(models, services, addresses=None, local_model=None):
                pass
        assert str(caught.value) == (
            "the judge endpoint's user:password@ is not stored with the run, so its services cannot be started here "
            "again: continue on running services (--judge-addr and the other roles' addresses)"
        )
        assert not services.exists()
