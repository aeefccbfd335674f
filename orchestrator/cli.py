"""The ``judgeopt`` command line. Errors print as one ``Type: message`` line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agents.config import ROLES, ModelsConfig, Role, describe_validation_error
from agents.errors import AgentError, ModelConfigError
from agents.local_model import LocalModelError, LocalModelServer
from orchestrator.config import RunConfig, load_config
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


# --- optimize / resume / audit --------------------------------------------------------------------------------

QUICK_PROFILE: dict[str, Any] = {"steps": 2, "batch_size": 2}
QUICK_DATASET: dict[str, Any] = {"train_size": 20, "val_size": 4, "test_size": 8}
"""A run the embedded 135M model finishes in minutes on two cores; the study's settings are RunConfig's defaults."""


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run (override the config file's run section)")
    group.add_argument("--mode", help="preset policy: SSS, SSC, SCC, CCC or single")
    group.add_argument("--policy", type=Path, metavar="FILE", help="a policy in YAML (instead of --mode)")
    group.add_argument(
        "--gate", help="validation metric of the gate (mae, spearman, kendall, pearson, off_by_one) or none"
    )
    group.add_argument("--steps", type=int)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--test-interval", type=int)
    group.add_argument("--seed", type=int)
    group.add_argument(
        "--concurrency", type=int, help="calls in flight at once (default: 1 on the local model, else 8)"
    )
    group.add_argument("--dataset", choices=["summeval", "summeval-wgc", "file"])
    group.add_argument("--data-file", type=Path, help="the dataset file (with --dataset file)")
    group.add_argument("--criteria", help="comma-separated subset of the dataset's criteria")
    group.add_argument("--train-size", type=int)
    group.add_argument("--val-size", type=int)
    group.add_argument("--test-size", type=int)
    group.add_argument(
        "--profile", choices=["quick", "study"], help="quick: a minutes-long run (default on the local model)"
    )
    group.add_argument(
        "--drop-output-format", action="store_true", help="study quirk: drop the judge's output format after an update"
    )
    group.add_argument(
        "--val-overlaps-train", action="store_true", help="study quirk: draw validation from the training rows"
    )
    parser.add_argument("--run-dir", type=Path, help="where the run is stored (default runs/<timestamp>)")
    parser.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    for role in ROLES:
        parser.add_argument(f"--{role}-addr", metavar="HOST:PORT", help=f"a running {role} service (dns:///… balances)")


def _run_config(args: argparse.Namespace, base: RunConfig, models: ModelsConfig) -> RunConfig:
    data: dict[str, Any] = base.model_dump(mode="json", exclude_unset=False)
    profile = args.profile or ("quick" if models.needs_local_model() and args.config is None else "study")
    if profile == "quick":
        data = {**data, **QUICK_PROFILE, "dataset": {**data["dataset"], **QUICK_DATASET}}
    flags = {
        "mode": args.mode,
        "policy_file": str(args.policy) if args.policy else None,
        "gate": args.gate,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "test_interval": args.test_interval,
        "seed": args.seed,
        "concurrency": args.concurrency,
        "drop_output_format_after_update": args.drop_output_format or None,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    dataset_flags = {
        "name": args.dataset,
        "path": str(args.data_file) if args.data_file else None,
        "train_size": args.train_size,
        "val_size": args.val_size,
        "test_size": args.test_size,
        "seed": args.seed,
        "val_overlaps_train": args.val_overlaps_train or None,
    }
    data["dataset"].update({k: v for k, v in dataset_flags.items() if v is not None})
    if args.criteria:
        known = {c["name"]: c for c in data["dataset"].get("criteria", [])}
        data["dataset"]["criteria"] = [known.get(n.strip(), {"name": n.strip()}) for n in args.criteria.split(",")]
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"run settings: {describe_validation_error(exc)}") from None


def _addresses(args: argparse.Namespace) -> dict[Role, str] | None:
    given: dict[Role, str] = {role: getattr(args, f"{role}_addr") for role in ROLES}
    if not any(given.values()):
        return None
    missing = [role for role, addr in given.items() if not addr]
    if missing:
        raise ConfigError(f"--{missing[0]}-addr is missing: give every role's address, or none to start services here")
    return given


def _run_with_progress(store: Any, run_dir: Path, args: argparse.Namespace, **kwargs: Any) -> int:
    from orchestrator.run import execute
    from orchestrator.summary import summary_tables

    console = Console(stderr=True)
    config = RunConfig.model_validate(store.get_meta("config"))
    tracks: list[str] = store.get_meta("tracks")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {t: progress.add_task(f"track {t}", total=config.steps + 1) for t in tracks}
        for t in tracks:
            done = store.last_step(t)
            progress.update(bars[t], completed=0 if done is None else done.step + 1)

        def on_step(track: str, step: int) -> None:
            progress.update(bars[track], completed=step + 1)

        summary = asyncio.run(
            execute(
                store,
                run_dir,
                data_dir=args.data_dir,
                addresses=_addresses(args),
                local_model=args.local_model,
                on_step=on_step,
                **kwargs,
            )
        )
    out = Console()
    for table in summary_tables(summary):
        out.print(table)
    out.print(f"run directory: {run_dir}  (summary.json, run.sqlite, services/)")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from orchestrator.run import prepare, start_run

    configure_logging(json=False, level=logging.WARNING)
    file_config = load_config(args.config)
    models = _models_from_args(args, ROLES)
    config = _run_config(args, file_config.run, models)
    setup = prepare(config, models, args.data_dir)
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    store = start_run(setup, run_dir)
    try:
        return _run_with_progress(store, run_dir, args, dataset=setup.dataset)
    finally:
        store.close()


def _cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.run import open_run

    configure_logging(json=False, level=logging.WARNING)
    store = open_run(args.run_dir)
    try:
        return _run_with_progress(store, args.run_dir, args)
    finally:
        store.close()


def _cmd_audit(args: argparse.Namespace) -> int:
    from orchestrator.audit import audit_run

    configure_logging(json=False)
    report = audit_run(args.run_dir)
    for breach in report.breaches:
        print(f"BREACH {breach.stage} {breach.request_id}: {breach.problem}")
    verdict = "ok" if report.ok else f"{len(report.breaches)} breach(es)"
    print(f"audit {verdict}: {report.checked_requests} received requests checked in {len(report.ledger_files)} ledgers")
    return 0 if report.ok else EXIT_FAILURE


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

    optimize = commands.add_parser("optimize", help="run an optimization (default: a quick run on the local model)")
    _add_model_flags(optimize, ROLES)
    _add_run_flags(optimize)
    optimize.set_defaults(handler=_cmd_optimize)

    resume = commands.add_parser("resume", help="continue a stopped run from its last complete step")
    resume.add_argument("run_dir", type=Path)
    resume.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    resume.add_argument("--local-model", type=Path, metavar="GGUF", help="GGUF file for the embedded local model")
    for role in ROLES:
        resume.add_argument(f"--{role}-addr", metavar="HOST:PORT", help=f"a running {role} service")
    resume.set_defaults(handler=_cmd_resume)

    audit = commands.add_parser("audit", help="check what the services received against the run's policy")
    audit.add_argument("run_dir", type=Path)
    audit.set_defaults(handler=_cmd_audit)
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
