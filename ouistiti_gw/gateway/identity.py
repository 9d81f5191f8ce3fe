"""Who the client is, and the PROXY header that tells a UNIX server so.

Behind a front proxy (nginx, a load balancer) ``REMOTE_ADDR`` is the proxy's address; the
browser's is in ``Forwarded`` (RFC 7239) or ``X-Forwarded-For``. Anyone can send those headers,
so they are read only when the peer is one of ``trusted_proxies`` (IPs or CIDRs; none by
default: never). The chain is walked from the right (the hop nearest to us) and the first address
that is not a trusted proxy is the client: an address a client put in the header itself sits
further left and is never reached. ``Forwarded`` wins over ``X-Forwarded-For`` when both are
present; ``X-Forwarded-For`` carries no port (0 then). The scheme the client used (wss:// or
ws://, for the PROXY v2 SSL TLV) comes from the same element's ``proto=``, or the right-most
``X-Forwarded-Proto``, from a trusted peer only.

:class:`Identity` is what the middleware asks, configured from ``trusted_proxies`` and
``proxy_protocol``; :func:`introduce` sends the header, first and alone.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from ..config import ConfigurationError, GatewayConfig, parse_patterns
from ..core import proxy_protocol
from ..core.addresses import Address, format_address, networks_error, unmap
from ..core.logsafe import loggable
from .upgrade import LOCAL_ADDRESS_KEY, client_socket

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .authorization import User

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Client:
    """The browser as far as the gateway can tell: its address and whether it came over TLS."""

    address: Address
    secure: bool


@dataclass(frozen=True)
class _Hop:
    host: str
    port: int
    proto: str | None = None


class Networks:
    """A setting that lists IPs and CIDRs (``"127.0.0.0/8, ::1"``): does an address belong to it?

    :param option: the setting's name, for the :class:`~ouistiti_gw.config.ConfigurationError` a
        malformed item raises (the configuration's own check, met again by a direct caller).
    """

    def __init__(self, spec: str | tuple[str, ...], option: str) -> None:
        items = parse_patterns(spec)
        wrong = networks_error(items)
        if wrong is not None:
            raise ConfigurationError(f"{option} = {wrong}", option)
        self.networks = [ipaddress.ip_network(item, strict=False) for item in items]

    def __contains__(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(unmap(host))
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class TrustedProxies(Networks):
    """The ``trusted_proxies`` setting: whose ``Forwarded``/``X-Forwarded-For`` headers count."""

    def __init__(self, spec: str | tuple[str, ...] = "") -> None:
        super().__init__(spec, "trusted_proxies")

    def trusts(self, host: str) -> bool:
        return host in self

    def client(self, environ: "WSGIEnvironment") -> Client:
        """The client of this request (the peer itself unless the peer is a trusted proxy)."""
        peer = _Hop(unmap(environ.get("REMOTE_ADDR") or "0.0.0.0"), _port(environ.get("REMOTE_PORT")))
        secure = environ.get("wsgi.url_scheme") == "https"
        if not self.networks or not self.trusts(peer.host):
            return Client((peer.host, peer.port), secure)
        chain = list(_forwarded(environ.get("HTTP_FORWARDED", ""))) or list(
            _x_forwarded_for(environ.get("HTTP_X_FORWARDED_FOR", "")))
        hop = next((h for h in reversed(chain) if not self.trusts(h.host)), chain[0] if chain else peer)
        if hop is not peer and not _is_ip(hop.host):
            log.debug("forwarded client %s is not an address: using the proxy's, %s", loggable(hop.host), peer.host)
            hop = peer
        proto = hop.proto or _last(environ.get("HTTP_X_FORWARDED_PROTO", ""))
        if proto:
            secure = proto.lower() in ("https", "wss")
        return Client((hop.host, hop.port), secure)


def _port(value) -> int:
    try:
        port = int(value or 0)
    except ValueError:
        return 0
    return port if 0 <= port <= 0xFFFF else 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _last(value: str) -> str | None:
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items[-1] if items else None


_NODE = re.compile(r"^\[(?P<v6>[^\]]+)\](?::(?P<port6>\d+))?$|^(?P<host>[^:]+)(?::(?P<port>\d+))?$")


def _node(text: str) -> tuple[str, int]:
    """``for=`` / X-Forwarded-For node: ``1.2.3.4``, ``1.2.3.4:80``, ``[v6]:80``, bare ``v6``..."""
    text = text.strip().strip('"')
    if _is_ip(text):
        return unmap(text), 0
    match = _NODE.match(text)
    if not match:
        return text, 0
    host = match.group("v6") or match.group("host")
    return unmap(host), _port(match.group("port6") or match.group("port"))


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    return [part for part in re.split(separator + r'(?=(?:[^"]*"[^"]*")*[^"]*$)', text)]


def _forwarded(value: str) -> Iterator[_Hop]:
    """The hops of an RFC 7239 ``Forwarded`` header, left (farthest) to right (nearest)."""
    for element in _split_outside_quotes(value, ","):
        pairs = {}
        for pair in _split_outside_quotes(element, ";"):
            key, _, pair_value = pair.partition("=")
            pairs[key.strip().lower()] = pair_value.strip().strip('"')
        if "for" in pairs:
            host, port = _node(pairs["for"])
            yield _Hop(host, port, pairs.get("proto"))


def _x_forwarded_for(value: str) -> Iterator[_Hop]:
    for item in value.split(","):
        if item.strip():
            yield _Hop(*_node(item))


# -- the header ---------------------------------------------------------------------------------

def listener_address(address: Any) -> Address | None:
    """What every connection of a listener bound to ``address`` (its ``getsockname()``) arrives
    at, for :data:`~ouistiti_gw.gateway.upgrade.LOCAL_ADDRESS_KEY`; None for a wildcard one
    (``0.0.0.0``, ``::``), or an address that is not IP."""
    if not isinstance(address, tuple):
        return None
    host = unmap(address[0])
    return None if not _is_ip(host) or ipaddress.ip_address(host).is_unspecified else (host, address[1])


def local_address(environ: "WSGIEnvironment") -> Address:
    """The gateway's end of the client connection: the listener's address where the server
    gives it, else the socket's own address where reachable, else what the WSGI server says
    (``SERVER_NAME`` when it is an IP, ``SERVER_PORT``)."""
    known = environ.get(LOCAL_ADDRESS_KEY)
    if known is not None:
        return known
    sock = client_socket(environ)
    if sock is not None:
        try:
            host, port = sock.getsockname()[:2]
            return unmap(host), port
        except OSError:
            pass
    name = environ.get("SERVER_NAME", "")
    return (unmap(name) if _is_ip(name) else "0.0.0.0"), _port(environ.get("SERVER_PORT"))


def arrival_address(environ: "WSGIEnvironment") -> str:
    """The IP the client's connection arrived at, for the Host check (DNS rebinding): the
    listener's where the server gives it, else the socket's own address; where the server gives
    no socket (the stock worker's plain HTTP requests), the peer's, as a connection from a
    loopback address has reached a loopback address."""
    known = environ.get(LOCAL_ADDRESS_KEY)
    if known is not None:
        return known[0]
    sock = client_socket(environ)
    arrival = socket_arrival(sock) if sock is not None else None
    return arrival if arrival is not None else unmap(environ.get("REMOTE_ADDR") or "")


def socket_arrival(sock: Any) -> str | None:
    """The address the connection of ``sock`` arrived at, its own (None: the socket cannot say)."""
    try:
        return unmap(sock.getsockname()[0])
    except OSError:
        return None


def _tls_version(environ: "WSGIEnvironment") -> str | None:
    version = getattr(client_socket(environ), "version", None)
    try:
        return version() if callable(version) else None
    except (OSError, ValueError):
        return None


def proxy_header(version: str, environ: "WSGIEnvironment", client: Client, protocol: str | None,
                 user: "User | None" = None) -> bytes:
    """The PROXY header (``version`` ``v1`` or ``v2``) for this request, from ``client`` to us;
    ``user``: who the app's authorization says the client is (its name wins over ``REMOTE_USER``)."""
    local = local_address(environ)
    if version == "v1":
        return proxy_protocol.encode_v1(client.address, local)
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")
    tlvs = [(proxy_protocol.PP2_TYPE_GW_PATH, path)]
    if environ.get("HTTP_HOST"):
        tlvs.append((proxy_protocol.PP2_TYPE_AUTHORITY, environ["HTTP_HOST"].encode("latin-1", "replace")))
    if client.secure:
        tlvs.append((proxy_protocol.PP2_TYPE_SSL, proxy_protocol.encode_ssl(_tls_version(environ))))
    if environ.get("QUERY_STRING"):
        tlvs.append((proxy_protocol.PP2_TYPE_GW_QUERY, environ["QUERY_STRING"].encode("latin-1", "replace")))
    if user is not None:
        tlvs.extend(_user_tlvs(user))
    elif environ.get("REMOTE_USER"):
        tlvs.append((proxy_protocol.PP2_TYPE_GW_USER, environ["REMOTE_USER"].encode("utf-8", "replace")))
    if protocol:
        tlvs.append((proxy_protocol.PP2_TYPE_GW_PROTOCOL, protocol.encode("ascii", "replace")))
    return proxy_protocol.encode_v2(client.address, local, tlvs)


def _user_tlvs(user: "User") -> list[tuple[int, bytes]]:
    """The TLVs of an authenticated user (checked already: no value holds a comma it should not)."""
    tlvs = [(proxy_protocol.PP2_TYPE_GW_USER, user.name.encode("utf-8"))]
    if user.groups:
        tlvs.append((proxy_protocol.PP2_TYPE_GW_GROUPS, ",".join(user.groups).encode("utf-8")))
    if user.expires is not None:
        tlvs.append((proxy_protocol.PP2_TYPE_GW_EXPIRES, str(user.expires).encode("ascii")))
    return tlvs


class Identity:
    """Who a request's client is, and the PROXY header that tells its UNIX server, as a gateway's
    ``trusted_proxies`` and ``proxy_protocol`` say."""

    def __init__(self, config: GatewayConfig) -> None:
        self.trusted_proxies = TrustedProxies(config.trusted_proxies)
        self.proxy_protocol = config.proxy_protocol

    def client(self, environ: "WSGIEnvironment") -> Client:
        return self.trusted_proxies.client(environ)

    def for_logs(self, environ: "WSGIEnvironment") -> str:
        """The client's address as log lines show it (``host:port``, escaped)."""
        return loggable(format_address(self.client(environ).address))

    def proxy_header(self, environ: "WSGIEnvironment", protocol: str | None, user: "User | None" = None) -> bytes:
        """The PROXY header for this client (empty without ``proxy_protocol``), built before any
        connection: one that cannot be built (:class:`~ouistiti_gw.core.proxy_protocol.HeaderTooLong`)
        refuses the request, and the server never sees a connection without its header."""
        if not self.proxy_protocol:
            return b""
        return proxy_header(self.proxy_protocol, environ, self.client(environ), protocol, user)


def introduce(backend: Any, header: bytes, name: str) -> bool:
    """PROXY protocol: the header goes out first, alone; False if the server ``name`` is already gone."""
    if not header:
        return True
    try:
        backend.sendall(header)
        return True
    except OSError as error:
        log.warning("PROXY header to %s failed: %s", name, error)
        return False
