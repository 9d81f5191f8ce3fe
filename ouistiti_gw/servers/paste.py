"""PasteDeploy factories, and ``make_app`` for gunicorn.

- ``make_app`` (``egg:ouistiti_gw#main``): an app factory. For gunicorn it also works without
  arguments, configured by ``OUISTITI_GW_DOCROOT``, ``OUISTITI_GW_ALLOW``, ... (``OUISTITI_GW_`` +
  any setting in upper case): ``gunicorn ... 'ouistiti_gw:make_app()'`` builds the gateway when the
  worker loads it, and ``gunicorn ... ouistiti_gw:make_app`` takes ``make_app`` itself as the WSGI
  app, which builds the gateway on first use (:mod:`ouistiti_gw.servers.built_once`).
- ``make_filter`` (``egg:ouistiti_gw#websocket``): a filter, so an existing app gets the gateway
  by one line of a ``[pipeline:main]``.
- ``make_static_app`` (``egg:ouistiti_gw#static``): serves a directory (the demo page by default).
- ``run_server`` (``egg:ouistiti_gw#gevent``): a server runner with the gateway's handler, configured
  by the options of :class:`~ouistiti_gw.config.ServerConfig` (``host``, ``port``, ``certfile``...).

The settings are those of :mod:`ouistiti_gw.config`; a wrong one raises its
:class:`~ouistiti_gw.config.ConfigurationError`, whose message names the setting as the user wrote
it (``max_connections`` in an ini file, ``OUISTITI_GW_MAX_CONNECTIONS`` in the environment).
"""
from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Callable, Iterable

from webob.static import DirectoryApp

from ..config import INI, ConfigurationError, GatewayConfig, ServerConfig, refuse_unknown
from ..gateway.middleware import WebSocketGateway
from ..gateway.upgrade import is_websocket_request
from .built_once import BuiltOnce
from .wsgi_server import make_server, serve_until_stopped

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def not_found_app(environ: "WSGIEnvironment", start_response: "StartResponse"):
    """The app behind the gateway when none is given: a 404 for every request it gets, plain HTTP
    or a WebSocket for a name the gateway does not serve (allow/deny)."""
    body = (b"404 Not Found: no WebSocket service at this path\n" if is_websocket_request(environ)
            else b"404 Not Found: this server only carries WebSockets\n")
    start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                     ("Content-Length", str(len(body)))])
    return [body]


def make_app(global_conf: dict | None = None, start_response: "StartResponse | None" = None, /,
             **settings: str) -> "WebSocketGateway | Iterable[bytes]":
    """The gateway in front of :func:`not_found_app`, in three forms:

    - ``make_app(global_conf, **settings)``: PasteDeploy's app factory, configured by the ini section;
    - ``make_app()``: configured by the ``OUISTITI_GW_*`` environment: gunicorn's
      ``'ouistiti_gw:make_app()'``, so a bad configuration is raised as gunicorn's ``AppImportError``
      where gunicorn is installed;
    - ``make_app(environ, start_response)``: ``make_app`` is itself the WSGI app (gunicorn given
      ``ouistiti_gw:make_app``), the environment's gateway, built by the first request.
    """
    if start_response is not None:
        if not (isinstance(global_conf, dict) and "wsgi.version" in global_conf and callable(start_response)):
            raise TypeError("make_app(global_conf, **settings), make_app() or make_app(environ, start_response)")
        return environment_gateway(global_conf, start_response)
    if global_conf is None and not settings:
        try:
            return environment_app()
        except ConfigurationError as error:
            raise app_load_error(error) from None
    try:
        return WebSocketGateway(not_found_app, config=GatewayConfig.load(settings, INI))
    except ConfigurationError as error:  # gunicorn --paste calls this too
        raise app_load_error(error) from None


def environment_app() -> WebSocketGateway:
    """The gateway configured by the ``OUISTITI_GW_*`` environment."""
    return WebSocketGateway(not_found_app, config=GatewayConfig.from_environment())


def app_load_error(error: ConfigurationError) -> ConfigurationError:
    """``error``, also as gunicorn's ``AppImportError``: what gunicorn expects of an app that
    cannot load (it prints the message alone and exits 4, "App failed to load", where any other
    exception is a traceback and a worker that boots again). Still a :class:`ConfigurationError`
    for every other caller (``except ConfigurationError`` catches it); without gunicorn, ``error``
    itself. Raised by the factories gunicorn calls (``make_app``, ``make_filter`` through
    PasteDeploy, ``GatewayWorker.load_wsgi``): :class:`ConfigurationError` itself is never one."""
    try:
        from gunicorn.errors import AppImportError
    except ImportError:
        return error
    return _loading_error(AppImportError)(error.reason, error.key, error.source)


@cache
def _loading_error(app_import_error: type[Exception]) -> type[ConfigurationError]:
    return type("AppConfigurationError", (ConfigurationError, app_import_error), {"__module__": __name__})


#: ``make_app()``, built once, by the first request or by ``GatewayWorker`` as the worker boots.
environment_gateway = BuiltOnce(environment_app)


def make_filter(global_conf: dict, **settings: str) -> Callable[["WSGIApplication"], WebSocketGateway]:
    try:  # a wrong setting fails now, not when the pipeline is assembled
        config = GatewayConfig.load(settings, INI)
    except ConfigurationError as error:  # gunicorn --paste calls this too
        raise app_load_error(error) from None

    def filter_app(app: "WSGIApplication") -> WebSocketGateway:
        return WebSocketGateway(app, config=config)

    return filter_app


def demo_page_directory() -> str:
    return str(resources.files("ouistiti_gw") / "static")


def make_static_app(global_conf: dict, document_root: str | None = None, **unknown: str) -> DirectoryApp:
    """Serve ``document_root`` (default: the package's demo page) with WebOb's ``DirectoryApp``."""
    refuse_unknown(unknown, ["document_root"])
    return DirectoryApp(document_root or demo_page_directory())


def run_server(wsgi_app: "WSGIApplication", global_conf: dict, **settings: str) -> None:
    """``[server:main]``: serve ``wsgi_app`` until SIGINT or SIGTERM."""
    serve_until_stopped(make_server(wsgi_app, ServerConfig.load(settings, INI)))
