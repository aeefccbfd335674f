"""Safe by default: a service reachable from the network needs TLS and a token (or an explicit ``--insecure``), a
client never sends its token in clear beyond this machine, a config file names only judgeopt's own API-key
variables (any other comes from the command line), and a run without a validation gate says why that is risky."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from helpers.pki import Pki, make_pki
from helpers.runs import scripted_run
from helpers.scripts import deterministic_handler
from structlog.testing import capture_logs

from judgeopt.cli import build_parser, main
from judgeopt.core.config_file import load_serving_config
from judgeopt.core.errors import ConfigError
from judgeopt.core.flags import apply_model_flags
from judgeopt.core.loopback import is_loopback_host, is_loopback_target, target_hosts
from judgeopt.core.service_config import ServiceConfig
from judgeopt.orchestrator.agent_clients import AgentClients, ClientSettings
from judgeopt.orchestrator.config import RunConfig, load_config
from judgeopt.orchestrator.engine.risks import UNGATED, warn_risks
from judgeopt.orchestrator.study.export import read_judge
from judgeopt.services.command import service_config

ENDPOINT = ("--endpoint", "http://127.0.0.1:9/v1")
TOKEN_ENV = "JUDGEOPT_TEST_SAFE_TOKEN"
ROLES = ("judge", "loss", "gradient", "optimizer")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, "tok-safe-defaults")
    return TOKEN_ENV


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("ConfigError: "), err
    return err


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", "loss", *ENDPOINT, *argv])


# --- where plaintext ends -----------------------------------------------------------------------------------------


class TestLoopback:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST"])
    def test_loopback_hosts(self, host: str) -> None:
        assert is_loopback_host(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "judge", "localhost.evil.example"])
    def test_other_hosts_may_be_remote(self, host: str) -> None:
        assert not is_loopback_host(host)

    @pytest.mark.parametrize(
        ("target", "hosts", "loopback"),
        [
            ("127.0.0.1:50051", ["127.0.0.1"], True),
            ("[::1]:50051", ["::1"], True),
            ("localhost:50051", ["localhost"], True),
            ("dns:///judge:50051", ["judge"], False),
            ("dns://10.0.0.10:53/localhost:50051", ["localhost"], True),
            ("ipv4:127.0.0.1:1,127.0.0.2:2", ["127.0.0.1", "127.0.0.2"], True),
            ("ipv4:127.0.0.1:1,10.77.0.5:2", ["127.0.0.1", "10.77.0.5"], False),
            ("ipv6:[::1]:50051", ["::1"], True),
            ("unix:/run/judge.sock", ["localhost"], True),
            ("judge.internal:50051", ["judge.internal"], False),
        ],
    )
    def test_targets(self, target: str, hosts: list[str], loopback: bool) -> None:
        """Every host a gRPC target names is checked: one remote replica among loopback ones makes it remote."""
        assert target_hosts(target) == hosts
        assert is_loopback_target(target) is loopback


# --- serve ---------------------------------------------------------------------------------------------------------


class TestServeBind:
    @pytest.mark.parametrize(
        ("flags", "missing"),
        [
            ([], "--tls-cert/--tls-key and --token-env are missing"),
            (["--tls-cert", "{cert}", "--tls-key", "{key}"], "--token-env is missing"),
            (["--token-env", TOKEN_ENV], "--tls-cert/--tls-key is missing"),
        ],
        ids=["neither", "tls-only", "token-only"],
    )
    @pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
    def test_a_non_loopback_bind_without_tls_and_token_is_refused(
        self,
        pki: Pki,
        token: str,
        capsys: pytest.CaptureFixture[str],
        host: str,
        flags: list[str],
        missing: str,
    ) -> None:
        """`serve --host <not loopback>` without TLS and a token stops before binding: one line saying why and
        what is missing, exit 2."""
        names = {"cert": str(pki.server_cert), "key": str(pki.server_key)}
        code = main(["serve", "loss", *ENDPOINT, "--host", host, *(f.format(**names) for f in flags)])
        err = one_line_error(capsys)
        assert code == 2
        assert err == (
            f"ConfigError: --host {host} is not a loopback address: a service reachable from the network needs TLS "
            f"and a bearer token, and {missing} (or give --insecure to serve without them)"
        )

    def test_the_config_files_host_is_checked_too(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`service.host` in the config file binds as `--host` does, so it is held to the same rule."""
        config = tmp_path / "service.yaml"
        config.write_text(yaml.safe_dump({"service": {"host": "0.0.0.0"}}))
        code = main(["serve", "judge", *ENDPOINT, "--config", str(config)])
        assert code == 2
        assert "--host 0.0.0.0 is not a loopback address" in one_line_error(capsys)

    @pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
    def test_loopback_needs_neither(self, host: str) -> None:
        assert service_config(serve_args("--host", host), ServiceConfig()).host == host

    def test_tls_and_token_or_insecure_allow_any_host(self, pki: Pki, token: str) -> None:
        """With a certificate and a token the service may bind anywhere; --insecure is the explicit way out."""
        secured = serve_args(
            *("--host", "0.0.0.0", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
            *("--token-env", token),
        )
        assert service_config(secured, ServiceConfig()).token_env == token
        assert service_config(serve_args("--host", "0.0.0.0", "--insecure"), ServiceConfig()).host == "0.0.0.0"


# --- the client side -----------------------------------------------------------------------------------------------


class TestClientToken:
    @pytest.mark.parametrize(
        ("judge", "shown"),
        [("10.1.2.3:50051", "10.1.2.3:50051"), ("dns:///judge:50051", "dns:///judge:50051")],
    )
    def test_a_token_over_plaintext_to_a_remote_address_is_refused(
        self, token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], judge: str, shown: str
    ) -> None:
        """`optimize --judge-addr remote --token-env X` without --tls-ca: one line, exit 2, no run directory."""
        addresses = {role: "127.0.0.1:9" for role in ROLES} | {"judge": judge}
        run_dir = tmp_path / "run"
        argv = ["optimize", *ENDPOINT, "--run-dir", str(run_dir), "--token-env", token]
        code = main([*argv, *(x for role, a in addresses.items() for x in (f"--{role}-addr", a))])
        err = one_line_error(capsys)
        assert code == 2
        assert err == (
            f"ConfigError: --token-env would send the bearer token in clear to {shown} (--judge-addr), which is not "
            "on this machine: give --tls-ca to reach it over TLS"
        )
        assert not run_dir.exists()

    async def test_loopback_addresses_may_take_the_token_over_plaintext(self, token: str) -> None:
        settings = ClientSettings(token_env=token)
        async with AgentClients({"judge": "127.0.0.1:9", "loss": "ipv4:127.0.0.1:9,127.0.0.2:9"}, settings) as clients:
            assert clients.settings.token() == "tok-safe-defaults"

    async def test_the_python_client_refuses_it_too(self, token: str, pki: Pki) -> None:
        """AgentClients (what the Python API uses) holds the same line; with a CA the token rides TLS."""
        with pytest.raises(ConfigError, match=r"in clear to ipv4:127\.0\.0\.1:9,10\.0\.0\.2:9 \(--loss-addr\)"):
            AgentClients({"loss": "ipv4:127.0.0.1:9,10.0.0.2:9"}, ClientSettings(token_env=token))
        async with AgentClients({"loss": "10.0.0.2:9"}, ClientSettings(tls_ca=pki.ca, token_env=token)) as clients:
            assert clients.settings.tls


# --- API-key variables in files -------------------------------------------------------------------------------------


FOREIGN = "AWS_SECRET_ACCESS_KEY"
ALLOWED = ("JUDGEOPT_API_KEY", "JUDGEOPT_JUDGE_API_KEY", "JUDGEOPT_EVALUATOR_API_KEY", "OPENAI_API_KEY")


def file_refusal(path: Path, section: str) -> str:
    return (
        f"ConfigError: {path}: models.{section}.api_key_env names {FOREIGN}; a file may name only JUDGEOPT_API_KEY, "
        "JUDGEOPT_<ROLE>_API_KEY or OPENAI_API_KEY (give another with --api-key-env on the command line)"
    )


class TestApiKeyVariables:
    @pytest.mark.parametrize("section", ["default", "judge", "evaluator"])
    def test_serve_refuses_a_config_file_naming_another_variable(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str
    ) -> None:
        """A config file that would have a key read from an arbitrary variable (and sent to the endpoint it also
        names) is refused in one line naming the file, the section and the variable."""
        config = tmp_path / "models.yaml"
        config.write_text(yaml.safe_dump({"models": {section: {"api_key_env": FOREIGN}}}))
        code = main(["serve", "judge", *ENDPOINT, "--config", str(config)])
        assert code == 2
        assert one_line_error(capsys) == file_refusal(config, section)

    def test_optimize_refuses_it_before_creating_anything(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({"models": {"gradient": {"api_key_env": FOREIGN}}}))
        run_dir = tmp_path / "run"
        code = main(["optimize", "--config", str(config), "--run-dir", str(run_dir)])
        assert code == 2
        assert one_line_error(capsys) == file_refusal(config, "gradient")
        assert not run_dir.exists()

    @pytest.mark.parametrize("name", ALLOWED)
    def test_judgeopts_own_names_are_accepted_in_files(self, tmp_path: Path, name: str) -> None:
        config = tmp_path / "models.yaml"
        config.write_text(yaml.safe_dump({"models": {"loss": {"api_key_env": name}}}))
        assert load_serving_config(config).models.for_role("loss").api_key_env == name
        assert load_config(config).models.for_role("loss").api_key_env == name

    def test_the_command_line_may_name_any_variable(self, tmp_path: Path) -> None:
        """--api-key-env and --<role>-api-key-env apply after the file is checked, whatever the name."""
        config = tmp_path / "models.yaml"
        config.write_text(yaml.safe_dump({"models": {"default": {"api_key_env": "OPENAI_API_KEY"}}}))
        args = build_parser().parse_args(
            ["optimize", "--config", str(config), "--api-key-env", FOREIGN, "--judge-api-key-env", "MY_JUDGE_KEY"]
        )
        models = apply_model_flags(args, load_config(config).models, ROLES)
        assert models.for_role("loss").api_key_env == FOREIGN
        assert models.for_role("judge").api_key_env == "MY_JUDGE_KEY"

    def test_a_judge_file_naming_another_variable_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An exported judge file is a file like any other: `judgeopt judge` refuses it in one line."""
        judge_file = tmp_path / "judge.yaml"
        judge_file.write_text(
            yaml.safe_dump(
                {
                    "judgeopt_judge": 1,
                    "task_description": "Rate it.",
                    "instructions": {"fluency": "Rate fluency."},
                    "criteria": [{"name": "fluency"}],
                    "text_fields": ["text"],
                    "routing": "joint",
                    "model": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": FOREIGN},
                    "source": {},
                }
            )
        )
        with pytest.raises(ConfigError) as caught:
            read_judge(judge_file)
        assert f"ConfigError: {caught.value}" == file_refusal(judge_file, "judge").replace(
            "models.judge.api_key_env", "model.api_key_env"
        )
        data = tmp_path / "rows.jsonl"
        data.write_text('{"text": "x"}\n')
        code = main(["judge", "--judge", str(judge_file), "--data", str(data), "--out", str(tmp_path / "out.csv")])
        assert code == 2
        assert FOREIGN in one_line_error(capsys)
        assert not (tmp_path / "out.csv").exists()


# --- runs without a gate -------------------------------------------------------------------------------------------


class TestUngatedRuns:
    def test_gate_none_warns_once_at_the_start_and_in_the_summary(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`optimize` with `gate: none` says once, in one line on stderr, why every candidate being accepted is
        risky; summary.json keeps the warning."""
        run = scripted_run(tmp_path, deterministic_handler(), gate="none", steps=1)
        assert run.code == 0
        warned = [line for line in capsys.readouterr().err.splitlines() if "gate none" in line]
        assert len(warned) == 1 and "run.risk" in warned[0], warned
        assert UNGATED in warned[0]
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["warnings"] == [UNGATED]
        assert [s["accepted"] for s in summary["steps"][1:]] == [True]  # what the warning is about

    def test_a_grid_of_ungated_runs_warns_once_and_a_gated_run_not_at_all(self) -> None:
        """An experiment's many ungated cells give one warning; a run with a gate gives none."""
        with capture_logs() as logs:
            assert warn_risks([RunConfig(gate="none"), RunConfig(gate="mae"), RunConfig(gate="none")]) == [UNGATED]
            assert warn_risks([RunConfig(gate="mae"), RunConfig(gate="spearman")]) == []
        assert [(log["log_level"], log["risk"]) for log in logs] == [("warning", UNGATED)]
