"""The ``judgeopt`` command line. Errors print as one ``Type: message`` line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agents.config import ROLES, ModelsConfig, Role, describe_validation_error
from agents.errors import AgentError, ModelConfigError
from agents.local_model import LocalModelError, LocalModelServer
from orchestrator.config import load_config
from orchestrator.errors import ConfigError, JudgeoptError
from orchestrator.log_setup import configure_logging

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _add_model_flags(parser: argparse.ArgumentParser, roles: Sequence[str]) -> None:
    """``--endpoint/--model/--api-key-env`` for every role, and ``--<role>-…`` for one role."""
    group = parser.add_argument_group("models (override the config file)")
    for role in ("", *roles):
        prefix = f"--{role}-" if role else "--"
        who = f"the {role} role" if role else "every role"
        group.add_argument(f"{prefix}endpoint", metavar="URL", help=f"OpenAI-compatible base URL for {who}")
        group.add_argument(f"{prefix}model", metavar="NAME", help=f"model name for {who}")
        group.add_argument(f"{prefix}api-key-env", metavar="VAR", help=f"env variable holding the API key for {who}")
    parser.add_argument("--local-model", type=Path, metavar="GGUF", help="GGUF file for the embedded local model")
    parser.add_argument("--config", type=Path, metavar="FILE", help="judgeopt YAML config file")


def _models_from_args(args: argparse.Namespace, roles: Sequence[Role]) -> ModelsConfig:
    models = load_config(args.config).models
    sections: list[tuple[Role | str, str]] = [("default", ""), *((r, f"{r}_") for r in roles)]
    for section, prefix in sections:
        updates = {
            "base_url": getattr(args, f"{prefix}endpoint"),
            "model": getattr(args, f"{prefix}model"),
            "api_key_env": getattr(args, f"{prefix}api_key_env"),
        }
        if any(v is not None for v in updates.values()):
            try:
                models = models.with_role(section, **updates)  # type: ignore[arg-type]
            except (ValidationError, ValueError) as exc:
                detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
                raise ConfigError(f"--{prefix.replace('_', '-')}…: {detail}") from None
    return models


@contextlib.contextmanager
def _local_model_if_needed(models: ModelsConfig, roles: tuple[Role, ...], gguf: Path | None) -> Iterator[str | None]:
    """Start the one embedded model server a run shares, only if some role has no endpoint."""
    if not models.needs_local_model(roles):
        yield None
        return
    with LocalModelServer(gguf) as server:
        yield server.base_url


# --- serve ------------------------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from services.server import serve  # the serving stack loads only for this command

    configure_logging(json=True)
    role: Role = args.role
    file_config = load_config(args.config)
    flags = {"host": args.host, "port": args.port, "ledger_path": args.ledger}
    service = file_config.service.model_copy(update={k: v for k, v in flags.items() if v is not None})
    models = _models_from_args(args, [])

    def announce(port: int) -> None:
        print(f"listening on {service.host}:{port}", flush=True)

    with _local_model_if_needed(models, (role,), args.local_model) as local_url:
        asyncio.run(serve(role, models.for_role(role, local_base_url=local_url), service, on_ready=announce))
    return 0


# --- local-llm --------------------------------------------------------------------------------------------------


def _cmd_local_llm(args: argparse.Namespace) -> int:
    configure_logging(json=False)
    with LocalModelServer(args.local_model, logprobs=args.logprobs) as server:
        print(f"local model {server.model_name} serving at {server.base_url}  (Ctrl-C stops it)", flush=True)
        stopped = False

        def stop(*_: Any) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, stop)
        with contextlib.suppress(KeyboardInterrupt):
            while not stopped:
                time.sleep(0.2)
    return 0


# --- pass -------------------------------------------------------------------------------------------------------


def _cmd_pass(args: argparse.Namespace) -> int:
    from orchestrator.agent_clients import AgentClients
    from orchestrator.data import SUMMEVAL_FILE, find_data_file, load_summeval
    from orchestrator.fleet import ServiceFleet
    from orchestrator.single_pass import run_single_pass

    configure_logging(json=False)
    if args.samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {args.samples}")
    models = _models_from_args(args, ROLES)
    rows = load_summeval(find_data_file(SUMMEVAL_FILE, args.data_dir), limit=args.samples)
    console = Console()

    async def run(local_url: str | None, log_dir: Path) -> None:
        resolved = ModelsConfig(
            **{role: models.for_role(role, local_base_url=local_url).model_dump(mode="json") for role in ROLES}
        )
        async with ServiceFleet(resolved, log_dir) as fleet, AgentClients(fleet.addresses) as clients:
            started = time.perf_counter()
            result = await run_single_pass(clients, rows)
            _print_pass(console, rows, result, time.perf_counter() - started)

    with (
        _local_model_if_needed(models, ROLES, args.local_model) as local_url,
        tempfile.TemporaryDirectory(prefix="judgeopt-pass-") as tmp,
    ):
        log_dir = args.log_dir or Path(tmp)
        asyncio.run(run(local_url, log_dir))
    return 0


def _print_pass(console: Console, rows: Sequence[Any], result: Any, seconds: float) -> None:
    from google.protobuf.json_format import MessageToDict

    scores = Table(title="judge: scores per sample (prediction / truth)")
    scores.add_column("sample")
    criteria = [s.criterion for s in result.predictions[0].scores]
    for name in criteria:
        scores.add_column(name)
    for row, prediction in zip(rows, result.predictions, strict=True):
        cells = [
            f"{s.value:g} / {row.scores[s.criterion]:g}" if s.HasField("value") else f"— / {row.scores[s.criterion]:g}"
            for s in prediction.scores
        ]
        scores.add_row(row.id, *cells)
    console.print(scores)
    for label, items in (("loss: critiques", result.critiques[:4]), ("gradient: feedback", result.gradients[:4])):
        console.rule(label)
        for item in items:
            console.print(MessageToDict(item, preserving_proto_field_name=True))
    console.rule("optimizer: new instructions")
    for instruction in result.new_instructions:
        console.print(f"[bold]{instruction.criterion}[/bold]: {instruction.text}")
    usage = Table(title=f"calls and tokens per role ({seconds:.1f} s)")
    for column in ("role", "model", "llm calls", "prompt tokens", "completion tokens", "model seconds"):
        usage.add_column(column)
    for role, total in result.usage.items():
        usage.add_row(
            role,
            total.model,
            str(total.llm_calls),
            str(total.prompt_tokens),
            str(total.completion_tokens),
            f"{total.model_seconds:.1f}",
        )
    console.print(usage)


# --- entry ------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="judgeopt", description="Optimize multi-criterion LLM judges.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one agent role as a gRPC service")
    serve.add_argument("role", choices=ROLES)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind; 0 picks a free one and prints it")
    serve.add_argument("--ledger", type=Path, help="append what each request carried to this JSON-lines file")
    _add_model_flags(serve, [])
    serve.set_defaults(handler=_cmd_serve)

    local = commands.add_parser("local-llm", help="serve the embedded local model until stopped")
    local.add_argument("--local-model", type=Path, metavar="GGUF", help="another GGUF file")
    local.add_argument("--logprobs", action="store_true", help="return token log-probabilities (more memory)")
    local.set_defaults(handler=_cmd_local_llm)

    single = commands.add_parser("pass", help="one judge → loss → gradient → optimizer pass on SummEval samples")
    single.add_argument("--samples", type=int, default=2, help="number of SummEval summaries (default 2)")
    single.add_argument("--data-dir", type=Path, help="folder holding summeval.jsonl")
    single.add_argument("--log-dir", type=Path, help="keep the services' logs here")
    _add_model_flags(single, ROLES)
    single.set_defaults(handler=_cmd_pass)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except JudgeoptError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILURE
    except (LocalModelError, AgentError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ModelConfigError) else EXIT_FAILURE
    except KeyboardInterrupt:
        structlog.get_logger().warning("interrupted")
        return 130
