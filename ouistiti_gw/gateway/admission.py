"""Admission: which names, Origins and Hosts may open a session here, and how many sessions.

- :class:`OriginPolicy` protects against cross-site WebSocket hijacking (a page on another site
  opening a WebSocket with the user's cookies). Browsers always send ``Origin``; a request without
  one is not from a browser page and is let through (such a client could forge any header anyway).
- :class:`HostPolicy` protects against DNS rebinding (a page whose name the attacker points at
  the gateway's loopback address: for the browser it is then the same origin, so the Origin check
  cannot tell; only the ``Host`` name it sends can).
- :class:`SessionCounter` caps the sessions of one process, so a flood of upgrades cannot exhaust
  file descriptors for everybody.
- :class:`AdmissionPolicy` asks them all, and the names served (``allow``/``deny``), as one
  gateway's configuration says: at each handshake, and again for each session a reload moves here.
  The policies above are pure; it also reads the address a client's connection arrived at.

The rate limits of one connection are the core's own (:mod:`ouistiti_gw.core.ratelimit`), not admission's.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..config import GatewayConfig, parse_patterns
from ..core.logsafe import loggable
from ..reload.session_state import Admission
from .identity import arrival_address, socket_arrival
from .names import NameRules
from .refusals import Refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None if it is not an origin."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _host_of(origin: str) -> str:
    return origin.split("://", 1)[1]


def _normalize_host(host: str, scheme: str) -> str:
    normalized = normalize_origin(f"{scheme}://{host}")
    return _host_of(normalized) if normalized else ""


class OriginPolicy:
    """Decide whether a browser's ``Origin`` may open a WebSocket here.

    :param origins: ``""`` (the default) allows only pages served by this same host (the Origin's
        host and port equal the request's ``Host``); ``"*"`` allows every origin; otherwise a
        comma-separated list of origins, globs allowed: ``"https://app.example.com, https://*.example.org"``.
    """

    def __init__(self, origins: str | list[str] | tuple[str, ...] | None = "") -> None:
        patterns = parse_patterns(origins)
        self.allow_all = "*" in patterns
        self.patterns = tuple(normalize_origin(p) or p.lower() for p in patterns)

    def permits(self, origin: str | None, host: str | None, scheme: str = "http") -> bool:
        if origin is None or self.allow_all:
            return True
        normalized = normalize_origin(origin)
        if normalized is None:
            return False  # "null" (sandboxed frames, file://) or garbage
        if not self.patterns:
            return host is not None and _host_of(normalized) == _normalize_host(host, normalized.split(":")[0])
        return any(fnmatch.fnmatchcase(normalized, pattern) for pattern in self.patterns)


def host_name(host: str | None) -> str | None:
    """The name of a ``Host`` header, lower case, without its port (IPv6 in brackets); None if malformed."""
    if not host or any(c in host for c in "@/?#\\"):
        return None
    try:
        parts = urlsplit("//" + host.strip())
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return None
    name = parts.hostname
    if not name:
        return None
    return f"[{name}]" if ":" in name else name


@lru_cache(maxsize=256)
def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``, bracketed or not).
    Remembered: each handshake asks it of its arrival address and of its ``Host``'s name, which
    are nearly always the same few."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class HostPolicy:
    """Decide whether a WebSocket handshake's ``Host`` is a name this gateway answers to.

    DNS rebinding: a page on ``rebind.attacker.example`` whose address the attacker switches to
    127.0.0.1 reaches a gateway listening there as the *same* origin: ``Origin`` and ``Host`` both
    name the attacker's host and agree. The Host name is what gives it away.

    :param allowed_hosts: ``""`` (the default): on a connection that arrived at a loopback address,
        only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``..., any port); on any other
        address, any name. ``"*"``: any name. Otherwise a comma-separated list of host names with
        globs, without port (``"gw.example.com, *.example.org, localhost"``), whatever the address.
    """

    def __init__(self, allowed_hosts: str | list[str] | tuple[str, ...] | None = "") -> None:
        patterns = parse_patterns(allowed_hosts)
        self.allow_all = "*" in patterns
        self.patterns = tuple(p.lower() for p in patterns)

    def permits(self, host: str | None, local_address: str) -> bool:
        """``host`` is the request's ``Host`` header; ``local_address`` the IP the connection arrived at."""
        if self.allow_all or not (self.patterns or is_loopback(local_address)):
            return True
        name = host_name(host)
        if name is None:
            return False
        if self.patterns:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns)
        return is_loopback(name)


class SessionCounter:
    """How many sessions this process carries, against a maximum (0: no limit)."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.active = 0

    def try_acquire(self) -> bool:
        if self.maximum and self.active >= self.maximum:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


def host_refusal(host: str | None) -> str:
    """Why a ``Host`` is refused, as the logs and the client read it."""
    return f"Host {loggable(host)} is not one of this gateway's names (allowed_hosts)"


class AdmissionPolicy:
    """Who may open a session here, as one gateway's configuration says: the names it serves
    (``allow``/``deny``), the ``Host`` and ``Origin`` it accepts, ``max_connections``.

    It judges; :class:`~ouistiti_gw.reload.session_state.Admission` is the record of what one
    session was let in with, which :meth:`judge_again` reads when a reload moves that session here.

    :param sessions: the process's session count, which :meth:`admit` takes a place in.
    """

    def __init__(self, config: GatewayConfig, sessions: SessionCounter) -> None:
        self.rules = NameRules.from_options(config.allow, config.deny)
        self.origins = OriginPolicy(config.origins)
        self.hosts = HostPolicy(config.allowed_hosts)
        self.sessions = sessions

    def admit(self, environ: "WSGIEnvironment") -> Refusal | None:
        """The cheap checks of a handshake, before any look into docroot: its ``Host``, its
        ``Origin``, then a place among ``max_connections``, taken (the caller releases it when
        the session ends). None: admitted."""
        refusal = self._judge(environ.get("HTTP_HOST"), environ.get("HTTP_ORIGIN"),
                              environ.get("wsgi.url_scheme", "http"), arrival_address(environ))
        if refusal is not None:
            return refusal
        if not self.sessions.try_acquire():
            return Refusal(503, f"{self.sessions.maximum} sessions already open", "limit")
        return None

    def judge_again(self, admission: Admission, client_socket: Any, rules: NameRules | None = None) -> str | None:
        """Why a session a reload moved here would not be let in now (None: it would), its names
        judged by ``rules`` (its user's, when it carried one: :meth:`NameRules.for_user
        <ouistiti_gw.gateway.names.NameRules.for_user>`; else this configuration's). It is never
        refused for ``max_connections``: it is running already."""
        names = (admission.requested, admission.target, admission.resolved)
        rules = rules if rules is not None else self.rules
        if not all(rules.permits(name) for name in names):
            return "name not served (allow/deny)"
        refusal = self._judge(admission.host, admission.origin, admission.scheme, socket_arrival(client_socket) or "")
        return None if refusal is None else refusal.reason

    def _judge(self, host: str | None, origin: str | None, scheme: str, arrival: str) -> Refusal | None:
        """A 403 when a request's ``Host`` or ``Origin`` is not accepted (DNS rebinding,
        cross-site hijacking); None when both are. ``arrival``: the address its connection
        arrived at."""
        if not self.hosts.permits(host, arrival):
            return Refusal(403, host_refusal(host), "host")
        if not self.origins.permits(origin, host, scheme):
            return Refusal(403, f"origin {loggable(origin)} not allowed", "origin")
        return None
