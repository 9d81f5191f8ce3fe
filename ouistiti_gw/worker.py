"""``GatewayWorker``: gunicorn's gevent worker with the handler that can refuse before the 101.

    gunicorn -k ouistiti_gw.worker.GatewayWorker 'ouistiti_gw:make_app()'

The stock ``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` works too, but there a
refused WebSocket can only be closed (1008/1011), not answered with 403/404/503.
"""
from __future__ import annotations

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from gunicorn.workers.ggevent import PyWSGIHandler

from .handler import GatewayHandler


class GunicornGatewayHandler(GatewayHandler, PyWSGIHandler):
    """The gateway's handler, with gunicorn's access log and environ keys."""


class GatewayWorker(GeventWebSocketWorker):
    wsgi_handler = GunicornGatewayHandler
