"""PasteDeploy factories, and ``make_app`` for gunicorn.

- ``make_app`` (``egg:ouistiti_gw#main``): an app factory. For gunicorn it also works without
  arguments, configured by ``OUISTITI_GW_DOCROOT``, ``OUISTITI_GW_ALLOW``, ... (``OUISTITI_GW_`` +
  any setting in upper case): ``gunicorn ... 'ouistiti_gw:make_app()'`` builds the gateway when the
  worker loads it, and ``gunicorn ... ouistiti_gw:make_app`` takes ``make_app`` itself as the WSGI
  app, which builds the gateway on first use (:mod:`ouistiti_gw.lazy`).
- ``make_filter`` (``egg:ouistiti_gw#websocket``): a filter, so an existing app gets the gateway
  by one line of a ``[pipeline:main]``.
- ``make_static_app`` (``egg:ouistiti_gw#static``): serves a directory (the demo page by default).
- ``run_server`` (``egg:ouistiti_gw#gevent``): a server runner with the gateway's handler,
  ``host``, ``port``, ``certfile``/``keyfile`` for wss://, ``header_timeout`` and ``max_header_size``.

A wrong setting raises :class:`ConfigurationError`, whose message names the setting as the user
wrote it (``max_connections`` in an ini file, ``OUISTITI_GW_MAX_CONNECTIONS`` in the environment).
"""
from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING, Callable, Iterable

from webob.static import DirectoryApp

from .lazy import BuiltOnce
from .middleware import WebSocketGateway
from .wsgi_server import make_server, serve_until_stopped

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Every setting of the gateway, with the type its string form (ini, environment, CLI) converts to.
SETTINGS = {"docroot": str, "allow": str, "deny": str, "mode": str, "origins": str,
            "max_connections": int, "max_message_size": int, "max_message_rate": float, "max_frame_rate": float,
            "ping_interval": float, "idle_timeout": float, "proxy_protocol": str, "trusted_proxies": str,
            "metrics_path": str, "allowed_hosts": str, "metrics_allow": str}
ENVIRONMENT_PREFIX = "OUISTITI_GW_"


try:  # gunicorn is optional; under it, a wrong setting is an app that failed to load
    from gunicorn.errors import AppImportError as _AppLoadError
except ImportError:
    _AppLoadError = Exception


class ConfigurationError(ValueError, _AppLoadError):
    """A setting is missing, unknown or malformed. ``key`` is the setting (``None``: not one key).

    It is also gunicorn's ``AppImportError``: raised while a worker loads the app, gunicorn prints
    its message alone (no traceback) and stops ("App failed to load") instead of looping.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def ini_key(key: str) -> str:
    """How an ini file (and ``WebSocketGateway``) spells a setting."""
    return key


def environment_variable(key: str) -> str:
    """How the environment spells a setting: ``OUISTITI_GW_MAX_CONNECTIONS``."""
    return ENVIRONMENT_PREFIX + key.upper()


def setting_value(key: str, value: str, kind: type, spelled: Callable[[str], str] = ini_key):
    """``kind(value)``, or a :class:`ConfigurationError` that names the setting and the value."""
    try:
        return kind(value)
    except ValueError:
        raise ConfigurationError(f"{spelled(key)} = {value!r} is not a valid {kind.__name__}", key) from None


def refuse_unknown(settings: Iterable[str], known: Iterable[str], spelled: Callable[[str], str] = ini_key) -> None:
    """A :class:`ConfigurationError` for the first of ``settings`` that is not ``known`` (a typo)."""
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigurationError(f"unknown setting {spelled(unknown[0])} (known: {', '.join(known)})", unknown[0])


def gateway_options(settings: dict[str, str], spelled: Callable[[str], str] = ini_key) -> dict:
    """Turn ini/environment strings into :class:`WebSocketGateway` keyword arguments."""
    refuse_unknown(settings, SETTINGS, spelled)
    options = {key: setting_value(key, value, SETTINGS[key], spelled) for key, value in settings.items()}
    if not options.get("docroot"):
        raise ConfigurationError(f"no docroot: set {spelled('docroot')} to the directory of the UNIX sockets",
                                 "docroot")
    return options


def settings_from_environment() -> dict[str, str]:
    """``OUISTITI_GW_DOCROOT``, ``OUISTITI_GW_ALLOW``... for each setting that is set."""
    return {key: os.environ[environment_variable(key)] for key in SETTINGS
            if environment_variable(key) in os.environ}


def build_gateway(app: "WSGIApplication", settings: dict[str, str],
                  spelled: Callable[[str], str] = ini_key) -> WebSocketGateway:
    """``WebSocketGateway(app, ...)`` from strings; whatever it refuses is a :class:`ConfigurationError`."""
    options = gateway_options(settings, spelled)
    try:
        return WebSocketGateway(app, **options)
    except ConfigurationError:
        raise
    except ValueError as error:
        raise ConfigurationError(str(error).removeprefix("ouistiti_gw: ")) from None


def not_found_app(environ: "WSGIEnvironment", start_response: "StartResponse"):
    """The app behind the gateway when none is given: every plain HTTP request is a 404."""
    body = b"404 Not Found: this server only carries WebSockets\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def make_app(global_conf: dict | None = None, start_response: "StartResponse | None" = None, /,
             **settings: str) -> "WebSocketGateway | Iterable[bytes]":
    """The gateway in front of :func:`not_found_app`, in three forms:

    - ``make_app(global_conf, **settings)``: PasteDeploy's app factory, configured by the ini section;
    - ``make_app()``: configured by the ``OUISTITI_GW_*`` environment (``'ouistiti_gw:make_app()'``);
    - ``make_app(environ, start_response)``: ``make_app`` is itself the WSGI app (gunicorn given
      ``ouistiti_gw:make_app``), the environment's gateway, built by the first request.
    """
    if start_response is not None:
        if not (isinstance(global_conf, dict) and "wsgi.version" in global_conf and callable(start_response)):
            raise TypeError("make_app(global_conf, **settings), make_app() or make_app(environ, start_response)")
        return environment_gateway(global_conf, start_response)
    if global_conf is None and not settings:
        return build_gateway(not_found_app, settings_from_environment(), environment_variable)
    return build_gateway(not_found_app, settings)


#: ``make_app()``, built once, by the first request or by ``GatewayWorker`` as the worker boots.
environment_gateway = BuiltOnce(make_app)


def make_filter(global_conf: dict, **settings: str) -> Callable[["WSGIApplication"], WebSocketGateway]:
    gateway_options(settings)  # a wrong setting fails now, not when the pipeline is assembled

    def filter_app(app: "WSGIApplication") -> WebSocketGateway:
        return build_gateway(app, settings)

    return filter_app


def demo_page_directory() -> str:
    return str(resources.files("ouistiti_gw") / "static")


def make_static_app(global_conf: dict, document_root: str | None = None, **unknown: str) -> DirectoryApp:
    """Serve ``document_root`` (default: the package's demo page) with WebOb's ``DirectoryApp``."""
    refuse_unknown(unknown, ["document_root"])
    return DirectoryApp(document_root or demo_page_directory())


def run_server(wsgi_app: "WSGIApplication", global_conf: dict, host: str = "127.0.0.1", port: str = "8080",
               certfile: str | None = None, keyfile: str | None = None, header_timeout: str | None = None,
               max_header_size: str | None = None, **unknown: str) -> None:
    refuse_unknown(unknown, ["host", "port", "certfile", "keyfile", "header_timeout", "max_header_size"])
    serve_until_stopped(make_server(
        wsgi_app, host, setting_value("port", port, int), certfile, keyfile,
        None if header_timeout is None else setting_value("header_timeout", header_timeout, float),
        None if max_header_size is None else setting_value("max_header_size", max_header_size, int)))
