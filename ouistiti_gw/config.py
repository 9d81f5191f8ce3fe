"""The one definition of every option: the gateway's (:class:`GatewayConfig`) and the server's
(:class:`ServerConfig`).

Each field says its type, default and help. Everything else is derived from them: the
``WebSocketGateway`` keywords, the ini keys (PasteDeploy's factories and ``[server:main]`` runner),
the ``OUISTITI_GW_*`` environment, the flags of ``ouistiti-gw serve`` and their help text. A
string (ini, environment, command line) is parsed here, once, into the field's type; whatever is
wrong raises :class:`ConfigurationError`, which names the option as its source spells it
(``max_connections``, ``OUISTITI_GW_MAX_CONNECTIONS``, ``--max-connections``).

    GatewayConfig.load({"docroot": "/run/ws", "max_connections": "100"}, INI)
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, TypeVar

from .core.addresses import networks_error
from .core.deflate import DEFAULT_THRESHOLD
from .core.protocol import DEFAULT_MAX_BYTE_RATE, DEFAULT_MAX_FRAME_RATE, DEFAULT_MAX_MESSAGE_SIZE
from .errors import GatewayError

ENVIRONMENT_PREFIX = "OUISTITI_GW_"
#: A comma-separated list (``"ws_*, internal/*"``), kept as its items.
Patterns = tuple[str, ...]
#: Bytes of a request's header section, every line and the blank one counted: what nginx holds by
#: default (``large_client_header_buffers 4 8k``), twice HAProxy's 16 KiB buffer.
DEFAULT_MAX_HEADER_SIZE = 32 * 1024
Config = TypeVar("Config", bound="Options")


def _as_is(name: str) -> str:
    return name


def environment_variable(name: str) -> str:
    """How the environment spells an option: ``OUISTITI_GW_MAX_CONNECTIONS``."""
    return ENVIRONMENT_PREFIX + name.upper()


def cli_flag(name: str) -> str:
    """How the command line spells an option: ``--max-connections``."""
    return "--" + name.replace("_", "-")


def parse_patterns(patterns: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Split a comma-separated glob list (``"ws_*, internal/*"``) into its patterns."""
    if not patterns:
        return ()
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    return tuple(p.strip() for p in patterns if p.strip())


def host_pattern_error(patterns: tuple[str, ...]) -> str | None:
    """Why one of ``patterns`` cannot be an ``allowed_hosts`` item, or None.

    A pattern with a port (``localhost:8080``) would never match: the ``Host``'s port is not
    compared (:func:`~ouistiti_gw.gateway.admission.host_name` drops it), so every handshake
    would be refused. Said at start.
    """
    for pattern in patterns:
        try:
            ipaddress.ip_address(pattern.strip("[]"))
            continue  # an IPv6 literal: its colons are no port
        except ValueError:
            pass
        name, colon, _ = pattern.rpartition(":")
        if colon and name:
            return f"{pattern!r} has a port: list host names only (a Host's port is not compared)"
    return None


#: What a pattern of ``allow``/``deny`` may hold in braces: the authenticated user's name, one of its groups.
PLACEHOLDERS = ("{user}", "{group}")


def placeholder_error(patterns: tuple[str, ...]) -> str | None:
    """Why one of ``patterns`` (``allow``, ``deny``) holds braces that are not a placeholder, or None."""
    for pattern in patterns:
        rest = pattern
        for placeholder in PLACEHOLDERS:
            rest = rest.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            return f"{pattern!r}: the only placeholders are {' and '.join(PLACEHOLDERS)}"
    return None


def has_placeholder(patterns: Iterable[str]) -> bool:
    """Whether one of ``patterns`` names the user or a group (``users/{user}/*``)."""
    return any(placeholder in pattern for pattern in patterns for placeholder in PLACEHOLDERS)


def auth_path_error(path: str) -> str | None:
    """Why ``path`` cannot be ``auth_request``'s (the subrequest goes to one fixed path of the app)
    or ``admin_path``'s (compared with the request's path as it is)."""
    if path and (not path.startswith("/") or any(c in path for c in "?#% ") or not path.isascii()
                 or not path.isprintable()):
        return f"{path!r} is not a plain absolute path (/auth/check): no query, fragment, escape or space"
    return None


def callable_spec_error(spec: str) -> str | None:
    """Why ``spec`` cannot name ``authorize``'s function (``package.module:function``); it is
    imported when the gateway is built."""
    module, colon, name = spec.partition(":")
    dotted = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
    if spec and not (colon and re.fullmatch(dotted, module) and re.fullmatch(dotted, name)):
        return f"{spec!r} is not module:callable (myapp.auth:authorize)"
    return None


@dataclass(frozen=True)
class Source:
    """Where settings come from, and how it spells an option's name.

    ``where`` is the place inside it, for an ini file ``example.ini [app:main]``.
    """

    kind: str
    spell: Callable[[str], str]
    where: str = ""

    def at(self, where: str) -> "Source":
        return dataclasses.replace(self, where=where)


KEYWORD = Source("keyword", _as_is)
INI = Source("ini", _as_is)
ENVIRONMENT = Source("environment", environment_variable)
COMMAND_LINE = Source("command line", cli_flag)


class ConfigurationError(GatewayError):
    """An option is missing, unknown or malformed, or options do not go together.

    :param reason: what is wrong, with the option spelled as ``source`` spells it.
    :param key: the option's name (``None``: not one option).
    :param source: where it was set; its ``where`` (an ini file and section) starts the message.

    Under gunicorn the worker raises it again as gunicorn's ``AppImportError``, so gunicorn
    prints its message alone (no traceback) and stops ("App failed to load") instead of looping.
    """

    def __init__(self, reason: str, key: str | None = None, source: Source | None = None) -> None:
        self.reason, self.key, self.source = reason, key, source
        super().__init__(f"{source.where}: {reason}" if source and source.where else reason)

    @property
    def setting(self) -> str | None:
        """The option as its source spells it: ``OUISTITI_GW_MAX_CONNECTIONS``, ``--max-connections``."""
        return self.source.spell(self.key) if self.key and self.source else self.key

    def at(self, where: str) -> "ConfigurationError":
        """The same error, placed in an ini file's section (``example.ini [server:main]``)."""
        return ConfigurationError(self.reason, self.key, (self.source or INI).at(where))


def _not_a_directory(path: str) -> str | None:
    """A docroot that exists but is no directory (a missing one is a warning: it may come later)."""
    return f"{path!r} is not a directory" if os.path.exists(path) and not os.path.isdir(path) else None


def option(default: Any, help: str, **details: Any) -> Any:
    """A field of a schema: its default, its help (one line, no default in it) and the
    :class:`Option` details (``choices``, ``minimum``, ``required``, ``environment``)."""
    return field(default=default, metadata={"help": help, **details})


@dataclass(frozen=True)
class Option:
    """One option of a schema, as every source sees it."""

    name: str
    kind: type
    default: Any
    help: str
    #: The values it takes (an empty string means the default).
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    #: It must be set to something non-empty.
    required: bool = False
    #: It can be set by ``OUISTITI_GW_<NAME>``.
    environment: bool = True
    #: What else is wrong with a value of the right type (None: nothing), said at start.
    check: Callable[[Any], str | None] | None = None

    @property
    def environment_variable(self) -> str:
        return environment_variable(self.name)

    @property
    def cli_flag(self) -> str:
        return cli_flag(self.name)

    @property
    def default_text(self) -> str:
        """The default as help text and the README show it."""
        if self.required:
            return "(required)"
        if self.kind == Patterns:
            return ", ".join(self.default) or "empty"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default) if self.default != "" else "empty"

    def convert(self, value: Any, source: Source = KEYWORD) -> Any:
        """``value`` (a string from a file, or a keyword's value) in this option's type, checked."""
        try:
            if value is None:
                typed = self.default
            elif self.kind == Patterns:
                typed = parse_patterns(value)
            elif self.choices:
                typed = str(value).strip().lower() or self.default
            else:
                typed = self.kind(value)
        except (TypeError, ValueError):
            raise self.error(f"{value!r} is not a valid {self.kind.__name__}", source) from None
        self._check(typed, source)
        return typed

    def _check(self, value: Any, source: Source) -> None:
        if self.choices and value not in self.choices and value != self.default:
            raise self.error(f"{value!r} is not one of {', '.join(self.choices)}", source)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(f"{value!r} is not a finite number", source)
        if self.minimum is not None and value < self.minimum:
            raise self.error(f"{value!r} is less than {self.minimum:g}", source)
        if self.maximum is not None and value > self.maximum:
            raise self.error(f"{value!r} is more than {self.maximum:g}", source)
        if self.required and not value:
            raise ConfigurationError(f"no {self.name}: set {source.spell(self.name)} to the {self.help}",
                                     self.name, source)
        wrong = self.check(value) if self.check else None
        if wrong:
            raise self.error(wrong, source)

    def error(self, reason: str, source: Source) -> ConfigurationError:
        """``NAME = VALUE ...``, the option spelled as ``source`` spells it."""
        return ConfigurationError(f"{source.spell(self.name)} = {reason}", self.name, source)


def options(schema: type) -> tuple[Option, ...]:
    """The options of ``schema`` (:class:`GatewayConfig`, :class:`ServerConfig`), in field order."""
    types = typing.get_type_hints(schema)
    return tuple(Option(item.name, types[item.name], item.default, **item.metadata)
                 for item in dataclasses.fields(schema))


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The one of ``candidates`` that ``word`` most likely misspells, or None if none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return matches[0] if matches else None


def refuse_unknown(settings: Iterable[str], known: Iterable[str], source: Source = INI) -> None:
    """A :class:`ConfigurationError` for the first of ``settings`` that is not ``known`` (a typo),
    with the known setting it most likely misspells."""
    known = list(known)
    unknown = sorted(set(settings) - set(known))
    if unknown:
        spelled = [source.spell(name) for name in known]
        guess = closest(unknown[0], known)  # not the spelled names: OUISTITI_GW_ would make all close
        hint = f": did you mean {source.spell(guess)}?" if guess else ""
        raise ConfigurationError(f"unknown setting {source.spell(unknown[0])}{hint} (known: {', '.join(spelled)})",
                                 unknown[0], source)


class Options:
    """What :class:`GatewayConfig` and :class:`ServerConfig` share: built from keywords, strings
    or both, every value converted to its field's type and checked as the instance is made."""

    @classmethod
    def load(cls: type[Config], settings: Mapping[str, Any], source: Source = KEYWORD) -> Config:
        """An instance from ``settings`` (strings or typed values); a missing one is its default.
        Unknown names and bad values are a :class:`ConfigurationError` spelled as ``source`` does."""
        schema = options(cls)
        refuse_unknown(settings, [item.name for item in schema], source)
        values = {item.name: item.convert(settings.get(item.name), source) for item in schema}
        cls.check_together(values, source)
        return cls(**values)

    @classmethod
    def from_environment(cls: type[Config], environ: Mapping[str, str] = os.environ) -> Config:
        """An instance from ``OUISTITI_GW_<NAME>`` of each option the environment may set. A
        variable ``OUISTITI_GW_*`` that no option of any schema reads is refused (a typo)."""
        refuse_unknown([variable[len(ENVIRONMENT_PREFIX):].lower() for variable in environ
                        if variable.startswith(ENVIRONMENT_PREFIX)],
                       [item.name for schema in SCHEMAS for item in options(schema) if item.environment], ENVIRONMENT)
        return cls.load({item.name: environ[item.environment_variable] for item in options(cls)
                         if item.environment and item.environment_variable in environ}, ENVIRONMENT)

    @classmethod
    def check_together(cls, values: Mapping[str, Any], source: Source) -> None:
        """Refuse options that do not go together (each one alone is already checked)."""

    def __post_init__(self) -> None:  # built directly from keywords: the same conversions and checks
        for item in options(type(self)):
            object.__setattr__(self, item.name, item.convert(getattr(self, item.name)))
        type(self).check_together({item.name: getattr(self, item.name) for item in options(type(self))}, KEYWORD)


@dataclass(frozen=True)
class GatewayConfig(Options):
    """The options of :class:`~ouistiti_gw.gateway.middleware.WebSocketGateway`."""

    docroot: str = option("", "directory of the UNIX sockets", required=True, check=_not_a_directory)
    allow: Patterns = option(("*",), "comma-separated globs of the names served (* matches / too); "
                             "{user} and {group} stand for the authenticated user and each of its groups",
                             check=placeholder_error)
    deny: Patterns = option((), "comma-separated globs of names never served; {user} and {group} as in allow",
                            check=placeholder_error)
    mode: str = option("pipe", "pipe: the gateway relays messages; direct: after the handshake the "
                       "client's socket itself is handed to the UNIX server (plain HTTP only)",
                       choices=("pipe", "direct"))
    origins: Patterns = option((), "browser Origins allowed: empty, only this same host; '*', any; "
                               "or a comma-separated list with globs")
    allowed_hosts: Patterns = option((), "Host names WebSocket handshakes may carry, globs allowed, no port: "
                                     "empty, only loopback names when reached on a loopback address; '*', any",
                                     check=host_pattern_error)
    auth_request: str = option("", "a path of the wrapped app (/auth/check) called in-process, GET with the "
                               "upgrade request's headers, before each WebSocket connects: 2xx allows (user in "
                               "X-Auth-User), 401 and 403 are the client's answer, anything else 503",
                               check=auth_path_error)
    authorize: str = option("", "module:callable deciding, from a copy of the upgrade request's environ, "
                            "whether each WebSocket may connect: it returns the user or raises "
                            "ouistiti_gw.gateway.authorization.AuthorizationRefused", check=callable_spec_error)
    auth_recheck: float = option(0.0, "seconds between two checks of each open session with the credentials "
                                 "of its upgrade (auth_request or authorize), spread over the period; a refusal "
                                 "closes it with 1008; 0: never (X-Auth-Expires still ends it)", minimum=0)
    auth_recheck_failure: str = option("keep", "when a recheck gets no answer (5xx, an exception, a timeout): "
                                       "keep the session, or close it with 1011", choices=("keep", "close"))
    # Each session costs two file descriptors.
    max_connections: int = option(10000, "sessions at once in this process before 503; 0: no limit", minimum=0)
    max_message_size: int = option(DEFAULT_MAX_MESSAGE_SIZE, "largest client message in bytes; "
                                   "a larger one closes the session with 1009", minimum=1)
    max_message_rate: float = option(0.0, "client messages per second per session, one second of burst; "
                                     "over it: close 1008; 0: no limit", minimum=0)
    max_frame_rate: float = option(float(DEFAULT_MAX_FRAME_RATE), "client frames per second per session, pings "
                                   "and pongs included, one second of burst; over it: close 1008; 0: no limit",
                                   minimum=0)
    max_byte_rate: int = option(DEFAULT_MAX_BYTE_RATE, "client payload bytes per second per session, counted "
                                "after inflation, one second (at least max_message_size) of burst; over it "
                                "the client is not read until the budget refills (no close); 0: no limit",
                                minimum=0)
    proxy_protocol: str = option("", "v1 or v2: each UNIX connection starts with a PROXY header saying "
                                 "who the client is", choices=("v1", "v2"))
    trusted_proxies: Patterns = option((), "comma-separated IPs/CIDRs of front proxies whose "
                                       "Forwarded/X-Forwarded-For headers name the client", check=networks_error)
    metrics_path: str = option("", "a path (/metrics) where Prometheus metrics are served")
    metrics_allow: Patterns = option(("127.0.0.0/8", "::1"), "comma-separated IPs/CIDRs that may scrape "
                                     "the metrics", check=networks_error)
    admin_path: str = option("", "a path (/admin/sessions) where the live sessions are listed (GET) and "
                             "closed (DELETE PATH/ID, DELETE PATH?user=NAME)", check=auth_path_error)
    admin_allow: Patterns = option(("127.0.0.0/8", "::1"), "comma-separated IPs/CIDRs that may use "
                                   "admin_path", check=networks_error)
    # A live client answers pings, so only a vanished one (no FIN, no RST) reaches idle_timeout.
    ping_interval: float = option(30.0, "seconds of client silence before a ping; 0: never", minimum=0)
    idle_timeout: float = option(90.0, "seconds without any frame from the client, pongs included, "
                                 "before the session is closed with 1001; 0: never", minimum=0)
    compression: str = option("deflate", "deflate: permessage-deflate (RFC 7692) when the client offers it "
                              "and the gateway answers the handshake (not in direct mode, not under "
                              "gevent-websocket's stock worker); off: never", choices=("deflate", "off"))
    compression_threshold: int = option(DEFAULT_THRESHOLD, "messages to clients shorter than this many bytes "
                                        "are sent uncompressed", minimum=0)
    compression_client_context: str = option("off", "on: clients may keep their deflate context between "
                                             "messages (better ratios, more memory per session); off: the "
                                             "gateway asks for client_no_context_takeover",
                                             choices=("off", "on"))

    @classmethod
    def check_together(cls, values: Mapping[str, Any], source: Source) -> None:
        if values["auth_request"] and values["authorize"]:
            raise ConfigurationError(f"{source.spell('auth_request')} and {source.spell('authorize')} are both set: "
                                     "choose one", "authorize", source)
        if values["auth_recheck"] and not (values["auth_request"] or values["authorize"]):
            raise ConfigurationError(f"{source.spell('auth_recheck')} needs {source.spell('auth_request')} or "
                                     f"{source.spell('authorize')}", "auth_recheck", source)
        if values["admin_path"] and values["admin_path"] == values["metrics_path"]:
            raise ConfigurationError(f"{source.spell('admin_path')} and {source.spell('metrics_path')} are the same "
                                     "path: choose two", "admin_path", source)
        if has_placeholder(values["allow"] + values["deny"]) and not (values["auth_request"] or values["authorize"]):
            raise ConfigurationError(f"{source.spell('allow')}/{source.spell('deny')} use {{user}} or {{group}}, "
                                     f"which needs {source.spell('auth_request')} or {source.spell('authorize')}",
                                     "allow", source)


@dataclass(frozen=True)
class ServerConfig(Options):
    """The options of the gateway's own server (the CLI, ``[server:main]``); under gunicorn,
    which listens itself, only the request limits, from the environment. ``header_timeout``
    bounds a TLS handshake too (:mod:`ouistiti_gw.servers.tls`)."""

    host: str = option("127.0.0.1", "address to listen on", environment=False)
    port: int = option(8080, "port to listen on (0 picks one)", minimum=0, maximum=65535, environment=False)
    # gunicorn's own default; the kernel keeps the SYNs past it waiting for a retry (1 s, then 3 s...).
    backlog: int = option(2048, "connections the kernel queues until the gateway accepts them, at most "
                          "net.core.somaxconn (the kernel silently caps it); under gunicorn, its own --backlog",
                          minimum=1, maximum=65535, environment=False)
    certfile: str = option("", "TLS certificate (PEM): serve https:// and wss://", environment=False)
    keyfile: str = option("", "TLS private key (PEM), if not inside the certfile", environment=False)
    header_timeout: float = option(10.0, "seconds a client may take to send its request headers (400 past "
                                   "it), and to finish its TLS handshake (closed past it)", minimum=0)
    max_header_size: int = option(DEFAULT_MAX_HEADER_SIZE, "bytes of request headers; more get 431", minimum=1)
    keepalive_timeout: float = option(60.0, "seconds a keep-alive connection may wait for its next "
                                      "request", minimum=0)
    drain_timeout: float = option(30.0, "seconds a reload leaves the sessions that cannot move (wss://) "
                                  "with the old worker before closing them with 1001", minimum=0)

    @classmethod
    def check_together(cls, values: Mapping[str, Any], source: Source) -> None:
        if values["keyfile"] and not values["certfile"]:
            raise ConfigurationError(f"{source.spell('keyfile')} given without {source.spell('certfile')}",
                                     "keyfile", source)


#: Every schema; between them, they own every ``OUISTITI_GW_*`` variable.
SCHEMAS = (GatewayConfig, ServerConfig)
