"""``judgeopt serve ROLE``: one agent role as a gRPC service (the command line's door into this layer)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from judgeopt.core.flags import add_model_flags
from judgeopt.core.log_defaults import LogDefaults
from judgeopt.core.roles import ALL_ROLES

if TYPE_CHECKING:
    from judgeopt.core.service_config import ServiceConfig

LOG_DEFAULTS = LogDefaults(format="json", level="info", stdout=True)
"""What this command logs unless --log-format and --log-level say otherwise."""
HELP = "run one agent role as a gRPC service"
HANDLES_SIGTERM = True
"""A service stops gracefully on SIGTERM by itself (in-flight calls finish)."""


def trace_service_name(args: argparse.Namespace) -> str:
    """The service's name in traces when ``OTEL_SERVICE_NAME`` is unset."""
    return f"judgeopt-{args.role}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=ALL_ROLES, help="the role this process serves")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one and prints it")
    parser.add_argument("--ledger", type=Path, help="append what each request carried to this JSON-lines file")
    parser.add_argument(
        "--metrics-port", type=int, metavar="N", help="serve Prometheus metrics at http://HOST:N/metrics (0: any free)"
    )
    security = parser.add_argument_group("security (override the config file's service section)")
    security.add_argument("--tls-cert", type=Path, metavar="PEM", help="server certificate chain: serve TLS only")
    security.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    security.add_argument(
        "--tls-client-ca", type=Path, metavar="PEM", help="require client certificates from this CA (mutual TLS)"
    )
    security.add_argument(
        "--token-env", metavar="VAR", help="env variable holding the bearer token every RPC but health must carry"
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without TLS and a token (anyone who reaches the port may call the model)",
    )
    add_model_flags(parser, [])


def _exposure_problem(service: ServiceConfig) -> str | None:
    """Why ``service`` must not start as configured: a host other machines may reach, without TLS and a token (each
    call spends the model's key, and carries the data being judged)."""
    from judgeopt.core.loopback import is_loopback_host

    if is_loopback_host(service.host):
        return None
    missing = [
        *(["--tls-cert/--tls-key"] if service.tls_cert is None else []),
        *(["--token-env"] if service.token_env is None else []),
    ]
    if not missing:
        return None
    return (
        f"--host {service.host} is not a loopback address: a service reachable from the network needs TLS and a "
        f"bearer token, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing (or give "
        "--insecure to serve without them)"
    )


def service_config(args: argparse.Namespace, base: ServiceConfig) -> ServiceConfig:
    """The config file's ``service:`` section with the flags applied, its TLS files and token checked now; a
    non-loopback host without TLS and a token is refused unless ``--insecure``."""
    from pydantic import ValidationError

    from judgeopt.core.credentials import server_tls, service_token
    from judgeopt.core.errors import ConfigError, CredentialError, describe_validation_error
    from judgeopt.core.flags import given
    from judgeopt.core.service_config import ServiceConfig

    flags = given(
        {
            "host": args.host,
            "port": args.port,
            "ledger_path": args.ledger,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "token_env": args.token_env,
            "metrics_port": args.metrics_port,
        }
    )
    try:
        service = ServiceConfig.model_validate({**base.model_dump(), **flags})
    except ValidationError as exc:
        raise ConfigError(f"service settings: {describe_validation_error(exc)}") from None
    if not args.insecure and (problem := _exposure_problem(service)) is not None:
        raise ConfigError(problem)
    try:
        server_tls(service)
        service_token(service)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    return service


def run(args: argparse.Namespace) -> int:
    import asyncio

    from judgeopt.core.config_file import load_serving_config
    from judgeopt.core.flags import apply_model_flags
    from judgeopt.core.local_model import shared_local_model
    from judgeopt.services.server import serve

    role = args.role
    file_config = load_serving_config(args.config)
    service = service_config(args, file_config.service)
    models = apply_model_flags(args, file_config.models, [])

    def announce(port: int) -> None:
        print(f"listening on {service.host}:{port}", flush=True)

    with shared_local_model(models, (role,), args.local_model) as local_url:
        asyncio.run(serve(role, models.for_role(role, local_base_url=local_url), service, on_ready=announce))
    return 0
