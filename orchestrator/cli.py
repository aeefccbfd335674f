"""The ``judgeopt`` command line. Errors print as one ``Type: message`` line and exit non-zero."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.config import ALL_ROLES, ROLES, ModelsConfig, Role, describe_validation_error
from agents.errors import AgentError, ModelConfigError
from agents.local_model import LocalModelError, LocalModelServer
from orchestrator.config import GridConfig, RunConfig, load_config
from orchestrator.errors import ConfigError, JudgeoptError
from orchestrator.log_setup import configure_logging
from services.config import CredentialError, ServiceConfig, server_tls, service_token

if TYPE_CHECKING:
    from orchestrator.agent_clients import ClientSettings

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
    return _apply_model_flags(args, load_config(args.config).models, roles)


def _apply_model_flags(args: argparse.Namespace, models: ModelsConfig, roles: Sequence[Role]) -> ModelsConfig:
    """``--endpoint/--model/--api-key-env`` (every role; for `judge`, the judge) and ``--<role>-…`` (one role)."""
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


def _service_config(args: argparse.Namespace, base: ServiceConfig) -> ServiceConfig:
    """The config file's ``service:`` section with the flags applied, its TLS files and token checked now."""
    flags = {
        "host": args.host,
        "port": args.port,
        "ledger_path": args.ledger,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "token_env": args.token_env,
        "metrics_port": args.metrics_port,
    }
    try:
        service = ServiceConfig.model_validate(
            {**base.model_dump(), **{k: v for k, v in flags.items() if v is not None}}
        )
    except ValidationError as exc:
        raise ConfigError(f"service settings: {describe_validation_error(exc)}") from None
    try:
        server_tls(service)
        service_token(service)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    return service


def _cmd_serve(args: argparse.Namespace) -> int:
    from services.server import serve  # the serving stack loads only for this command

    configure_logging(json=True)
    role: Role = args.role
    file_config = load_config(args.config)
    service = _service_config(args, file_config.service)
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


def _add_run_flags(parser: argparse.ArgumentParser, *, single_run: bool = True) -> None:
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
    _add_budget_flags(group)
    parser.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    if not single_run:
        return
    parser.add_argument("--dry-run", action="store_true", help="print the calls and tokens per role; make no call")
    parser.add_argument("--run-dir", type=Path, help="where the run is stored (default runs/<timestamp>)")
    _add_address_flags(parser, ROLES)


def _add_budget_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--max-calls", type=int, help="budget: stop at the step boundary before exceeding N calls")
    group.add_argument("--max-tokens", type=int, help="budget: stop at the step boundary before exceeding N tokens")


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
        "max_calls": args.max_calls,
        "max_tokens": args.max_tokens,
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


def _add_client_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security of the calls to the services")
    group.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="CA certificate that verifies the services given by --…-addr: TLS"
    )
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    group.add_argument("--tls-server-name", metavar="NAME", help="name the services' certificates are checked against")
    group.add_argument(
        "--token-env", metavar="VAR", help="env variable holding the services' bearer token (sent on every call)"
    )


def _client_settings(args: argparse.Namespace, addresses: Mapping[Role, str] | None) -> ClientSettings:
    """The client's TLS and token settings, every file and the token read once now (before a run starts)."""
    from orchestrator.agent_clients import ClientSettings

    settings = ClientSettings(
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        server_name_override=args.tls_server_name,
        token_env=args.token_env,
    )
    if settings.tls and addresses is None:
        raise ConfigError(
            "--tls-ca applies to running services given by --<role>-addr; services started here are on loopback"
        )
    settings.check()
    return settings


def _add_address_flags(parser: argparse.ArgumentParser, roles: Sequence[Role]) -> None:
    for role in roles:
        parser.add_argument(f"--{role}-addr", metavar="HOST:PORT", help=f"a running {role} service (dns:///… balances)")


def _addresses(args: argparse.Namespace, roles: Sequence[Role] = ROLES) -> dict[Role, str] | None:
    given: dict[Role, str] = {role: getattr(args, f"{role}_addr") for role in roles}
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
    if summary["status"] == "budget_reached":
        last = summary["steps"][-1]["step"] if summary["steps"] else None
        out.print(
            f"stopped at the budget after step {last}: `judgeopt resume {run_dir} --max-calls N` continues with more"
        )
    if summary.get("cost"):
        out.print(f"cost: {summary['cost']['total']:.2f}")
    return 0


def _cmd_optimize(args: argparse.Namespace) -> int:
    from orchestrator.run import prepare, start_run

    configure_logging(json=False, level=logging.WARNING)
    file_config = load_config(args.config)
    models = _models_from_args(args, ROLES)
    config = _run_config(args, file_config.run, models)
    client_settings = _client_settings(args, _addresses(args))
    setup = prepare(config, models, args.data_dir)
    if args.dry_run:
        _print_estimate(setup)
        return 0
    run_dir = args.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    store = start_run(setup, run_dir)
    try:
        return _run_with_progress(store, run_dir, args, dataset=setup.dataset, client_settings=client_settings)
    finally:
        store.close()


def _print_estimate(setup: Any) -> None:
    from orchestrator.budget import estimate_run
    from orchestrator.datasets import split_dataset
    from orchestrator.run import initial_prompt, tracks_for

    config, criteria = setup.config, setup.dataset.criteria
    tracks = tracks_for(setup.policy, criteria, initial_prompt(config, criteria, setup.dataset))
    splits = split_dataset(setup.dataset, config.dataset)
    estimate = estimate_run(
        setup.policy,
        [len(t.criteria) for t in tracks],
        splits,
        setup.models,
        steps=config.steps,
        batch=config.batch_size,
        test_interval=config.test_interval,
    )
    table = Table(title=f"dry run: {setup.policy.name}, {config.steps} steps — no call made")
    for column in ("role", "calls (at most)", "tokens (estimate)", "cost (estimate)"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for role in ROLES:
        price = setup.models.for_role(role, local_base_url="http://local").price_per_1k_tokens
        tokens = estimate.tokens.get(role, 0)
        cost = "—" if price is None else f"{tokens / 1000 * price:.2f}"
        table.add_row(role, str(estimate.calls.get(role, 0)), str(tokens), cost)
    table.add_row("total", str(estimate.total_calls), str(estimate.total_tokens), "")
    Console().print(table)


def _cmd_resume(args: argparse.Namespace) -> int:
    from orchestrator.run import open_run

    configure_logging(json=False, level=logging.WARNING)
    client_settings = _client_settings(args, _addresses(args))
    store = open_run(args.run_dir)
    budget = {"max_calls": args.max_calls, "max_tokens": args.max_tokens}
    if any(v is not None for v in budget.values()):  # resuming with a larger budget
        config = store.get_meta("config")
        store.set_meta("config", {**config, **{k: v for k, v in budget.items() if v is not None}})
    try:
        return _run_with_progress(store, args.run_dir, args, client_settings=client_settings)
    finally:
        store.close()


def _grid_from_args(args: argparse.Namespace, base: GridConfig) -> GridConfig:
    data = base.model_dump(mode="json")
    if args.modes:
        data["modes"] = [m.strip() for m in args.modes.split(",")]
    if args.gates:
        data["gates"] = [g.strip() for g in args.gates.split(",")]
    flags = {"runs": args.runs, "select_on": args.select_on, "diagnostics": False if args.no_diagnostics else None}
    data.update({k: v for k, v in flags.items() if v is not None})
    try:
        return GridConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"grid: {describe_validation_error(exc)}") from None


def _cmd_experiment(args: argparse.Namespace) -> int:
    from orchestrator.experiment import STUDY_RUN, create_experiment, load_experiment, run_experiment

    configure_logging(json=False, level=logging.WARNING)
    if args.resume is None:
        directory = args.dir or Path("experiments") / time.strftime("%Y%m%d-%H%M%S")
        file_config = load_config(args.config)
        models = _models_from_args(args, ALL_ROLES)
        base = file_config.run if args.config is not None else STUDY_RUN
        create_experiment(directory, _grid_from_args(args, file_config.grid), _run_config(args, base, models), models)
    else:
        directory = args.resume
    grid, base, _ = load_experiment(directory)
    addresses = _addresses(args, ALL_ROLES if grid.diagnostics else ROLES)
    client_settings = _client_settings(args, addresses)
    cells = len(grid.modes) * len(grid.gates) * grid.runs
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(f"experiment ({cells} cells × {base.steps + 1} steps)", total=cells * (base.steps + 1))
        reached: dict[str, int] = {}

        def on_cell_step(cell: str, _track: str, step: int) -> None:
            reached[cell] = max(reached.get(cell, -1), step)
            progress.update(bar, completed=sum(s + 1 for s in reached.values()))

        overview = asyncio.run(
            run_experiment(
                directory,
                data_dir=args.data_dir,
                local_model=args.local_model,
                on_cell_step=on_cell_step,
                addresses=addresses,
                client_settings=client_settings,
            )
        )
    print(f"experiment {directory}: {overview['cells']} cells ({len(overview['skipped'])} were already finished)")
    print(f"report: judgeopt report {directory}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.reporting import write_report

    configure_logging(json=False, level=logging.WARNING)
    markdown, html = write_report(args.directory)
    print(f"wrote {markdown} and {html}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from orchestrator.export import export_judge, write_judge

    configure_logging(json=False, level=logging.WARNING)
    judge = export_judge(args.run_dir, args.step)
    write_judge(judge, args.out)
    source = judge.source
    print(
        f"wrote {args.out}: step {source['step']} of run {source['run_id']} (chosen on {source['chosen_on']}; "
        f"test macro ρ {source['test_macro_rho']})"
    )
    return 0


def _cmd_judge(args: argparse.Namespace) -> int:
    from orchestrator.apply import score_file
    from orchestrator.executor import CallExecutor
    from orchestrator.export import read_judge
    from orchestrator.ratelimit import RateLimits
    from orchestrator.run import LOCAL_CONCURRENCY, REMOTE_CONCURRENCY, agent_clients

    configure_logging(json=False, level=logging.WARNING)
    judge = read_judge(args.judge)
    # The exported settings as the default section, so --endpoint/--model/--api-key-env override them.
    models = _apply_model_flags(args, ModelsConfig(default=judge.model.model_dump(mode="json")), [])
    routing = args.routing or judge.routing
    local = models.needs_local_model(("judge",))
    concurrency = args.concurrency or (LOCAL_CONCURRENCY if local else REMOTE_CONCURRENCY)
    console = Console(stderr=True)
    addresses: dict[Role, str] | None = {"judge": args.judge_addr} if args.judge_addr else None
    client_settings = _client_settings(args, addresses)

    async def run() -> Any:
        limit = asyncio.Semaphore(concurrency)
        rates = RateLimits(models, ("judge",), window=60.0)
        services = args.out.parent / f"{args.out.name}.state" / "services"
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        async with agent_clients(
            models,
            services,
            addresses=addresses,
            local_model=args.local_model,
            roles=("judge",),
            settings=client_settings,
        ) as clients:
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task("scoring", total=None)

                def on_progress(done: int, total: int) -> None:
                    progress.update(bar, completed=done, total=total)

                return await score_file(
                    judge,
                    args.data,
                    args.out,
                    clients,
                    lambda store: CallExecutor(store, limit=limit, rate_limits=rates),
                    routing=routing,
                    id_field=args.id_field,
                    on_progress=on_progress,
                )

    outcome = asyncio.run(run())
    print(f"{args.out}: {outcome.scored} rows scored, {outcome.skipped} already there, {outcome.failed} failed")
    if outcome.evaluation is not None:
        table = Table(title="agreement with the human scores")
        for column in ("criterion", "Spearman ρ", "Kendall τ", "Pearson r", "MAE", "off-by-one", "n"):
            table.add_column(column, justify="left" if column == "criterion" else "right")
        for name, m in outcome.evaluation.per_criterion.items():
            table.add_row(
                name, *(f"{v:.3f}" for v in (m.spearman, m.kendall, m.pearson, m.mae, m.off_by_one)), str(m.n)
            )
        Console().print(table)
    return EXIT_FAILURE if outcome.failed else 0


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
    serve.add_argument("role", choices=ALL_ROLES)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind; 0 picks a free one and prints it")
    serve.add_argument("--ledger", type=Path, help="append what each request carried to this JSON-lines file")
    serve.add_argument(
        "--metrics-port", type=int, metavar="N", help="serve Prometheus metrics at http://HOST:N/metrics (0: any free)"
    )
    security = serve.add_argument_group("security (override the config file's service section)")
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate chain: serve TLS only")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="require client certificates from this CA (mutual TLS)"
    )
    security.add_argument(
        "--token-env", metavar="VAR", help="env variable holding the bearer token every agent RPC must carry"
    )
    _add_model_flags(serve, [])
    serve.set_defaults(handler=_cmd_serve)

    local = commands.add_parser("local-llm", help="serve the embedded local model until stopped")
    local.add_argument("--local-model", type=Path, metavar="GGUF", help="another GGUF file")
    local.add_argument("--logprobs", action="store_true", help="return token log-probabilities (more memory)")
    local.set_defaults(handler=_cmd_local_llm)

    optimize = commands.add_parser("optimize", help="run an optimization (default: a quick run on the local model)")
    _add_model_flags(optimize, ROLES)
    _add_run_flags(optimize)
    _add_client_flags(optimize)
    optimize.set_defaults(handler=_cmd_optimize)

    resume = commands.add_parser("resume", help="continue a stopped run from its last complete step")
    resume.add_argument("run_dir", type=Path)
    resume.add_argument("--data-dir", type=Path, help="folder holding the SummEval files")
    resume.add_argument("--local-model", type=Path, metavar="GGUF", help="GGUF file for the embedded local model")
    _add_budget_flags(resume.add_argument_group("budget (replaces the run's)"))
    _add_address_flags(resume, ROLES)
    _add_client_flags(resume)
    resume.set_defaults(handler=_cmd_resume)

    experiment = commands.add_parser("experiment", help="run a grid of modes × gates × repeated runs")
    experiment.add_argument("--dir", type=Path, help="the experiment directory (default experiments/<timestamp>)")
    experiment.add_argument("--resume", type=Path, metavar="DIR", help="continue the experiment in DIR")
    experiment.add_argument("--modes", help="comma-separated presets (default: SSS,SSC,SCC,CCC,single)")
    experiment.add_argument("--gates", help="comma-separated gates (default: mae,none)")
    experiment.add_argument("--runs", type=int, help="repeated runs per configuration (default 3)")
    experiment.add_argument("--select-on", choices=["val", "test"], help="interference: choose best steps on val/test")
    experiment.add_argument("--no-diagnostics", action="store_true", help="skip the evaluator's ratings")
    _add_model_flags(experiment, ALL_ROLES)
    experiment.add_argument("--grid", dest="config", type=Path, metavar="FILE", help="same as --config")
    _add_run_flags(experiment, single_run=False)
    _add_address_flags(experiment, ALL_ROLES)
    _add_client_flags(experiment)
    experiment.set_defaults(handler=_cmd_experiment)

    export = commands.add_parser("export", help="write a run's chosen judge to a self-contained file")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--step", default="best", help="best (on validation), best_oracle (on test) or a step number")
    export.add_argument("--out", type=Path, required=True, help="the judge file to write, e.g. judge.yaml")
    export.set_defaults(handler=_cmd_export)

    judge = commands.add_parser("judge", help="score a data file with an exported judge (resumable)")
    judge.add_argument("--judge", type=Path, required=True, help="a file written by `judgeopt export`")
    judge.add_argument("--data", type=Path, required=True, help="CSV, JSONL or Parquet with the judge's text fields")
    judge.add_argument("--out", type=Path, required=True, help="scores CSV; an existing one is continued")
    judge.add_argument("--routing", choices=["joint", "per_criterion"], help="default: how the run judged")
    judge.add_argument("--id-field", help="column with row ids (default: row-<n>)")
    judge.add_argument("--concurrency", type=int, help="calls in flight (default: 1 on the local model, else 8)")
    judge.add_argument("--judge-addr", metavar="HOST:PORT", help="a running judge service instead of starting one")
    _add_model_flags(judge, [])
    _add_client_flags(judge)
    judge.set_defaults(handler=_cmd_judge)

    report = commands.add_parser("report", help="write report.md and report.html for a run or an experiment")
    report.add_argument("directory", type=Path, help="a run directory or an experiment directory")
    report.set_defaults(handler=_cmd_report)

    audit = commands.add_parser("audit", help="check what the services received against the run's policy")
    audit.add_argument("run_dir", type=Path)
    audit.set_defaults(handler=_cmd_audit)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (e.g. a pod being stopped) unwinds like Ctrl-C, so started services and the local model stop."""
    del signum, frame
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `serve` handles SIGTERM itself: graceful shutdown
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
