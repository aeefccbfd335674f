"""A tiny gRPC health probe: ``python -m services.healthcheck HOST:PORT [SERVICE]`` exits 0 iff SERVING.

For the container image's ``HEALTHCHECK`` and for exec probes where a kubelet cannot speak gRPC itself (Kubernetes
has native ``grpc:`` probes; prefer those). It asks the standard ``grpc.health.v1.Health/Check`` for ``SERVICE``
(default ``""``, the whole server; a role's service name such as ``judgeopt.v1.JudgeService`` checks that role) and
prints one line. Exit codes: 0 SERVING, 1 anything else (NOT_SERVING, unknown service, unreachable, timeout),
2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

EXIT_SERVING = 0
EXIT_UNHEALTHY = 1


def check(target: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """``(serving, status)`` of ``service`` at ``target``; ``status`` names the health state or the RPC error."""
    # A probe goes straight to the address it is given, never through an HTTP proxy from the environment.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return False, code.name if code is not None else type(exc).__name__
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.healthcheck", description="Exit 0 iff the gRPC health service answers SERVING."
    )
    parser.add_argument("target", help="HOST:PORT of the service (any gRPC target)")
    parser.add_argument("service", nargs="?", default="", help='service name to check (default "": the server)')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    serving, status = check(args.target, args.service, args.timeout)
    print(f"{args.target} {args.service or '(server)'}: {status}", flush=True)
    return EXIT_SERVING if serving else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
