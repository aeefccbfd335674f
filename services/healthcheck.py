"""``judgeopt healthcheck HOST:PORT [SERVICE]``: exit 0 iff the gRPC health service answers SERVING.

The image's ``HEALTHCHECK`` and the Kubernetes manifests' exec probes run it, because a kubelet's native ``grpc:``
probe cannot speak TLS and the agents serve only mutual TLS. It asks the standard ``grpc.health.v1.Health/Check``
for ``SERVICE`` (default ``""``, the whole server; a role's service name such as ``judgeopt.v1.JudgeService``
checks that role) and prints one line. With ``--tls-ca`` it speaks TLS, verifying the service against that CA and
presenting ``--tls-cert``/``--tls-key`` (the pod's own certificate) where mutual TLS is required. Health needs no
token. Exit codes: 0 SERVING, 1 anything else (NOT_SERVING, unknown service, unreachable, failed handshake,
timeout), 2 bad usage or unusable TLS files.

Only argparse is imported at module level: the command line is built from every command module.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

HELP = "exit 0 iff a gRPC service's health check answers SERVING (over TLS with --tls-ca)"
EXIT_SERVING = 0
EXIT_UNHEALTHY = 1


@dataclass(frozen=True)
class ProbeTLS:
    """What a probe needs to speak TLS: the CA that verifies the service, and a client certificate for mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    """The name the service's certificate is checked against instead of the target's host."""


def check(target: str, service: str = "", timeout: float = 3.0, *, tls: ProbeTLS | None = None) -> tuple[bool, str]:
    """``(serving, status)`` of ``service`` at ``target``; ``status`` names the health state or the RPC error.

    Raises ``judgeopt.core.errors.CredentialError`` when a TLS file cannot be used."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A probe goes straight to the address it is given, never through an HTTP proxy from the environment.
    options: list[tuple[str, str | int]] = [("grpc.enable_http_proxy", 0)]
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        if tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, _channel_credentials(tls), options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return False, code.name if code is not None else type(exc).__name__
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def _channel_credentials(tls: ProbeTLS) -> grpc.ChannelCredentials:
    import grpc

    from judgeopt.core.credentials import check_key_pair, read_pem

    root = read_pem(tls.ca, flag="--tls-ca", kind="certificate")
    chain = key = None
    if tls.cert is not None and tls.key is not None:
        chain = read_pem(tls.cert, flag="--tls-cert", kind="certificate")
        key = read_pem(tls.key, flag="--tls-key", kind="private key")
        check_key_pair(tls.cert, tls.key, cert_flag="--tls-cert", key_flag="--tls-key")
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="HOST:PORT of the service (any gRPC target)")
    parser.add_argument("service", nargs="?", default="", help='service name to check (default "": the server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    tls = parser.add_argument_group("TLS (the agents' ports speak only mutual TLS)")
    tls.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA certificate that verifies the service: TLS")
    tls.add_argument("--tls-cert", type=Path, metavar="PEM", help="client certificate (the pod's own), for mutual TLS")
    tls.add_argument("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert")
    tls.add_argument("--tls-server-name", metavar="NAME", help="name the service's certificate is checked against")


def run(args: argparse.Namespace) -> int:
    from judgeopt.core.errors import ConfigError, CredentialError

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    if args.tls_ca is None and (args.tls_cert is not None or args.tls_server_name is not None):
        which = "--tls-cert" if args.tls_cert is not None else "--tls-server-name"
        raise ConfigError(f"{which} needs --tls-ca (the CA that verifies the service)")
    tls = None if args.tls_ca is None else ProbeTLS(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    try:
        serving, status = check(args.target, args.service, args.timeout, tls=tls)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{args.target} {args.service or '(server)'}: {status}", flush=True)
    return EXIT_SERVING if serving else EXIT_UNHEALTHY
