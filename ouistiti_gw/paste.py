"""PasteDeploy factories, and ``make_app()`` for gunicorn.

- ``make_app`` (``egg:ouistiti_gw#main``): an app factory, also callable with no argument:
  ``gunicorn -k ouistiti_gw.worker.GatewayWorker 'ouistiti_gw:make_app()'`` then reads
  ``OUISTITI_GW_DOCROOT``, ``OUISTITI_GW_ALLOW``, ... (``OUISTITI_GW_`` + any setting in upper case).
- ``make_filter`` (``egg:ouistiti_gw#websocket``): a filter, so an existing app gets the gateway
  by one line of a ``[pipeline:main]``.
- ``make_static_app`` (``egg:ouistiti_gw#static``): serves a directory (the demo page by default).
- ``run_server`` (``egg:ouistiti_gw#gevent``): a server runner with the gateway's handler,
  ``host``, ``port`` and ``certfile``/``keyfile`` for wss://.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING, Callable

from webob.static import DirectoryApp

from .middleware import WebSocketGateway
from .server import make_server, serve_until_stopped

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Every setting of the gateway, with the type its string form (ini, environment, CLI) converts to.
SETTINGS = {"docroot": str, "allow": str, "deny": str, "mode": str, "origins": str,
            "max_connections": int, "max_message_size": int, "max_message_rate": float, "max_frame_rate": float,
            "ping_interval": float, "idle_timeout": float, "proxy_protocol": str, "trusted_proxies": str,
            "metrics_path": str}
ENVIRONMENT_PREFIX = "OUISTITI_GW_"


def gateway_options(settings: dict[str, str]) -> dict:
    """Turn ini/environment strings into :class:`WebSocketGateway` keyword arguments."""
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"ouistiti_gw: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(SETTINGS)}")
    options = {}
    for key, value in settings.items():
        try:
            options[key] = SETTINGS[key](value)
        except ValueError:
            raise ValueError(f"ouistiti_gw: {key} = {value!r} is not a valid {SETTINGS[key].__name__}") from None
    if not options.get("docroot"):
        raise ValueError("ouistiti_gw: no docroot: set `docroot` in the ini file, "
                         "or OUISTITI_GW_DOCROOT in the environment, to the directory of the UNIX sockets")
    return options


def settings_from_environment() -> dict[str, str]:
    """``OUISTITI_GW_DOCROOT``, ``OUISTITI_GW_ALLOW``... for each setting that is set."""
    return {key: os.environ[ENVIRONMENT_PREFIX + key.upper()] for key in SETTINGS
            if ENVIRONMENT_PREFIX + key.upper() in os.environ}


def not_found_app(environ: "WSGIEnvironment", start_response: "StartResponse"):
    """The app behind the gateway when none is given: every plain HTTP request is a 404."""
    body = b"404 Not Found: this server only carries WebSockets\n"
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def make_app(global_conf: dict | None = None, **settings: str) -> WebSocketGateway:
    """The gateway in front of :func:`not_found_app`, configured by ``settings`` or the environment."""
    if not settings:
        settings = settings_from_environment()
    return WebSocketGateway(not_found_app, **gateway_options(settings))


def make_filter(global_conf: dict, **settings: str) -> Callable[["WSGIApplication"], WebSocketGateway]:
    options = gateway_options(settings)

    def filter_app(app: "WSGIApplication") -> WebSocketGateway:
        return WebSocketGateway(app, **options)

    return filter_app


def demo_page_directory() -> str:
    return str(resources.files("ouistiti_gw") / "static")


def make_static_app(global_conf: dict, document_root: str | None = None) -> DirectoryApp:
    """Serve ``document_root`` (default: the package's demo page) with WebOb's ``DirectoryApp``."""
    return DirectoryApp(document_root or demo_page_directory())


def run_server(wsgi_app: "WSGIApplication", global_conf: dict, host: str = "127.0.0.1", port: str = "8080",
               certfile: str | None = None, keyfile: str | None = None) -> None:
    serve_until_stopped(make_server(wsgi_app, host, int(port), certfile, keyfile))
