"""The `judgeopt` command line: one-line errors with a non-zero exit, and `serve` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers.eventually import wait_until

from judgeopt.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "judgeopt", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("content", "fragment"),
        [
            ("models: [1, 2", "not valid YAML"),
            ("- a\n- b\n", "top level must be a mapping"),
            ("models:\n  loss: {temperature: 9}\n", "models.loss: temperature"),
            ("models:\n  gradient: {modle: x}\n", "modle"),
            ("modles: {}\n", "modles"),
            ("models:\n  judge: {api_key_env: 'not a name!'}\n", "api_key_env"),
        ],
        ids=["bad-yaml", "not-a-mapping", "out-of-range", "typo-in-role", "typo-top-level", "bad-env-name"],
    )
    def test_bad_config_gives_one_line_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
    ) -> None:
        """A bad config file is refused with one `ConfigError: <file>: …` line naming the problem, exit 2."""
        config = tmp_path / "bad.yaml"
        config.write_text(content)
        code = main(["serve", "loss", "--config", str(config), "--endpoint", "http://127.0.0.1:9/v1"])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert len(err.splitlines()) == 1
        assert err.startswith("ConfigError: ") and str(config) in err and fragment in err

    def test_missing_config_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config path that does not exist is named in the error."""
        code = main(["serve", "judge", "--config", str(tmp_path / "nope.yaml")])
        assert code == 2
        assert "nope.yaml: cannot read config file" in capsys.readouterr().err

    def test_bad_endpoint_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed --gradient-endpoint is refused with a one-line message naming the flag."""
        code = main(["optimize", "--gradient-endpoint", "not a url"])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert err.startswith("ConfigError: --gradient-") and "base_url" in err

    def test_missing_api_key_variable_is_named(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A role whose api_key_env is unset fails at start-up naming the variable, never printing a key."""
        env_name = "JUDGEOPT_TEST_UNSET_KEY"
        os.environ.pop(env_name, None)
        code = main(["serve", "loss", "--endpoint", "http://127.0.0.1:9/v1", "--api-key-env", env_name])
        err = capsys.readouterr().err.strip()
        assert code == 2
        assert env_name in err


class TestServeProcess:
    def test_port_zero_prints_the_port_and_sigterm_stops_gracefully(self, tmp_path: Path) -> None:
        """`serve --port 0` prints the bound port, answers SERVING, and exits 0 on SIGTERM after NOT_SERVING."""
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "judgeopt",
                    "serve",
                    "optimizer",
                    "--port",
                    "0",
                    "--endpoint",
                    "http://127.0.0.1:9/v1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: "listening on" in log.read_text(), timeout=30, message="service never printed its port")
            line = next(line for line in log.read_text().splitlines() if line.startswith("listening on"))
            port = int(line.rsplit(":", 1)[1])
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        events = [json.loads(x)["event"] for x in log.read_text().splitlines() if x.startswith("{")]
        assert events.index("service.ready") < events.index("service.stopping") < events.index("service.stopped")
