"""ouistiti-gw: a gevent WSGI middleware that bridges WebSocket clients to UNIX-socket servers.

The public face: :class:`WebSocketGateway` (the middleware), its options (:class:`GatewayConfig`)
and their error (:class:`ConfigurationError`), :func:`make_app` and :func:`make_filter`
(PasteDeploy and gunicorn factories).
"""
from .config import ConfigurationError, GatewayConfig
from .gateway.middleware import WebSocketGateway
from .servers.paste import make_app, make_filter

__version__ = "0.1.0"
__all__ = ["ConfigurationError", "GatewayConfig", "WebSocketGateway", "make_app", "make_filter", "__version__"]
