"""Whether a bind address or a gRPC target stays on this machine: the line between where plaintext is allowed and
where TLS and a token are required (``serve --host``, the client's ``--<role>-addr``)."""

from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (brackets allowed); anything else, names included, may be remote."""
    host = host.strip().removeprefix("[").removesuffix("]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(address: str) -> str:
    """``host`` of ``host:port``, ``[v6]:port``, ``host`` or a bare IPv6 address."""
    if address.startswith("["):
        return address[1 : address.find("]")] if "]" in address else address[1:]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address  # no port, or a bare IPv6 address


def target_hosts(target: str) -> list[str]:
    """The hosts a gRPC target names: ``host:port``, ``dns:[//authority/]host:port``, ``ipv4:a:p,b:p``,
    ``ipv6:[a]:p,…``; ``unix:`` and ``unix-abstract:`` sockets are on this machine, as ``localhost``."""
    scheme, _, rest = target.partition(":")
    if scheme in ("unix", "unix-abstract"):
        return ["localhost"]
    if scheme == "dns":
        path = rest.removeprefix("//")
        if rest.startswith("//"):
            path = path.split("/", 1)[1] if "/" in path else path
        return [_host_of(path)]
    if scheme in ("ipv4", "ipv6"):
        return [_host_of(address) for address in rest.split(",") if address]
    return [_host_of(target)]


def is_loopback_target(target: str) -> bool:
    """Every host the target names is loopback."""
    hosts = target_hosts(target)
    return bool(hosts) and all(is_loopback_host(host) for host in hosts)
