"""Flags the orchestrator's commands share, and their reading into run settings, client settings and addresses."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from judgeopt.core.errors import ConfigError
from judgeopt.core.flags import apply_model_flags, given
from judgeopt.core.roles import ROLES, Role

if TYPE_CHECKING:
    from judgeopt.core.models import ModelsConfig
    from judgeopt.orchestrator.agent_clients import ClientSettings
    from judgeopt.orchestrator.config import MlflowSettings, RunConfig, TrackingConfig


def models_from_args(args: argparse.Namespace, roles: Sequence[Role]) -> ModelsConfig:
    """The config file's models with the model flags applied."""
    from judgeopt.orchestrator.config import load_config

    return apply_model_flags(args, load_config(args.config).models, roles)


def add_run_flags(parser: argparse.ArgumentParser, *, single_run: bool = True) -> None:
    group = parser.add_argument_group("run (override the config file's run section)")
    group.add_argument("--mode", help="preset policy: SSS, SSC, SCC, CCC or single (default: SSS)")
    group.add_argument(
        "--policy", type=Path, metavar="FILE", help="a policy in YAML (instead of --mode; default: the mode's)"
    )
    group.add_argument(
        "--gate",
        help="validation metric of the gate (mae, spearman, kendall, pearson, off_by_one), pareto (no criterion may "
        "drop by more than --gate-epsilon on --gate-metric) or none (default: mae)",
    )
    group.add_argument("--gate-metric", help="per-criterion metric of the pareto gate and its archive (default: mae)")
    group.add_argument("--gate-epsilon", type=float, help="pareto gate: how far one criterion may drop (default: 0)")
    group.add_argument(
        "--gate-drop-interval",
        action="store_true",
        help="pareto gate: refuse a drop only when its bootstrap 95%% interval lies wholly beyond the epsilon",
    )
    group.add_argument(
        "--archive-choice",
        choices=["hypervolume", "weights", "maxmin"],
        help="how the archive's deployable prompt is chosen (best under the pareto gate; default: hypervolume)",
    )
    group.add_argument(
        "--recombine",
        action="store_true",
        help="after the last step, validate one prompt stitched from the archive, each criterion's instruction from "
        "the member best on it (default: off)",
    )
    group.add_argument(
        "--specificity-fallback",
        type=float,
        metavar="SHARE",
        help="after a joint gradient, per-criterion gradient calls for criteria named in less than SHARE (0-1) of "
        "its sentences (default: off)",
    )
    group.add_argument(
        "--conflict-arbiter",
        action="store_true",
        help="before each joint optimizer call, resolve gradients that ask for contradictory changes",
    )
    group.add_argument(
        "--judge-routing",
        choices=["joint", "per_criterion", "prefix_shared"],
        help="route the judge this way whatever --mode/--policy say: joint (one call for every criterion), "
        "per_criterion (one call each, criterion first) or prefix_shared (one call each, the sample first so a "
        "prefix cache prefills it once) (default: the policy's; joint in every preset)",
    )
    group.add_argument(
        "--instruction-max-tokens",
        type=int,
        metavar="N",
        help="length limit: no rewritten instruction over N tokens (words and punctuation marks); asked again once, "
        "then refused, never cut (default: no limit)",
    )
    group.add_argument(
        "--instruction-max-ratio",
        type=float,
        metavar="R",
        help="length limit: no rewritten instruction over R times the median length of the current instructions "
        "(with --instruction-max-tokens, the smaller limit holds) (default: no limit)",
    )
    group.add_argument("--steps", type=int, help="optimization steps after step 0 (default: 2 quick, 12 otherwise)")
    group.add_argument("--batch-size", type=int, help="training samples per step (default: 2 quick, 3 otherwise)")
    group.add_argument("--test-interval", type=int, help="score the test split every N steps (default: 1)")
    group.add_argument("--seed", type=int, help="seed of the data split and the training batches (default: 0)")
    group.add_argument(
        "--concurrency", type=int, help="calls in flight at once (default: 1 on the local model, else 8)"
    )
    group.add_argument(
        "--concurrency-mode",
        choices=["fixed", "adaptive"],
        help="fixed, or adaptive: per endpoint, calls in flight adapt between 1 and --concurrency (default: fixed)",
    )
    group.add_argument(
        "--no-pipeline-steps",
        action="store_true",
        help="finish each step's test evaluation before the next step trains (default: they overlap; same results)",
    )
    group.add_argument(
        "--dataset",
        choices=["summeval", "summeval-wgc", "file"],
        help="summeval (1,600 summaries), summeval-wgc (the study's split) or file (--data-file) (default: summeval; "
        "summeval-wgc under the study profiles)",
    )
    group.add_argument("--data-file", type=Path, help="the dataset file (with --dataset file)")
    group.add_argument("--criteria", help="comma-separated subset of the dataset's criteria (default: all)")
    group.add_argument("--train-size", type=int, help="training rows (default: 20 quick, else 160)")
    group.add_argument("--val-size", type=int, help="validation rows (default: 4 quick, else 100)")
    group.add_argument("--test-size", type=int, help="test rows (default: 8 quick, else 480)")
    group.add_argument(
        "--profile",
        choices=["quick", "full", "study", "study-code"],
        help="quick: minutes on the local model (its default without a config file); full: the study's sizes with "
        "judgeopt's settings (the default otherwise); study: the study's protocol; study-code: plus its code's quirks",
    )
    group.add_argument(
        "--drop-output-format", action="store_true", help="study quirk: drop the judge's output format after an update"
    )
    group.add_argument(
        "--val-overlaps-train", action="store_true", help="study quirk: draw validation from the training rows"
    )
    add_budget_flags(group)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding the SummEval files (default: $JUDGEOPT_DATA_DIR, ../shared/data beside the checkout, "
        "the user cache; else downloaded into the cache)",
    )
    if not single_run:
        return
    parser.add_argument("--dry-run", action="store_true", help="print the calls and tokens per role; make no call")
    parser.add_argument("--run-dir", type=Path, help="where the run is stored (default runs/<timestamp>)")
    add_address_flags(parser, ROLES)


def add_budget_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-calls", type=int, help="budget: stop at the step boundary before exceeding N calls (default: no limit)"
    )
    group.add_argument(
        "--max-tokens", type=int, help="budget: stop at the step boundary before exceeding N tokens (default: no limit)"
    )
    group.add_argument(
        "--max-cost",
        type=float,
        help="budget: stop at the step boundary before the run could cost more, at the models' prices (default: "
        "no limit)",
    )


def run_config(args: argparse.Namespace, base: RunConfig, models: ModelsConfig) -> tuple[RunConfig, ModelsConfig]:
    """``base`` (what the config file set) over the profile's settings, then the run flags over both; the profile
    may set the roles' output caps and temperatures too."""
    from judgeopt.orchestrator.profiles import Profile, apply_profile

    default: Profile = "quick" if models.needs_local_model() and args.config is None else "full"
    profile: Profile = args.profile or (base.profile if base.profile != "custom" else default)
    data, models = apply_profile(profile, base.model_dump(mode="json", exclude_unset=True), models)
    data.update(
        given(
            {
                "mode": args.mode,
                "policy_file": str(args.policy) if args.policy else None,
                "gate": args.gate,
                "gate_metric": args.gate_metric,
                "gate_epsilon": args.gate_epsilon,
                "gate_drop_interval": args.gate_drop_interval or None,
                "archive_choice": args.archive_choice,
                "archive_recombine": args.recombine or None,
                "specificity_fallback": args.specificity_fallback,
                "conflict_arbiter": args.conflict_arbiter or None,
                "judge_routing": args.judge_routing,
                "instruction_max_tokens": args.instruction_max_tokens,
                "instruction_max_ratio": args.instruction_max_ratio,
                "steps": args.steps,
                "batch_size": args.batch_size,
                "test_interval": args.test_interval,
                "seed": args.seed,
                "concurrency": args.concurrency,
                "concurrency_mode": args.concurrency_mode,
                "pipeline_steps": False if args.no_pipeline_steps else None,
                "drop_output_format_after_update": args.drop_output_format or None,
                "max_calls": args.max_calls,
                "max_tokens": args.max_tokens,
                "max_cost": args.max_cost,
            }
        )
    )
    data["dataset"].update(
        given(
            {
                "name": args.dataset,
                "path": str(args.data_file) if args.data_file else None,
                "train_size": args.train_size,
                "val_size": args.val_size,
                "test_size": args.test_size,
                "seed": args.seed,
                "val_overlaps_train": args.val_overlaps_train or None,
            }
        )
    )
    if args.criteria:
        chosen = [name.strip() for name in args.criteria.split(",")]
        known = {c["name"]: c for c in data["dataset"].get("criteria", [])}
        if known and (unknown := [name for name in chosen if name not in known]):
            raise ConfigError(f"--criteria: unknown criterion {unknown[0]!r}; the config's: {', '.join(known)}")
        data["dataset"]["criteria"] = [known.get(name, {"name": name}) for name in chosen]
        # A full config's instructions for the criteria left out are not wanted for this run, not an error.
        instructions = data.get("initial_instructions", {})
        data["initial_instructions"] = {name: text for name, text in instructions.items() if name in chosen}
    return validated_run_config(data), models


def validated_run_config(data: dict[str, Any]) -> RunConfig:
    """Run settings from flags laid over a config; a problem is one ``ConfigError`` line."""
    from pydantic import ValidationError

    from judgeopt.core.errors import describe_validation_error
    from judgeopt.orchestrator.config import RunConfig

    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"run settings: {describe_validation_error(exc, data)}") from None


def add_client_flags(parser: argparse.ArgumentParser) -> None:
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


def client_settings(args: argparse.Namespace, addresses: Mapping[Role, str] | None) -> ClientSettings:
    """The client's TLS and token settings, every file and the token read once now (before a run starts); a token
    bound for a remote address over plaintext is refused."""
    from judgeopt.orchestrator.agent_clients import ClientSettings

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
    if addresses is not None:
        settings.check_addresses(addresses)
    settings.check()
    return settings


def add_address_flags(parser: argparse.ArgumentParser, roles: Sequence[Role]) -> None:
    for role in roles:
        parser.add_argument(f"--{role}-addr", metavar="HOST:PORT", help=f"a running {role} service (dns:///… balances)")


def addresses(args: argparse.Namespace, roles: Sequence[Role] = ROLES) -> dict[Role, str] | None:
    """The running services' addresses, or ``None`` to start them here; all roles or none."""
    given_addresses: dict[Role, str] = {role: getattr(args, f"{role}_addr") for role in roles}
    if not any(given_addresses.values()):
        return None
    missing = [role for role, addr in given_addresses.items() if not addr]
    if missing:
        raise ConfigError(f"--{missing[0]}-addr is missing: give every role's address, or none to start services here")
    return given_addresses


def add_tracking_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracking in MLflow (the mlflow extra; or the config file's tracking section)")
    group.add_argument(
        "--mlflow", action="store_true", help="log the run to MLflow (default: off, unless the config file turns it on)"
    )
    group.add_argument(
        "--mlflow-uri",
        metavar="URI",
        help="MLflow tracking store, e.g. sqlite:///mlflow.db (default: $MLFLOW_TRACKING_URI, else MLflow's own)",
    )
    group.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment name (default: judgeopt)")


def tracking_settings(
    args: argparse.Namespace, file_tracking: TrackingConfig | None, directory: Path | None = None
) -> MlflowSettings | None:
    """Where to track in MLflow, or ``None``: the MLflow run ``directory`` was already tracked in (a resumed run
    stays in its MLflow run), else the flags over the config file's ``tracking.mlflow``; off when neither asks."""
    from judgeopt.orchestrator.config import MlflowSettings
    from judgeopt.orchestrator.tracking import recorded

    found = recorded(directory) if directory is not None else None
    if found is not None:
        return found[0]
    base = file_tracking.mlflow if file_tracking is not None else None
    flags = given({"tracking_uri": args.mlflow_uri, "experiment": args.mlflow_experiment})
    if base is None and not (args.mlflow or flags):
        return None
    return MlflowSettings.model_validate({**(base.model_dump() if base else {}), **flags})
