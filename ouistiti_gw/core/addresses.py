"""IP addresses in the binary and text forms the gateway passes them on in.

Two wire formats carry a client's address to a UNIX server: direct mode's raw ``struct sockaddr``
(:mod:`ouistiti_gw.backend.handover`) and the PROXY protocol v2 address block (:mod:`ouistiti_gw.core.proxy_protocol`).
Both hold an address family and the address's packed bytes; the conversions between those and
``(host, port)`` live here once, with the same validation for both.
"""
from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6

#: ``(host, port)``, host as Python's ``getpeername()`` gives it (no brackets, no scope).
Address = tuple[str, int]

_PACKED_SIZES: dict[int, int] = {AF_INET: 4, AF_INET6: 16}


def pack_ip(host: str) -> tuple[int, bytes]:
    """``(AF_INET or AF_INET6, packed bytes)`` of an IP literal; ValueError for anything else."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    return (AF_INET if ip.version == 4 else AF_INET6), ip.packed


def unpack_ip(family: int, packed: bytes) -> str:
    """The text form of ``packed``, an address of ``family``; ValueError if the sizes disagree."""
    if _PACKED_SIZES.get(family) != len(packed):
        raise ValueError(f"{len(packed)} bytes are not an address of family {family}")
    return str(ipaddress.ip_address(bytes(packed)))


def unmap(host: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, from a dual-stack socket) as plain IPv4."""
    if ":" not in host and "%" not in host:
        return host  # dotted IPv4 (or not an address): nothing to unmap, and no parse
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else str(ip)


def as_ipv6(host: str) -> str:
    """``host`` as IPv6 (IPv4 becomes ``::ffff:a.b.c.d``): a pair of mixed families shares one."""
    ip = ipaddress.ip_address(host)
    return f"::ffff:{ip}" if ip.version == 4 else str(ip)


def format_address(address: Address | None) -> str:
    """``host:port`` for log lines (``[v6]:port`` for IPv6), ``-`` when unknown."""
    if address is None:
        return "-"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def networks_error(items: tuple[str, ...]) -> str | None:
    """Why one of ``items`` is not an IP address or CIDR network (``10.0.0.0/8``), or None."""
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as error:
            return f"{item!r} is not an IP address or network ({error})"
    return None
