"""Per-handshake CPU of the HTTP layer, in-process: what a session costs before the middleware runs.

    python benchmarks/handshake_cost.py [--count N]
    cd OLD_TREE && PYTHONPATH=. python NEW_TREE/benchmarks/handshake_cost.py   # another tree's handler

:class:`ouistiti_gw.servers.handler.GatewayHandler` reads the churn client's handshake (request line
and header section, ``wsclient.handshake_request``) from a reader that already holds it, as
nearly every handshake arrives, and builds its environ (``head``); then also writes the 101 over a
socketpair and hands the connection over (``head + 101``). No middleware, no UNIX connection: the
figures are the HTTP layer's share of ``profile_gateway.py --load sessions``, without that load's
noise. Prints microseconds per handshake, best of 5 runs.
"""
from __future__ import annotations

import argparse
import io
import time

from gevent import socket
from gevent.pywsgi import WSGIServer

from ouistiti_gw.servers.handler import GatewayHandler
from wsclient import handshake_request

REQUEST = handshake_request("127.0.0.1", 8080, "/echo")


class Handshake:
    """One handler per handshake, on one socketpair and one server, as a connection gets them."""

    def __init__(self) -> None:
        self.server = WSGIServer(("127.0.0.1", 0), lambda environ, start_response: [])
        self.server.init_socket()
        self.ours, self.client = socket.socketpair()

    def head(self) -> GatewayHandler:
        handler = GatewayHandler(self.ours, ("127.0.0.1", 40000), self.server,
                                 rfile=io.BufferedReader(io.BytesIO(REQUEST)))
        handler.requestline = handler.read_requestline()
        handler.read_request(handler.requestline)
        handler.environ = handler.get_environ()
        return handler

    def head_and_101(self) -> None:
        self.head()._accept_upgrade(None)
        self.client.recv(4096)

    def close(self) -> None:
        self.ours.close()
        self.client.close()
        self.server.close()


def best_of_5(run, count: int) -> float:
    """Microseconds of CPU per call of ``run``: the best of 5 runs of ``count`` calls."""
    for _ in range(count // 10):
        run()
    times = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(count):
            run()
        times.append((time.process_time() - started) / count * 1e6)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    handshake = Handshake()
    try:
        for name, run in (("head", handshake.head), ("head + 101", handshake.head_and_101)):
            print(f"{name:>10}: {best_of_5(run, args.count):6.1f} us per handshake")
    finally:
        handshake.close()


if __name__ == "__main__":
    main()
