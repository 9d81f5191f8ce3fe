"""A WSGI app for the tests, served behind the gateway in its own process.

    python tests/wrapped_app.py --docroot DIR --port N [--set KEY=VALUE ...] [--stock]

Routes: ``/stream`` answers in chunks from a generator, ``/echo-body`` returns the request body,
``/closed`` tells how many results had ``close()`` called, ``/greenlets`` how many greenlets are
alive in this process (a leak check from outside); anything else answers ``app: PATH``.
``--set`` passes any gateway setting (``allow=ws_*``, ``origins=*``...); ``--stock`` serves with
gevent-websocket's own ``WebSocketServer`` instead of the gateway's handler.
"""
import argparse
import gc
import logging

import greenlet

from ouistiti_gw import WebSocketGateway
from ouistiti_gw.config import INI, GatewayConfig, ServerConfig
from ouistiti_gw.servers.wsgi_server import make_server, serve_until_stopped

closed_results = 0


class Streamed:
    """A result iterable with a ``close()`` the server must call (PEP 3333)."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        global closed_results
        closed_results += 1


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Streamed([b"chunk-%d\n" % i for i in range(5)])
    if path == "/echo-body":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/closed":
        body = str(closed_results).encode()
    elif path == "/greenlets":
        body = str(live_greenlets()).encode()
    else:
        body = ("app: " + path).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docroot", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stock", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    settings = dict(option.split("=", 1) for option in args.set)
    gateway = WebSocketGateway(app, config=GatewayConfig.load({"docroot": args.docroot, **settings}, INI))
    if args.stock:
        from geventwebsocket import WebSocketServer
        server = WebSocketServer(("127.0.0.1", args.port), gateway)
    else:
        server = make_server(gateway, ServerConfig(port=args.port))
    serve_until_stopped(server)


if __name__ == "__main__":
    main()
