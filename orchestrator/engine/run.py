"""Starting and resuming a run: data, policy, tracks, services, store, loop — wired together once, here.

A new run writes its whole configuration to the store first, so ``resume`` needs only the run directory. Agent
services are either started here as separate processes (with one shared local model when a role has no
endpoint) or reached at given addresses (services deployed elsewhere, e.g. on Kubernetes).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from judgeopt.core.errors import ConfigError
from judgeopt.core.hub_model import LocalModel
from judgeopt.core.local_model import LocalModelServer
from judgeopt.core.models import ModelsConfig
from judgeopt.core.redact import is_redacted_url
from judgeopt.core.roles import ROLES, Role
from judgeopt.core.tracing import span
from judgeopt.orchestrator.agent_clients import AgentClients, ClientSettings
from judgeopt.orchestrator.config import RunConfig
from judgeopt.orchestrator.data.loading import load_dataset
from judgeopt.orchestrator.data.records import CriterionSpec, Dataset
from judgeopt.orchestrator.data.splits import split_dataset
from judgeopt.orchestrator.engine.adaptive import AdaptiveLimits
from judgeopt.orchestrator.engine.artifacts import PromptState, content_id
from judgeopt.orchestrator.engine.budget import RunBudget, StepShape, mean_sample_tokens
from judgeopt.orchestrator.engine.executor import CallExecutor, CallRetries
from judgeopt.orchestrator.engine.loop import LoopSettings, OptimizationLoop, Track
from judgeopt.orchestrator.engine.manifest import RunManifest
from judgeopt.orchestrator.engine.pareto import check_weights
from judgeopt.orchestrator.engine.policy import Policy, resolve_policy, study_policy
from judgeopt.orchestrator.engine.priority import PriorityLimiter
from judgeopt.orchestrator.engine.ratelimit import RateLimits
from judgeopt.orchestrator.engine.store import STORE_FILE, RunStore
from judgeopt.orchestrator.engine.summary import write_summary
from judgeopt.orchestrator.errors import PolicyError, RunFailed
from judgeopt.orchestrator.fleet import ServiceFleet

log = structlog.get_logger(__name__)

DEFAULT_TASK = (
    "You will be given a source text and a candidate text written from it. Evaluate the candidate text on the "
    "criteria below."
)
SUMMEVAL_TASK = "You will be given a news article and a summary written for it. Evaluate the summary."
LOCAL_CONCURRENCY = 1
REMOTE_CONCURRENCY = 8


@dataclass(frozen=True)
class RunSetup:
    config: RunConfig
    models: ModelsConfig
    policy: Policy
    dataset: Dataset


def initial_prompt(config: RunConfig, criteria: tuple[CriterionSpec, ...], dataset: Dataset) -> PromptState:
    if config.prompt_protocol == "study":
        task = config.task_description or ""  # empty: the agents' default, the study's evaluation directive
    else:
        task = config.task_description or (SUMMEVAL_TASK if dataset.name.startswith("summeval") else DEFAULT_TASK)
    unknown = sorted(set(config.initial_instructions) - {c.name for c in criteria})
    if unknown:
        raise ConfigError(f"initial_instructions: unknown criterion {unknown[0]!r}")
    return PromptState(
        task,
        tuple(
            (c.name, config.initial_instructions.get(c.name, f"Rate from {c.min_score:g} to {c.max_score:g}."))
            for c in criteria
        ),
    )


def tracks_for(policy: Policy, criteria: tuple[CriterionSpec, ...], prompt: PromptState) -> list[Track]:
    """One track with every criterion, or (Single-Task) one per criterion with a one-criterion prompt."""
    if not policy.independent_criteria:
        return [Track("all", criteria, prompt)]
    return [
        Track(c.name, (c,), PromptState(prompt.task_description, ((c.name, prompt.instruction(c.name)),)))
        for c in criteria
    ]


def policy_of(config: RunConfig) -> Policy:
    """The run's policy: its mode or policy file, as the study ran it under the study protocol, with the
    mitigations the run turns on (one place, for a single run and an experiment's cells alike)."""
    policy = resolve_policy(config.mode, config.policy_file)
    if config.prompt_protocol == "study" and config.policy_file is None:
        policy = study_policy(policy.name)  # the preset as the study ran it (its optimizer sees the conversations)
    if config.judge_routing is not None:
        policy = policy.with_judge_routing(config.judge_routing)
    if config.prompt_protocol == "study" and policy.judge.routing == "prefix_shared":
        raise PolicyError(f"policy {policy.name!r}: the study's prompt protocol has no prefix-shared judge layout")
    if config.conflict_arbiter:
        policy = policy.with_conflict_arbiter()
    if config.specificity_fallback is not None:
        policy = policy.model_copy(update={"specificity_fallback": config.specificity_fallback})
    return policy


def prepare(config: RunConfig, models: ModelsConfig, data_dir: Path | None) -> RunSetup:
    """Everything that can be checked before any service starts or any call is made."""
    policy = policy_of(config)
    dataset = load_dataset(config.dataset, data_dir)
    policy.check_criteria([c.name for c in dataset.criteria])
    check_weights(config.archive_weights, [c.name for c in dataset.criteria])
    return RunSetup(config, models, policy, dataset)


@contextlib.asynccontextmanager
async def agent_clients(
    models: ModelsConfig,
    services_dir: Path,
    *,
    addresses: Mapping[Role, str] | None,
    local_model: LocalModel | None,
    roles: tuple[Role, ...] = ROLES,
    settings: ClientSettings | None = None,
    spawned: ServiceFleet | None = None,
) -> AsyncIterator[AgentClients]:
    """Clients of running services at ``addresses``, or of ``roles`` started here as subprocesses (sharing one
    local model server when a role has no endpoint), or of the ``spawned`` fleet the caller started early.

    ``settings`` carry TLS and the token. Services started here listen on plaintext 127.0.0.1, so TLS settings
    apply only to given ``addresses``; a token (``settings.token_env``) is passed on to the started services,
    which then require it, as remote ones do. Settings read back from a run whose endpoint had credentials in its
    URL (stored redacted) cannot start services."""
    settings = settings or ClientSettings()
    if spawned is not None:
        async with spawned, AgentClients(spawned.serving, settings) as clients:
            yield clients
        return
    if addresses is not None:
        async with AgentClients(addresses, settings) as clients:
            yield clients
        return
    if settings.tls:
        raise ConfigError("--tls-ca applies to services given by --<role>-addr; services started here are on loopback")
    for role in roles:
        base_url = models.for_role(role).base_url
        if base_url is not None and is_redacted_url(str(base_url)):
            raise ConfigError(
                f"the {role} endpoint's user:password@ is not stored with the run, so its services cannot be started "
                f"here again: continue on running services (--{role}-addr and the other roles' addresses)"
            )
    with contextlib.ExitStack() as stack:
        local_url = None
        if models.needs_local_model(roles):
            server = LocalModelServer(local_model, log_file=services_dir / "local-model.log")
            local_url = stack.enter_context(server).base_url
        resolved = ModelsConfig(
            **{role: models.for_role(role, local_base_url=local_url).model_dump(mode="json") for role in roles}
        )
        # Each role's calls wait for that role's own service only: the judge's first call need not wait for the
        # optimizer's service to come up.
        fleet = ServiceFleet(resolved, services_dir, roles=roles, token_env=settings.token_env, wait_for_all=False)
        async with fleet, AgentClients(fleet.serving, settings) as clients:
            yield clients


def judge_key(models: ModelsConfig) -> str:
    judge = models.for_role("judge", local_base_url="http://local").model_dump(mode="json")
    return content_id({k: judge[k] for k in ("model", "temperature", "max_tokens", "logprobs", "structured_output")})


def start_run(setup: RunSetup, run_dir: Path) -> RunStore:
    """Create the run directory and record the configuration (refuses a directory that already holds a run); an
    endpoint's ``user:password@`` is recorded as ``REDACTED@``."""
    if (run_dir / STORE_FILE).is_file():
        raise ConfigError(f"{run_dir} already holds a run; use `judgeopt resume {run_dir}` or another --run-dir")
    splits = split_dataset(setup.dataset, setup.config.dataset)  # refuse impossible sizes before creating anything
    criteria = setup.dataset.criteria
    tracks = tracks_for(setup.policy, criteria, initial_prompt(setup.config, criteria, setup.dataset))
    manifest = RunManifest(
        run_id=uuid.uuid4().hex[:12],
        config=setup.config,
        models=setup.models.redacted(),
        model_names={r: setup.models.for_role(r, local_base_url="http://local").model for r in ROLES},
        policy=setup.policy,
        criteria=criteria,
        text_fields=setup.dataset.text_fields,
        tracks=tuple(t.name for t in tracks),
        data_checksum=setup.dataset.checksum,
        splits={k: tuple(r.id for r in getattr(splits, k)) for k in ("train", "val", "test")},
        test_truths={c.name: tuple(r.labels[c.name] for r in splits.test) for c in criteria},
    )
    store = RunStore(run_dir, writer=True)
    if store.holds_run():  # another process started one here since the check above
        store.close()
        raise ConfigError(f"{run_dir} already holds a run; use `judgeopt resume {run_dir}` or another --run-dir")
    store.write_manifest(manifest)
    store.set_status("running")
    return store


def open_run(run_dir: Path, *, writer: bool = False) -> RunStore:
    """The run in ``run_dir``; a ``writer`` (resume, an experiment's cell) holds the directory until the store is
    closed, refused if another process does."""
    if not (run_dir / STORE_FILE).is_file():
        raise ConfigError(f"{run_dir} holds no run (no {STORE_FILE})")
    store = RunStore(run_dir, writer=writer)
    try:
        store.manifest()  # refuse a store without a readable manifest before anything runs
    except BaseException:
        store.close()
        raise
    return store


async def check_templates(store: RunStore, clients: AgentClients, roles: tuple[Role, ...] = ROLES) -> None:
    """Record the prompt templates the services use at the run's first start; later, refuse (before any model
    call) when a service now uses a template that differs from the run's."""
    manifest = store.manifest()
    current = await clients.templates(roles)
    if not manifest.templates:
        store.write_manifest(manifest.model_copy(update={"templates": current}))
        return
    changed = manifest.changed_templates(current)
    if changed:
        raise ConfigError(
            f"prompt template {changed[0]} changed since the run started ({len(changed)} changed); resume it with "
            "the judgeopt version that started it, or start a new run"
        )


def default_concurrency(config: RunConfig, models: ModelsConfig) -> int:
    return config.concurrency or (LOCAL_CONCURRENCY if models.needs_local_model() else REMOTE_CONCURRENCY)


async def run_with_clients(
    store: RunStore,
    run_dir: Path,
    clients: AgentClients,
    *,
    data_dir: Path | None,
    limit: PriorityLimiter | None = None,
    rate_limits: RateLimits | None = None,
    on_step: Callable[[str, int], None] | None = None,
    dataset: Dataset | None = None,
) -> dict[str, Any]:
    """Run (or continue) the run recorded in ``store`` to its last step on running services; returns the summary.
    ``limit`` and ``rate_limits`` are shared by the runs of an experiment; by default the run's own apply."""
    manifest = store.manifest()
    config, models, policy = manifest.config, manifest.models, manifest.policy
    # A resumed run checks its services' templates before any model call; a new run records them while it starts.
    recording = None
    if manifest.templates:
        await check_templates(store, clients)
    else:
        recording = asyncio.create_task(check_templates(store, clients))
    dataset = dataset or load_dataset(config.dataset, data_dir)
    if dataset.checksum != manifest.data_checksum:
        raise ConfigError(f"the dataset changed since the run started (checksum differs from {run_dir})")
    splits = split_dataset(dataset, config.dataset)
    tracks = tracks_for(policy, dataset.criteria, initial_prompt(config, dataset.criteria, dataset))
    limit = limit or PriorityLimiter(default_concurrency(config, models))
    adaptive = None
    if config.concurrency_mode == "adaptive":
        adaptive = AdaptiveLimits(models, ROLES, maximum=default_concurrency(config, models))
    budget = None
    if config.max_calls is not None or config.max_tokens is not None or config.max_cost is not None:
        budget = RunBudget(config.max_calls, config.max_tokens, config.max_cost, models)
    sample_tokens = mean_sample_tokens([*splits.train, *splits.val, *splits.test])
    batch = min(config.batch_size, len(splits.train))
    shapes = {
        t.name: StepShape(policy, len(t.criteria), batch, len(splits.val), len(splits.test), models, sample_tokens)
        for t in tracks
    }
    loop = OptimizationLoop(
        policy=policy,
        tracks=tracks,
        splits=splits,
        settings=LoopSettings(
            run=config,
            judge_key=judge_key(models),
            budget=budget,
            shapes=shapes,
        ),
        clients=clients,
        executor=CallExecutor(
            store,
            limit=limit,
            retries=CallRetries(attempts=config.call_attempts),
            rate_limits=rate_limits or RateLimits(models, ROLES, window=config.rate_window_seconds),
            adaptive=adaptive,
            trace_attributes={"mode": policy.name, "run_id": manifest.run_id},
            ready=clients.ready,
        ),
        store=store,
        run_id=manifest.run_id,
        on_step=on_step,
    )
    try:
        with span("run", run_id=manifest.run_id, mode=policy.name, profile=config.profile, steps=config.steps) as run:
            await _beside(loop.run(), recording)
            run.set(budget_reached=loop.budget_reached)
    except RunFailed:  # the cause goes to the command line; the run says it failed, not that it is running
        store.set_status("failed")
        write_summary(store, run_dir, concurrency=adaptive.report() if adaptive else None)
        raise
    store.set_status("budget_reached" if loop.budget_reached else "complete")
    return write_summary(store, run_dir, concurrency=adaptive.report() if adaptive else None)


async def _beside(main: Awaitable[None], side: asyncio.Task[None] | None) -> None:
    """Await ``main`` with ``side`` running alongside; the first failure of either cancels the other and is raised."""
    if side is None:
        await main
        return
    main_task = asyncio.ensure_future(main)
    try:
        await asyncio.wait((main_task, side), return_when=asyncio.FIRST_EXCEPTION)
        if side.done() and not side.cancelled() and side.exception() is not None:
            main_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main_task
            await side  # raises its failure
        await main_task
        await side
    finally:
        for task in (main_task, side):
            task.cancel()


async def execute(
    store: RunStore,
    run_dir: Path,
    *,
    data_dir: Path | None,
    addresses: Mapping[Role, str] | None = None,
    local_model: LocalModel | None = None,
    on_step: Callable[[str, int], None] | None = None,
    dataset: Dataset | None = None,
    client_settings: ClientSettings | None = None,
    models: ModelsConfig | None = None,
    spawned: ServiceFleet | None = None,
) -> dict[str, Any]:
    """Run (or continue) one run, starting its services here unless ``addresses`` are given; ``client_settings``
    carry TLS and the token (never stored with the run: they belong to the invocation). ``models``: the services'
    settings as the invocation gave them (with any endpoint credentials, which the run stores redacted); by default
    the run's. ``spawned``: the run's services, already started by ``spawn_services``."""
    models = models or store.manifest().models
    services = run_dir / "services"
    async with agent_clients(
        models, services, addresses=addresses, local_model=local_model, settings=client_settings, spawned=spawned
    ) as clients:
        return await run_with_clients(store, run_dir, clients, data_dir=data_dir, on_step=on_step, dataset=dataset)
